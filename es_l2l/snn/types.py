"""The LSNN's parameter, state and result types, the readout, and the no-autapse rule: what every
simulation path (the step graph, the in-place forward, the C kernel) shares."""

from __future__ import annotations

from typing import NamedTuple

import torch


class LSNNParams(NamedTuple):
    """Model-space parameters of ``P`` networks with ``N`` neurons."""

    w_in: torch.Tensor  # (P, n_in, N)
    w_rec: torch.Tensor  # (P, N, N), zero diagonal, connectivity mask applied
    w_out: torch.Tensor  # (P, N, n_out)
    b_out: torch.Tensor  # (P, n_out)
    alpha: torch.Tensor  # (P, N)  membrane decay exp(-dt / tau_m)
    rho: torch.Tensor  # (P, N)  adaptation decay exp(-dt / tau_a)
    b0: torch.Tensor  # (P, N)  baseline threshold
    beta: torch.Tensor  # (P, N)  adaptation strength (0 for LIF neurons)
    kappa: torch.Tensor  # (P, 1)  readout trace decay exp(-dt / tau_out)

    @property
    def pop_size(self) -> int:
        return self.w_rec.shape[0]

    @property
    def n_neurons(self) -> int:
        return self.w_rec.shape[-1]


class LSNNState(NamedTuple):
    """Dynamic state, each (P, B, N)."""

    v: torch.Tensor  # membrane potential
    z: torch.Tensor  # spikes of the previous step
    b: torch.Tensor  # threshold adaptation
    r: torch.Tensor  # refractory steps left
    zf: torch.Tensor  # low-pass filtered spikes (readout trace)


class Rollout(NamedTuple):
    y: torch.Tensor  # (P, B, K, n_out) readout at the K requested steps
    spike_count: torch.Tensor  # (P, B, N) spikes per neuron over the rollout
    spikes: torch.Tensor | None  # (P, B, T, N) when recorded
    n_steps: int


BACKENDS = ("auto", "kernel", "autograd")


class SimOptions(NamedTuple):
    """The simulation constants a rollout needs, in one place (a model kind's
    :meth:`~es_l2l.models.base.ModelKind.sim_options` reads them from its section; the run context
    carries them, :attr:`es_l2l.context.RunContext.sim`)."""

    n_ref: int  # refractory steps
    gamma: float = 0.3  # pseudo-derivative dampening
    dt: float = 1.0  # ms per step
    backend: str = "auto"  # gradients: "kernel" (fused C backward), "autograd" (the step graph), "auto"


def readout(zf: torch.Tensor, params: LSNNParams) -> torch.Tensor:
    """The linear readout ``W_out zf + b_out`` of readout traces ``zf`` (P, B, K, N) -> (P, B, K, n_out)."""
    return torch.matmul(zf, params.w_out.unsqueeze(1)) + params.b_out[:, None, None, :]


def no_autapses(params: LSNNParams) -> LSNNParams:
    """``params`` with the diagonal of ``w_rec`` zero (a neuron does not feed itself back): the same
    tensors where it already is (no copy), a masked copy (differentiable) where it is not.

    The one place of the no-autapse rule: every simulator applies it where it takes the parameters
    (:func:`es_l2l.snn.lsnn.step_rollout`, :func:`es_l2l.snn.fast.fast_rollout`,
    :class:`es_l2l.snn.kernel_loop.KernelLoop`, :func:`es_l2l.snn.fused_grad.fused_rollout`, the
    closed-loop :class:`es_l2l.snn.closed_loop.Stepper`; :func:`es_l2l.snn.lsnn.rollout` through
    them), so a ``w_rec`` with a nonzero diagonal simulates as the same network without it. Decoded
    genomes already have a zero diagonal (their recurrent mask excludes it): then this is one
    check of ``P x N`` values and no copy."""
    w = params.w_rec
    if not torch.diagonal(w, dim1=-2, dim2=-1).any():
        return params
    eye = torch.eye(w.shape[-1], dtype=torch.bool, device=w.device)
    return params._replace(w_rec=w.masked_fill(eye, 0.0))


def readout_keep(readout_steps: torch.Tensor | None, steps: int) -> list[bool]:
    """Per step, whether the readout records it (``readout_steps``; None: every step)."""
    keep = torch.zeros(steps, dtype=torch.bool)
    keep[torch.arange(steps) if readout_steps is None else readout_steps.cpu()] = True
    return keep.tolist()
