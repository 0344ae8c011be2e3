"""The no-grad forward on CUDA with the time loop captured in CUDA graphs (dense ``W_rec z``)."""

from __future__ import annotations

import torch

from es_l2l.snn.inplace import buffers, coeffs, step_currents, update_
from es_l2l.snn.types import Rollout, readout


def cuda_graph_rollout(params, x, *, n_ref, dt, keep, record_spikes, chunk_bytes, matmul_dtype):
    """The time loop captured in CUDA graphs: one graph replays ``K`` steps (dense ``W_rec z``)
    from static buffers, so a step costs no kernel launch from Python. Not run on hardware yet."""

    pop, _, n = params.w_in.shape
    batch, steps = x.shape[-3], x.shape[-2]
    dtype, device = params.w_in.dtype, params.w_in.device
    c = coeffs(params)
    s = buffers(pop, batch, n, dtype, device)
    w_rec = params.w_rec.contiguous()
    w_mm = w_rec if matmul_dtype is None else w_rec.to(matmul_dtype)
    numel = pop * batch * n
    k_steps = max(2, min(64, chunk_bytes // max(1, numel * x.element_size() * 3)))
    k_steps -= k_steps % 2  # an even count: the z / z_prev buffer swap ends where it started
    inp = torch.zeros(k_steps, pop, batch, n, dtype=dtype, device=device)  # static input chunk
    zf_out = torch.zeros_like(inp)
    z_out = torch.zeros_like(inp)

    def run(k_count: int) -> None:
        nonlocal s
        for k in range(k_count):
            cur = inp[k]
            if matmul_dtype is None:
                cur.baddbmm_(s.z_prev, w_rec)
            else:
                cur.add_(torch.bmm(s.z_prev.to(matmul_dtype), w_mm).to(dtype))
            update_(s, c, cur, n_ref, dt)
            zf_out[k].copy_(s.zf)
            z_out[k].copy_(s.z)
            s = s._replace(z=s.z_prev, z_prev=s.z)

    graph = None
    if k_steps >= 2 and steps >= k_steps:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up on a side stream, as capture requires
            run(k_steps)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run(k_steps)
        for buf in s:  # warm-up advanced the state: back to the zero state
            buf.zero_()
    traces, spikes = [], []
    t = 0
    while t < steps:
        k_count = k_steps if graph is not None and steps - t >= k_steps else 1
        inp[:k_count].copy_(step_currents(x[..., t : t + k_count, :], params.w_in))
        if k_count == k_steps and graph is not None:
            graph.replay()
        else:
            run(k_count)
        for k in range(k_count):
            if record_spikes:
                spikes.append(z_out[k].clone())
            if keep[t + k]:
                traces.append(zf_out[k].clone())
        t += k_count
    zf = torch.stack(traces, dim=2)
    y = readout(zf, params)
    return Rollout(y=y, spike_count=s.count, spikes=torch.stack(spikes, dim=2) if record_spikes else None, n_steps=steps)
