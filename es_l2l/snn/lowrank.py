"""The population forward that shares the centre (EGGROLL: Sarkar, Fellows, Duque et al. 2025,
"Evolution Strategies at the Hyperscale", arXiv 2511.16652, section 3).

Member ``i``'s matrices are ``W + a_i b_i^T`` (the scale ``sigma / sqrt(r)`` and the antithetic
sign folded into ``a_i``), so every product splits into the shared centre's product and a rank-r
correction:

- input:      ``x W_in + (x a_in_i) b_in_i^T``: ``x W_in`` computed once for the whole population
              (open-loop families: every member sees the same inputs), one dense product with one
              matrix;
- recurrent:  ``z W_rec + (z a_rec_i) b_rec_i^T - z * diag(a_rec_i b_rec_i^T)``: the centre's
              ``W_rec`` applied to all ``P x B`` spike vectors in one dense product (one matrix
              in cache instead of ``P``), the last term keeping the no-autapse rule of the
              explicit matrix;
- readout:    ``zf W_out + (zf a_out_i) b_out_i^T + b_out``.

Equal to :func:`es_l2l.snn.lsnn.rollout` on the explicit matrices to float rounding (test:
``tests/snn/test_lowrank_forward.py``). On CPU float32 the loop runs in C
(:mod:`es_l2l.snn.lowrank_kernel`); elsewhere in tensor operations. Connectivity masks and bounds clipping are not low-rank:
this forward is for members whose matrices are exactly ``W + a b^T`` (dense connectivity, weights
inside their bounds, no mirror tying). The neuron update is :func:`lsnn_step`'s.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from es_l2l.snn.lsnn import lsnn_step, zero_state
from es_l2l.snn.types import LSNNParams, Rollout, no_autapses, readout_keep


class LowRankFactors(NamedTuple):
    """Member i's correction of each centre matrix is ``a[i] @ b[i].T``; ``None``: no correction."""

    a_in: torch.Tensor | None  # (P, n_in, r)
    b_in: torch.Tensor | None  # (P, N, r)
    a_rec: torch.Tensor | None  # (P, N, r)
    b_rec: torch.Tensor | None  # (P, N, r)
    a_out: torch.Tensor | None  # (P, N, r)
    b_out: torch.Tensor | None  # (P, n_out, r)


NO_FACTORS = LowRankFactors(None, None, None, None, None, None)


class LowRankPopulation(NamedTuple):
    """``P`` members that share the centre's matrices up to rank-r corrections: what
    :meth:`es_l2l.models.lsnn.LSNNModel.simulate` runs through :func:`lowrank_rollout`."""

    center: LSNNParams  # matrices (1, ...) of the centre, vectors (P, ...) of each member
    factors: LowRankFactors


def explicit_params(center: LSNNParams, factors: LowRankFactors) -> LSNNParams:
    """The members' explicit matrices ``W + a_i b_i^T`` (P copies, zero ``w_rec`` diagonal: no autapses;
    the reference the test compares with)."""
    pop = center.alpha.shape[0]

    def full(w, a, b):
        w = w.expand(pop, *w.shape[1:])
        return w if a is None else w + a @ b.transpose(1, 2)

    return no_autapses(center._replace(w_in=full(center.w_in, factors.a_in, factors.b_in),
                                       w_rec=full(center.w_rec, factors.a_rec, factors.b_rec),
                                       w_out=full(center.w_out, factors.a_out, factors.b_out)))


