"""Benchmark: population-batched LSNN simulation against a loop over members, same shapes, one run.

Reports neuron-steps per second (P * B * N * T / seconds) and the batched/loop ratio, measured
side by side with the repeats interleaved (the machine is shared and noisy), and writes JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from es_l2l import __version__
from es_l2l.snn import LSNNParams, rollout

FULL = dict(pop=64, batch=32, n=200, n_in=10, steps=500, repeats=3)
QUICK = dict(pop=8, batch=4, n=40, n_in=10, steps=100, repeats=2)


def reference_params(pop: int, n: int, n_in: int, seed: int = 0) -> LSNNParams:
    """Reference-style network: half LIF, half ALIF, weights N(0, 1) / sqrt(n_pre)."""
    g = torch.Generator().manual_seed(seed)
    n_lif = n // 2
    return LSNNParams(
        w_in=torch.randn(pop, n_in, n, generator=g) / math.sqrt(n_in),
        w_rec=torch.randn(pop, n, n, generator=g) / math.sqrt(n) * (1 - torch.eye(n)),
        w_out=torch.randn(pop, n, 1, generator=g) / math.sqrt(n),
        b_out=torch.zeros(pop, 1),
        alpha=torch.full((pop, n), math.exp(-1 / 20)),
        rho=torch.full((pop, n), math.exp(-1 / 700)),
        b0=torch.full((pop, n), 0.01),
        beta=torch.cat([torch.zeros(pop, n_lif), torch.full((pop, n - n_lif), 1.8)], 1),
        kappa=torch.full((pop, 1), math.exp(-1 / 20)),
    )


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@torch.no_grad()
def simulation_benchmark(pop, batch, n, n_in, steps, repeats) -> dict:
    params = reference_params(pop, n, n_in)
    x = (torch.rand(batch, steps, n_in, generator=torch.Generator().manual_seed(1)) < 0.05).float()
    last = torch.tensor([steps - 1])
    members = [LSNNParams(*[t[p : p + 1] for t in params]) for p in range(pop)]
    batched = lambda: rollout(params, x, n_ref=5, readout_steps=last)  # noqa: E731
    looped = lambda: [rollout(m, x, n_ref=5, readout_steps=last) for m in members]  # noqa: E731
    batched()  # warm-up for both paths
    rollout(members[0], x, n_ref=5, readout_steps=last)
    z = (torch.rand(pop, batch, n, generator=torch.Generator().manual_seed(2)) < 0.05).float()
    bare_bmm = lambda: [torch.bmm(z, params.w_rec) for _ in range(steps)]  # noqa: E731  # W_rec z alone
    times = {"batched": [], "loop": [], "bare_bmm": []}
    for _ in range(repeats):  # interleaved, so all three see the same machine load
        times["batched"].append(_time(batched))
        times["loop"].append(_time(looped))
        times["bare_bmm"].append(_time(bare_bmm))
    work = pop * batch * n * steps
    med = {k: statistics.median(v) for k, v in times.items()}
    spikes = rollout(params, x, n_ref=5, readout_steps=last).spike_count.sum().item()
    return {
        "name": "lsnn_forward_population_vs_loop",
        "shapes": dict(P=pop, B=batch, N=n, n_in=n_in, T=steps),
        "seconds": times,
        "median_seconds": med,
        "neuron_steps_per_s": {k: work / v for k, v in med.items()},
        "ratio_batched_over_loop": med["loop"] / med["batched"],
        "bare_bmm_gflops": 2 * work * n / med["bare_bmm"] / 1e9,
        "bmm_share_of_batched": med["bare_bmm"] / med["batched"],
        "firing_rate_per_step": spikes / work,
    }


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "es_l2l": __version__,
    }


def main(quick: bool = False, out: str = "benchmarks/results", console=None) -> int:
    shapes = QUICK if quick else FULL
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": quick,
        "results": [simulation_benchmark(**shapes)],
    }
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"simulation{'-quick' if quick else ''}.json"
    path.write_text(json.dumps(result, indent=2))
    r = result["results"][0]
    lines = [
        f"LSNN forward, {r['shapes']}, torch threads {result['machine']['torch_threads']}",
        f"  batched : {r['median_seconds']['batched']:.3f} s  {r['neuron_steps_per_s']['batched']:.3g} neuron-steps/s",
        f"  loop    : {r['median_seconds']['loop']:.3f} s  {r['neuron_steps_per_s']['loop']:.3g} neuron-steps/s",
        f"  ratio   : batched is {r['ratio_batched_over_loop']:.2f}x the loop over members",
        f"  bmm     : the bare W_rec z bmm alone takes {r['median_seconds']['bare_bmm']:.3f} s "
        f"({r['bare_bmm_gflops']:.0f} GFLOP/s), {r['bmm_share_of_batched']:.0%} of the batched simulation",
        f"  written : {path}",
    ]
    print("\n".join(lines)) if console is None else console.print("\n".join(lines), highlight=False)
    return 0
