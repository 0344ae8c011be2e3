"""The no-grad forward on tensors: state in preallocated buffers, the neuron update in place.

:func:`update_` re-applies :func:`es_l2l.snn.lsnn.lsnn_step`'s floating-point operations in the
same order, in place, so the dense path gives the reference's numbers bit for bit and the event
path differs only in the summation order of ``W_rec z``. Used where the C kernel does not apply
(CUDA, float64, no compiler) and by the CUDA-graph path.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from es_l2l.snn.event import choose_recurrent, event_recurrent_
from es_l2l.snn.types import Rollout, readout


class Buffers(NamedTuple):
    """Preallocated state of the fast rollout, each (P, B, N) unless noted."""

    v: torch.Tensor
    z: torch.Tensor  # this step's spikes (float 0/1)
    z_prev: torch.Tensor
    b: torch.Tensor
    r: torch.Tensor
    zf: torch.Tensor
    thr: torch.Tensor
    tmp: torch.Tensor
    spike: torch.Tensor  # bool
    refr: torch.Tensor  # bool
    count: torch.Tensor


class Coeffs(NamedTuple):
    """Per-neuron constants, (P, 1, N) (kappa: (P, 1, 1)), computed once per rollout."""

    rho: torch.Tensor
    one_m_rho: torch.Tensor
    alpha: torch.Tensor
    one_m_alpha: torch.Tensor
    b0: torch.Tensor
    beta: torch.Tensor
    kappa: torch.Tensor
    one_m_kappa: torch.Tensor
    positive_threshold: bool  # b0 > 0 and beta >= 0: then (v - A) / A > 0 iff v > A, one pass fewer


def coeffs(params) -> Coeffs:
    rho, alpha = params.rho.unsqueeze(1), params.alpha.unsqueeze(1)
    b0, beta = params.b0.unsqueeze(1), params.beta.unsqueeze(1)
    kappa = params.kappa.unsqueeze(1)
    # (v - A) / A > 0 equals v > A for a threshold A in [1e-30, 1e30]: A = b0 + beta b with b in
    # [0, 1] stays in [b0, b0 + beta]; the division neither underflows nor flips a sign there.
    positive = bool(((b0 >= 1e-30) & (beta >= 0) & (b0 + beta <= 1e30)).all())
    return Coeffs(rho, 1.0 - rho, alpha, 1.0 - alpha, b0, beta, kappa, 1.0 - kappa, positive)


def buffers(pop: int, batch: int, n: int, dtype, device) -> Buffers:
    f = lambda: torch.zeros(pop, batch, n, dtype=dtype, device=device)  # noqa: E731
    b = lambda: torch.zeros(pop, batch, n, dtype=torch.bool, device=device)  # noqa: E731
    return Buffers(f(), f(), f(), f(), f(), f(), f(), f(), b(), b(), f())


def update_(s: Buffers, c: Coeffs, current: torch.Tensor, n_ref: int, dt: float) -> None:
    """Steps 1-3 and 5 of ``lsnn_step`` in place, given step 4's ``current``; ``s.z_prev`` holds
    the previous spikes on entry, ``s.z`` this step's on exit. Every float op is the reference's,
    in its order (no fused multiply-add where the reference rounds twice)."""
    # 1. b <- rho b + (1 - rho) z_prev   ((1 - rho) z_prev is exact: z_prev is 0 or 1)
    s.b.mul_(c.rho).addcmul_(s.z_prev, c.one_m_rho)
    # 2. A = b0 + beta b
    torch.mul(c.beta, s.b, out=s.thr).add_(c.b0)
    # 3. z = H((v - A) / A), zero while refractory
    if c.positive_threshold:
        torch.gt(s.v, s.thr, out=s.spike)
    else:
        torch.sub(s.v, s.thr, out=s.tmp).div_(s.thr)
        torch.gt(s.tmp, 0.0, out=s.spike)
    if n_ref > 0:
        torch.gt(s.r, 0.0, out=s.refr)
        s.spike.logical_and_(s.refr.logical_not_())
        s.r.sub_(1.0).clamp_(min=0.0).masked_fill_(s.spike, float(n_ref))
    s.z.copy_(s.spike)
    # 5. v <- alpha v + (1 - alpha) I - A z_prev dt
    s.v.mul_(c.alpha).add_(current.mul_(c.one_m_alpha))
    s.thr.mul_(s.z_prev)
    if dt != 1.0:
        s.thr.mul_(dt)
    s.v.sub_(s.thr)
    # readout trace zf <- kappa zf + (1 - kappa) z   ((1 - kappa) z is exact)
    s.zf.mul_(c.kappa).addcmul_(s.z, c.one_m_kappa)
    s.count.add_(s.z)


def step_currents(x: torch.Tensor, w_in: torch.Tensor) -> torch.Tensor:
    """``W_in x`` laid out time-major, (c, P, B, N), so that each step's slice is contiguous.
    ``x``: (B, c, n_in) shared or (P, B, c, n_in)."""
    if x.dim() == 3:
        xt = x.transpose(0, 1).unsqueeze(1)  # (c, 1, B, n_in)
    else:
        xt = x.permute(2, 0, 1, 3)  # (c, P, B, n_in)
    return torch.matmul(xt, w_in.unsqueeze(0)).contiguous()  # (c, P, B, N)


def inplace_rollout(params, x, *, n_ref, dt, keep, record_spikes, chunk_bytes, recurrent, event_threshold, matmul_dtype, stats):
    """The time loop on tensors, one in-place update per step; ``recurrent`` per step for the whole population."""
    pop, _, n = params.w_in.shape
    batch, steps = x.shape[-3], x.shape[-2]
    dtype, device = params.w_in.dtype, params.w_in.device
    c = coeffs(params)
    s = buffers(pop, batch, n, dtype, device)
    w_rec = params.w_rec.contiguous()
    w_mm = w_rec if matmul_dtype is None else w_rec.to(matmul_dtype)
    numel = pop * batch * n
    use_event = True  # the zero state has no spikes: nothing to add on the first step
    n_dense = n_event = 0
    traces, spikes = [], []
    chunk = max(1, min(steps, chunk_bytes // max(1, numel * x.element_size())))
    for t0 in range(0, steps, chunk):
        currents = step_currents(x[..., t0 : t0 + chunk, :], params.w_in)  # (c, P, B, N)
        for k in range(currents.shape[0]):
            cur = currents[k]  # contiguous (P, B, N); overwritten in place
            if use_event:
                event_recurrent_(cur, s.z_prev, w_rec)
                n_event += 1
            elif matmul_dtype is None:
                cur.baddbmm_(s.z_prev, w_rec)
                n_dense += 1
            else:
                cur.add_(torch.bmm(s.z_prev.to(matmul_dtype), w_mm).to(dtype))
                n_dense += 1
            update_(s, c, cur, n_ref, dt)
            if record_spikes:
                spikes.append(s.z.clone())
            if keep[t0 + k]:
                traces.append(s.zf.clone())
            if recurrent == "auto":
                use_event = choose_recurrent(int(s.spike.sum()), numel, event_threshold) == "event"
            else:
                use_event = recurrent == "event"
            s = s._replace(z=s.z_prev, z_prev=s.z)
    if stats is not None:
        stats.update(dense_steps=n_dense, event_steps=n_event)
    zf = torch.stack(traces, dim=2)  # (P, B, K, N)
    return Rollout(y=readout(zf, params), spike_count=s.count, spikes=torch.stack(spikes, dim=2) if record_spikes else None, n_steps=steps)