@torch.no_grad()
def lowrank_rollout(
    center: LSNNParams,
    factors: LowRankFactors,
    x: torch.Tensor,
    *,
    n_ref: int,
    dt: float = 1.0,
    readout_steps: torch.Tensor | None = None,
    chunk_bytes: int = 1 << 28,
    backend: str = "auto",
) -> Rollout:
    """Simulate ``P`` members that share ``center``'s matrices up to rank-r corrections.

    ``center``: the centre's ``w_in`` (1, n_in, N), ``w_rec`` (1, N, N), ``w_out`` (1, N, n_out)
    and every member's vectors (``alpha``, ``rho``, ``b0``, ``beta``, ``b_out``, ``kappa``:
    leading axis P). ``x``: (B, T, n_in), shared by all members. Returns :class:`Rollout` like
    :func:`es_l2l.snn.lsnn.rollout` on :func:`explicit_params` (no recorded spikes).
    ``backend``: ``"kernel"`` (:mod:`es_l2l.snn.lowrank_kernel`, C), ``"torch"`` (tensor
    operations, any device and dtype) or ``"auto"`` (the kernel where it applies: CPU float32, built).
    """
    if backend not in ("auto", "kernel", "torch"):
        raise ValueError(f"backend must be auto, kernel or torch, got {backend!r}")
    if backend != "torch":
        from es_l2l.snn import lowrank_kernel

        fits = x.device.type == "cpu" and x.dtype == center.alpha.dtype == torch.float32
        if fits and lowrank_kernel.load() is not None:
            return lowrank_kernel.kernel_lowrank_rollout(center, factors, x, n_ref=n_ref, dt=dt, readout_steps=readout_steps)
        if backend == "kernel":
            raise RuntimeError(lowrank_kernel.why_not() if fits else "the low-rank C kernel is for CPU float32 tensors")
    pop, n = center.alpha.shape
    batch, steps, n_in = x.shape
    w_in, w_out = center.w_in[0], center.w_out[0]
    w_rec = center.w_rec[0] * (1.0 - torch.eye(n, dtype=x.dtype, device=x.device))  # no autapses
    f = factors
    bt_rec = None if f.a_rec is None else f.b_rec.transpose(1, 2).contiguous()  # (P, r, N)
    diag = None if f.a_rec is None else (f.a_rec * f.b_rec).sum(-1).unsqueeze(1)  # (P, 1, N): the correction's diagonal
    shared_z = torch.empty(pop * batch, n, dtype=x.dtype, device=x.device)

    def current(i_in, z_prev):  # I = W_in x + W_rec z_prev, shared centre plus rank-r corrections
        out = torch.mm(z_prev.view(pop * batch, n), w_rec, out=shared_z).view(pop, batch, n).add_(i_in)
        if bt_rec is not None:
            out.baddbmm_(torch.bmm(z_prev, f.a_rec), bt_rec).addcmul_(z_prev, diag, value=-1.0)
        return out

    state = zero_state(pop, batch, n, dtype=x.dtype, device=x.device)
    keep = readout_keep(readout_steps, steps)
    chunk = max(1, min(steps, chunk_bytes // max(1, pop * batch * n * x.element_size())))
    traces, count = [], torch.zeros_like(state.v)
    for t0 in range(0, steps, chunk):
        xc = x[:, t0 : t0 + chunk]  # (B, c, n_in)
        c = xc.shape[1]
        shared = (xc.reshape(batch * c, n_in) @ w_in).view(1, batch, c, n)  # once for the population
        if f.a_in is None:
            currents = shared.expand(pop, batch, c, n)
        else:  # (x a_in_i) b_in_i^T: (P, B*c, r) x (P, r, N)
            low = torch.matmul(xc.reshape(1, batch * c, n_in), f.a_in)
            currents = torch.baddbmm(shared.reshape(1, batch * c, n), low, f.b_in.transpose(1, 2)).view(pop, batch, c, n)
        for k, i_in in enumerate(currents.unbind(2)):
            z, state = lsnn_step(i_in, state, center, n_ref=n_ref, dt=dt, current=current)
            count += z
            if keep[t0 + k]:
                traces.append(state.zf)
    zf = torch.stack(traces, dim=2)  # (P, B, K, N)
    y = torch.matmul(zf.reshape(1, -1, n), w_out).view(pop, batch, len(traces), -1)
    if f.a_out is not None:
        low = torch.bmm(zf.reshape(pop, -1, n), f.a_out)  # (P, B*K, r)
        y = y + torch.bmm(low, f.b_out.transpose(1, 2)).view_as(y)
    return Rollout(y=y + center.b_out[:, None, None, :], spike_count=count, spikes=None, n_steps=steps)
