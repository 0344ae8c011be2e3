"""The benchmark's ``torch.compile`` variant of the no-grad forward (dense recurrent input).

Measured against the C kernel and the in-place update by ``es-l2l bench --only sim``, it does not
pay on CPU here (compile 10-30 s, and slower than the kernel per step), so it lives with the
benchmark and not in the simulator.
"""

from __future__ import annotations

import torch

from es_l2l.snn.inplace import buffers, coeffs, step_currents
from es_l2l.snn.types import Rollout, readout


def _update_pure(v, b, r, zf, z_prev, current, rho, one_m_rho, alpha, one_m_alpha, b0, beta, kappa, one_m_kappa, count, n_ref: int, dt: float):
    """The same update as one pure function, for ``torch.compile`` to fuse into a single kernel."""
    b = rho * b + one_m_rho * z_prev
    thr = b0 + beta * b
    spike = (v - thr) / thr > 0
    if n_ref > 0:
        spike = spike & (r <= 0)
        r = torch.where(spike, torch.full_like(r, float(n_ref)), (r - 1.0).clamp(min=0.0))
    z = spike.to(v.dtype)
    v = alpha * v + one_m_alpha * current - thr * z_prev * dt
    zf = kappa * zf + one_m_kappa * z
    return v, z, b, r, zf, count + z


@torch.no_grad()
def compiled_rollout(params, x: torch.Tensor, *, n_ref: int, dt: float = 1.0, readout_steps: torch.Tensor | None = None,
                     record_spikes: bool = False, step_fn=None) -> Rollout:
    """The rollout with the neuron update under ``torch.compile`` (``step_fn``: a compiled
    :func:`_update_pure`, compiled here when not given; the first call of a shape compiles)."""
    step_fn = step_fn or torch.compile(_update_pure, dynamic=False, fullgraph=True)
    pop, _, n = params.w_in.shape
    batch, steps = x.shape[-3], x.shape[-2]
    c = coeffs(params)
    s = buffers(pop, batch, n, params.w_in.dtype, params.w_in.device)
    w_rec = params.w_rec.contiguous()
    keep = torch.zeros(steps, dtype=torch.bool)
    keep[(torch.arange(steps) if readout_steps is None else readout_steps).cpu()] = True
    traces, spikes = [], []
    currents = step_currents(x, params.w_in)  # (T, P, B, N)
    for t in range(steps):
        cur = currents[t].baddbmm_(s.z_prev, w_rec)
        v, z, b, r, zf, count = step_fn(s.v, s.b, s.r, s.zf, s.z_prev, cur, c.rho, c.one_m_rho, c.alpha,
                                        c.one_m_alpha, c.b0, c.beta, c.kappa, c.one_m_kappa, s.count, n_ref, dt)
        s = s._replace(v=v, b=b, r=r, zf=zf, count=count, z_prev=z)
        if record_spikes:
            spikes.append(z)
        if keep[t]:
            traces.append(zf)
    y = readout(torch.stack(traces, dim=2), params)
    return Rollout(y=y, spike_count=s.count, spikes=torch.stack(spikes, dim=2) if record_spikes else None, n_steps=steps)
