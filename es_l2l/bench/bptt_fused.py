"""The fused C BPTT (:mod:`es_l2l.snn.fused_grad`) against autograd through ``step_rollout``: one
BPTT step (forward + backward, no optimizer) per cell, the three-``bmm`` roofline of the same
shapes (``z W``, then backward's ``g W^T`` and ``z^T g``, ``T`` times), timed interleaved in the
same run, and the bytes each keeps for backward.

Cells: ``N`` in {100, 220, 400}, ``B`` in {32, 64, 256}, ``T`` in {500, 784}, ``P`` in {1, 16}
(``--quick``: the key shape P=1, B=64, N=220, T=784 and one P=16 cell at N=100, B=32, T=500).
Gradients for ``w_in``, ``w_rec``, ``w_out``, ``b_out`` (BPTT's trained blocks); loss: MSE of the
readouts every 20 steps. Autograd's bytes are counted with ``saved_tensors_hooks`` on a small
rollout (linear in ``P B N T``) and scaled; a cell whose autograd (or fused) memory would pass
:data:`MAX_GIB` is not run on that side. ``memory_check`` runs P=64, N=200, B=32, T=500 forward +
backward in a fresh process and reports its peak resident memory.

Targets (issue): fused >= 8x autograd at P=1, B=64, N=220, T=784 on one thread; fused >= 40% of
the three-bmm roofline (``fraction_of_roofline = bmm x3 seconds / fused seconds``); recorded
bytes <= 1/4 of autograd's; P=64, N=200, B=32, T=500 within 2 GiB.
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from es_l2l.bench.common import input_spikes, interleaved, median, reference_params, table
from es_l2l.bench.sim import N_IN, N_REF, SPARSE_B0
from es_l2l.snn import LSNNParams, grad_kernel
from es_l2l.snn.fused_grad import fused_rollout, why_unsupported
from es_l2l.snn.lsnn import step_rollout

TRAINED = ("w_in", "w_rec", "w_out", "b_out")
MAX_GIB = 6.0
KEY = (1, 64, 220, 784)  # P, B, N, T
GRID = [(p, b, n, t) for p in (1, 16) for n in (100, 220, 400) for b in (32, 64, 256) for t in (500, 784)]
QUICK = [KEY, (16, 32, 100, 500)]


def _leaves(pop, n):
    params = reference_params(pop, n, N_IN, b0=SPARSE_B0)
    return LSNNParams(*[t.clone().requires_grad_(name in TRAINED) for name, t in zip(LSNNParams._fields, params)])


def autograd_bytes_per_neuron_step() -> float:
    """Bytes autograd keeps for backward through ``step_rollout`` per neuron-step (unique
    storages, measured on a small rollout with this benchmark's trained blocks and readouts)."""
    pop, batch, n, steps = 2, 4, 50, 60
    leaves, x = _leaves(pop, n), input_spikes(batch, steps, N_IN)
    seen, total = set(), [0]

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total[0] += key[1]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = step_rollout(leaves, x, n_ref=N_REF, readout_steps=torch.arange(0, steps, 20))
    del out
    return total[0] / (pop * batch * n * steps)


def cell(pop: int, batch: int, n: int, steps: int, repeats: int, autograd_bpns: float) -> dict:
    work = pop * batch * n * steps
    fused_bytes = grad_kernel.recorded_bytes(pop, batch, n, steps)
    out = {"P": pop, "B": batch, "N": n, "T": steps, "neuron_steps": work, "fused_recorded_bytes": fused_bytes,
           "fused_bytes_per_neuron_step": fused_bytes / work,
           "autograd_bytes_estimate": autograd_bpns * work, "autograd_bytes_per_neuron_step": autograd_bpns,
           "recorded_over_autograd_bytes": fused_bytes / (autograd_bpns * work)}
    leaves, x = _leaves(pop, n), input_spikes(batch, steps, N_IN)
    why = why_unsupported(leaves, x)
    if why:
        out["skipped"] = why
        return out
    readout = torch.arange(0, steps, 20)
    trained = [getattr(leaves, k) for k in TRAINED]

    def fb(fn):
        def run():
            for t in trained:
                t.grad = None
            y = fn(leaves, x, n_ref=N_REF, readout_steps=readout).y
            y.pow(2).mean().backward()
        return run

    g = torch.Generator().manual_seed(3)
    z = (torch.rand(pop, batch, n, generator=g) < 0.05).float()
    grad = torch.randn(pop, batch, n, generator=g)
    w = leaves.w_rec.detach()
    wt = w.transpose(1, 2)
    outs = [torch.empty(pop, batch, n), torch.empty(pop, batch, n), torch.empty(pop, n, n)]

    def three_bmm():
        for _ in range(steps):
            torch.bmm(z, w, out=outs[0])
            torch.bmm(grad, wt, out=outs[1])
            torch.bmm(z.transpose(1, 2), grad, out=outs[2])

    fns = {}
    cap = MAX_GIB * 2**30
    if fused_bytes <= cap:
        fns["fused"] = fb(fused_rollout)
    else:
        out["fused_capped"] = f"recording {fused_bytes / 2**30:.1f} GiB > {MAX_GIB:g} GiB cap"
    if autograd_bpns * work <= cap:
        fns["autograd"] = fb(step_rollout)
    else:
        out["autograd_capped"] = f"autograd would keep ~{autograd_bpns * work / 2**30:.1f} GiB > {MAX_GIB:g} GiB cap"
    fns["bmm_x3"] = three_bmm
    if "fused" in fns:
        fns["fused"]()  # warm-up: kernel load, first-touch of the allocator's pools
    times = interleaved(fns, repeats)
    med = {k: median(v) for k, v in times.items()}
    with torch.no_grad():
        rate = float(fused_rollout(leaves, x, n_ref=N_REF).spike_count.mean()) / steps if "fused" in fns else None
    out.update(repeats=repeats, seconds=times, median_seconds=med, firing_rate_per_step=rate,
               neuron_steps_per_s={k: work / v for k, v in med.items()})
    if "fused" in med:
        out["fraction_of_roofline"] = med["bmm_x3"] / med["fused"]
        if "autograd" in med:
            out["speedup_over_autograd"] = med["autograd"] / med["fused"]
    if "autograd" in med:
        out["autograd_fraction_of_roofline"] = med["bmm_x3"] / med["autograd"]
    return out


MEMORY_SCRIPT = r"""
import json, sys, torch
from es_l2l.bench.bptt_fused import _leaves, N_IN, N_REF, input_spikes
from es_l2l.snn.fused_grad import fused_rollout
def hwm():  # this process's own peak RSS (ru_maxrss would carry the parent's over fork + exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
pop, batch, n, steps = map(int, sys.argv[1:5])
leaves, x = _leaves(pop, n), input_spikes(batch, steps, N_IN)
fused_rollout(_leaves(1, 8), input_spikes(2, 4, N_IN), n_ref=N_REF).y.sum().backward()  # load the kernel
before = hwm()
stats = {}
fused_rollout(leaves, x, n_ref=N_REF, readout_steps=torch.arange(0, steps, 20), stats=stats).y.pow(2).mean().backward()
peak = hwm()
print(json.dumps({"rss_before_bytes": before, "peak_rss_bytes": peak, "recorded_bytes": stats["recorded_bytes"]}))
"""


def memory_check(pop: int = 64, batch: int = 32, n: int = 200, steps: int = 500) -> dict:
    """Forward + backward of the fused path in a fresh process: its peak resident memory (VmHWM,
    Python, torch and the kernel included; Linux)."""
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(pop), str(batch), str(n), str(steps)],
                          capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        return {"P": pop, "B": batch, "N": n, "T": steps, "error": done.stderr.strip().splitlines()[-1:]}
    res = json.loads(done.stdout.strip().splitlines()[-1])
    res.update(P=pop, B=batch, N=n, T=steps, peak_rss_gib=res["peak_rss_bytes"] / 2**30,
               within_2_gib=res["peak_rss_bytes"] <= 2 * 2**30)
    return res


