"""The LSNN model kind (``model.kind: lsnn``): LIF and ALIF neurons; ``n_alif: 0`` is a LIF-only network.

Its section (:class:`LSNNConfig`) holds the neuron constants (reference defaults), the initial
connectivity and weight scales, the simulation step and the firing-rate regulariser.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from es_l2l.models.base import Block, ModelKind
from es_l2l.schema import Strict
from es_l2l.snn import LSNNParams, SimOptions, decay, rollout
from es_l2l.snn.lowrank import LowRankPopulation, lowrank_rollout


class LSNNConfig(Strict):
    """The network: LIF and ALIF populations, reference defaults (``model.kind: lsnn``)."""

    kind: Literal["lsnn"] = Field("lsnn", description="model kind (lsnn with n_alif=0: LIF only)")
    n_lif: int = Field(16, ge=0, le=4096, description="number of LIF neurons (beta = 0)")
    n_alif: int = Field(16, ge=0, le=4096, description="number of adaptive-threshold neurons")
    tau_m: float = Field(20.0, gt=0, description="membrane time constant (ms)")
    tau_a: float = Field(600.0, gt=0, description="threshold-adaptation time constant (ms)")
    b0: float = Field(0.01, gt=0, description="baseline threshold")
    beta: float = Field(1.7, ge=0, description="adaptation strength of ALIF neurons")
    n_ref: int = Field(3, ge=0, le=100, description="refractory period (steps)")
    tau_out: float = Field(20.0, gt=0, description="readout low-pass time constant (ms)")
    gamma: float = Field(0.3, gt=0, description="pseudo-derivative dampening factor")
    dt: float = Field(1.0, gt=0, description="simulation step (ms)")
    w_in_scale: float = Field(1.0, gt=0, description="input weights ~ scale * N(0,1)/sqrt(n_in)")
    w_rec_scale: float = Field(1.0, ge=0, description="recurrent weights ~ scale * N(0,1)/sqrt(N)")
    p_in: float = Field(1.0, gt=0, le=1, description="initial input connection probability")
    p_rec: float = Field(1.0, gt=0, le=1, description="initial recurrent connection probability")
    rate_target_hz: float = Field(10.0, ge=0, description="firing-rate regulariser target f0")
    rate_reg: float = Field(0.0, ge=0, description="firing-rate regulariser weight")

    @model_validator(mode="after")
    def _some_neurons(self):
        if self.n_lif + self.n_alif < 2:
            raise ValueError("model.n_lif + model.n_alif must be at least 2")
        return self


class LSNNModel(ModelKind):
    name = "lsnn"
    config = LSNNConfig
    spiking = True

    def blocks(self, model, genome, n_in, n_out):
        m, g = model, genome
        n, wb = m.n_lif + m.n_alif, g.weight_bound
        return (
            Block("w_in", (n_in, n), "identity", -wb, wb),
            Block("w_rec", (n, n), "identity", -wb, wb),
            Block("w_out", (n, n_out), "identity", -wb, wb),
            Block("b_out", (n_out,), "identity", -wb, wb),
            Block("tau_m", (n,), "log", *g.tau_m_bounds),
            Block("tau_a", (m.n_alif,), "log", *g.tau_a_bounds),
            Block("b0", (n,), "log", *g.b0_bounds),
            Block("beta", (m.n_alif,), "identity", *g.beta_bounds),
            Block("mask_in", (n_in, n), "logit", -1.0, 1.0),
            Block("mask_rec", (n, n), "logit", -1.0, 1.0),
        )

    def initial(self, model, n_in, n_out, gen):
        """Reference initial values: weights ``N(0, 1) / sqrt(n_pre)``, the config's constants."""
        m = model
        n = m.n_lif + m.n_alif
        randn = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
        rand = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
        return {
            "w_in": m.w_in_scale * randn(n_in, n) / math.sqrt(n_in),
            "w_rec": m.w_rec_scale * randn(n, n) / math.sqrt(n),
            "w_out": randn(n, n_out) / math.sqrt(n),
            "b_out": torch.zeros(n_out),
            "tau_m": torch.full((n,), math.log(m.tau_m)),
            "tau_a": torch.full((m.n_alif,), math.log(m.tau_a)),
            "b0": torch.full((n,), math.log(m.b0)),
            "beta": torch.full((m.n_alif,), m.beta),
            # A connection exists where its logit is positive: p - U(0, 1) > 0 with probability p.
            "mask_in": m.p_in - rand(n_in, n),
            "mask_rec": m.p_rec - rand(n, n),
        }

    def constants(self, model) -> dict:
        return {"n_lif": model.n_lif, "n_alif": model.n_alif, "tau_a_lif": model.tau_a, "tau_out": model.tau_out, "dt": model.dt}

    def sim_options(self, model) -> SimOptions:
        return SimOptions(model.n_ref, model.gamma, model.dt)

    def to_params(self, genome, genes, value) -> LSNNParams:
        w_in, w_rec = value("w_in"), value("w_rec")
        pop, n = w_rec.shape[0], w_rec.shape[-1]
        mask_in = (genes["mask_in"] > 0).to(w_in.dtype)
        no_autapse = 1.0 - torch.eye(n, dtype=w_rec.dtype, device=w_rec.device)
        mask_rec = (genes["mask_rec"] > 0).to(w_rec.dtype) * no_autapse
        like = lambda fill, k: torch.full((pop, k), fill, dtype=w_rec.dtype, device=w_rec.device)  # noqa: E731
        tau_a = torch.cat([like(genome.tau_a_lif, genome.n_lif), value("tau_a")], dim=1)
        beta = torch.cat([like(0.0, genome.n_lif), value("beta")], dim=1)
        return LSNNParams(
            w_in=w_in * mask_in,
            w_rec=w_rec * mask_rec,
            w_out=value("w_out"),
            b_out=value("b_out"),
            alpha=decay(value("tau_m"), genome.dt),
            rho=decay(tau_a, genome.dt),
            b0=value("b0"),
            beta=beta,
            kappa=like(math.exp(-genome.dt / genome.tau_out), 1),
        )

    def simulate(self, ctx, params, x, readout_steps=None, record_spikes=False):
        if isinstance(params, LowRankPopulation):  # low-rank ES's members: the centre shared (es_l2l.snn.lowrank)
            if record_spikes:
                raise ValueError("a low-rank population records no spikes; simulate its explicit matrices instead")
            return lowrank_rollout(params.center, params.factors, x, n_ref=ctx.sim.n_ref, dt=ctx.sim.dt,
                                   readout_steps=readout_steps)
        return rollout(params, x.to(params.w_in.device), ctx.sim, readout_steps=readout_steps,
                       record_spikes=record_spikes)

    def stepper(self, ctx, params, batch):
        from es_l2l.snn.closed_loop import Stepper

        return Stepper(params, batch, ctx.sim)

    def replay_unsupported(self, params, x):
        # the replay pays off through the fused C backward only; elsewhere the closed loop is recorded
        from es_l2l.snn.fused_grad import why_unsupported

        return why_unsupported(params, x)

    def units(self, model) -> int:
        return model.n_lif + model.n_alif

    def size(self, model) -> str:
        return f"{model.n_lif}+{model.n_alif} neurons"

    def check(self, model, genome) -> None:
        if model.n_lif + model.n_alif < 2:
            raise ValueError("model.n_lif + model.n_alif must be at least 2")


MODEL = LSNNModel()
