"""The LSNN model kind (``model.kind: lsnn``): LIF and ALIF neurons; ``n_alif: 0`` is a LIF-only network."""

from __future__ import annotations

import math

import torch

from es_l2l.models.base import Block, ModelKind
from es_l2l.snn import LSNNParams, decay, rollout, sim_options
from es_l2l.snn.lowrank import LowRankPopulation, lowrank_rollout


class LSNNModel(ModelKind):
    name = "lsnn"
    spiking = True

    def blocks(self, cfg, n_in, n_out):
        m, g = cfg.model, cfg.genome
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

    def initial(self, cfg, n_in, n_out, gen):
        """Reference initial values: weights ``N(0, 1) / sqrt(n_pre)``, the config's constants."""
        m = cfg.model
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

    def simulate(self, cfg, params, x, readout_steps=None, record_spikes=False):
        if isinstance(params, LowRankPopulation):  # low-rank ES's members: the centre shared (es_l2l.snn.lowrank)
            if record_spikes:
                raise ValueError("a low-rank population records no spikes; simulate its explicit matrices instead")
            return lowrank_rollout(params.center, params.factors, x, n_ref=cfg.model.n_ref, dt=cfg.model.dt,
                                   readout_steps=readout_steps)
        return rollout(params, x.to(params.w_in.device), sim_options(cfg), readout_steps=readout_steps,
                       record_spikes=record_spikes)

    def size(self, cfg) -> str:
        return f"{cfg.model.n_lif}+{cfg.model.n_alif} neurons"

    def check(self, cfg) -> None:
        if cfg.model.n_lif + cfg.model.n_alif < 2:
            raise ValueError("model.n_lif + model.n_alif must be at least 2")


MODEL = LSNNModel()