def run(quick: bool, repeats: int | None = None, log=print, memory: bool = True) -> dict:
    cells_spec = QUICK if quick else GRID
    reps = repeats or (2 if quick else 3)
    bpns = autograd_bytes_per_neuron_step()
    cells = []
    for pop, batch, n, steps in cells_spec:
        log(f"  fused BPTT vs autograd P={pop} B={batch} N={n} T={steps}")
        big = pop * batch * n * steps > 16 * 64 * 220 * 784
        cells.append(cell(pop, batch, n, steps, 1 if big else reps, bpns))
    res = {"trained": list(TRAINED), "loss": "MSE of readouts every 20 steps", "n_ref": N_REF, "b0": SPARSE_B0,
           "threads": torch.get_num_threads(), "autograd_bytes_per_neuron_step": bpns, "cells": cells,
           "roofline": "3 bare bmm per step (z W, g W^T, z^T g), same shapes, same run",
           "targets": {"speedup_at_key_shape": 8.0, "fraction_of_roofline": 0.4, "recorded_over_autograd_bytes": 0.25,
                       "memory_P64_N200_B32_T500_gib": 2.0}}
    if memory:
        log("  memory: P=64 N=200 B=32 T=500 forward + backward in a fresh process")
        res["memory_check"] = memory_check()
    return res


def report(res: dict) -> str:
    rows = []
    for c in res["cells"]:
        med = c.get("median_seconds", {})
        f = lambda k: f"{med[k]:.3f}" if k in med else "-"  # noqa: E731
        rows.append([c["P"], c["B"], c["N"], c["T"], f("fused"), f("autograd"), f("bmm_x3"),
                     f"{c['speedup_over_autograd']:.1f}x" if "speedup_over_autograd" in c else "-",
                     f"{c['fraction_of_roofline']:.0%}" if "fraction_of_roofline" in c else "-",
                     f"{c['fused_bytes_per_neuron_step']:.2f}", f"{c['autograd_bytes_per_neuron_step']:.1f}"])
    out = [f"fused BPTT (forward + backward) vs autograd, {res['threads']} thread(s); seconds per step",
           table(rows, ["P", "B", "N", "T", "fused", "autograd", "bmm x3", "speedup", "%roof", "fused B/ns", "autograd B/ns"])]
    mem = res.get("memory_check")
    if mem and "peak_rss_gib" in mem:
        out.append(f"P=64 N=200 B=32 T=500 fused forward + backward: peak RSS {mem['peak_rss_gib']:.2f} GiB "
                   f"(recording {mem['recorded_bytes'] / 2**30:.2f} GiB)")
    return "\n".join(out)
