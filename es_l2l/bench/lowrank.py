"""One ES generation's forward: full-rank members, low-rank members (the centre shared, rank-r
corrections; EGGROLL, Sarkar et al. 2025) and pure batch inference (every member with the centre's
matrices: the roofline EGGROLL measures against), side by side, repeat by repeat, in one run.

Throughput is member-neuron-steps per second, ``P * B * N * T / seconds``. Full rank is the
production no-grad forward (:func:`es_l2l.snn.rollout`: the C kernel where built, ``P`` explicit
matrices); low rank and batch inference are :func:`es_l2l.snn.lowrank.lowrank_rollout` (the
centre's matrices applied once for the population, with or without the rank-r corrections; in C,
:mod:`es_l2l.snn.lowrank_kernel`, where built).
"""

from __future__ import annotations

import math

import torch

from es_l2l.bench.common import fmt, input_spikes, interleaved, median, reference_params, table
from es_l2l.snn import rollout
from es_l2l.snn.lowrank import NO_FACTORS, LowRankFactors, lowrank_rollout

N_IN, N_REF, SIGMA = 10, 5, 0.05
FULL = dict(pops=(64, 256, 1024), neurons=(32, 220, 800), ranks=(1, 4, 16), batch=4, steps=50, repeats=2)
QUICK = dict(pops=(8,), neurons=(16,), ranks=(1, 4), batch=2, steps=20, repeats=1)
FULL_RANK_MAX_GIB = 3.0  # full-rank cells whose P explicit W_rec would exceed this are not run


def _factors(pop: int, n: int, rank: int) -> LowRankFactors:
    g = torch.Generator().manual_seed(3)
    s = SIGMA / math.sqrt(rank)
    randn = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    return LowRankFactors(s * randn(pop, N_IN, rank), randn(pop, n, rank), s * randn(pop, n, rank), randn(pop, n, rank),
                          s * randn(pop, n, rank), randn(pop, 1, rank))


@torch.no_grad()
def cell(pop: int, n: int, ranks, batch: int, steps: int, repeats: int) -> dict:
    center = reference_params(1, n, N_IN)
    members = reference_params(pop, n, N_IN)  # per-member vectors (equal here; the cost does not depend on them)
    shared = members._replace(w_in=center.w_in, w_rec=center.w_rec, w_out=center.w_out)
    x = input_spikes(batch, steps, N_IN)
    last = torch.tensor([steps - 1])
    fns = {"batch_inference": lambda: lowrank_rollout(shared, NO_FACTORS, x, n_ref=N_REF, readout_steps=last)}
    for r in ranks:
        f = _factors(pop, n, r)
        fns[f"lowrank_r{r}"] = lambda f=f: lowrank_rollout(shared, f, x, n_ref=N_REF, readout_steps=last)
    full_gib = pop * n * (n + N_IN + 1) * 4 / 2**30
    if full_gib <= FULL_RANK_MAX_GIB:
        g = torch.Generator().manual_seed(4)
        explicit = members._replace(w_in=center.w_in + SIGMA * torch.randn(pop, N_IN, n, generator=g),
                                    w_rec=(center.w_rec + SIGMA * torch.randn(pop, n, n, generator=g)) * (1 - torch.eye(n)),
                                    w_out=center.w_out + SIGMA * torch.randn(pop, n, 1, generator=g))
        fns["full_rank"] = lambda: rollout(explicit, x, n_ref=N_REF, readout_steps=last)
    for fn in fns.values():  # warm-up (allocations, the kernel's first call)
        fn()
    times = interleaved(fns, repeats)
    work = pop * batch * n * steps
    out = {"P": pop, "N": n, "B": batch, "T": steps, "seconds": {k: median(v) for k, v in times.items()},
           "member_neuron_steps_per_s": {k: work / median(v) for k, v in times.items()}}
    if "full_rank" not in fns:
        out["full_rank_skipped"] = f"P explicit matrices need {full_gib:.1f} GiB > {FULL_RANK_MAX_GIB} GiB"
    rate = out["member_neuron_steps_per_s"]
    out["lowrank_over_batch_inference"] = {f"r{r}": rate[f"lowrank_r{r}"] / rate["batch_inference"] for r in ranks}
    if "full_rank" in rate:
        out["lowrank_over_full_rank"] = {f"r{r}": rate[f"lowrank_r{r}"] / rate["full_rank"] for r in ranks}
    return out


def run(quick: bool = False, pops=None, neurons=None, repeats=None, log=print) -> dict:
    grid = dict(QUICK if quick else FULL)
    grid.update({k: v for k, v in (("pops", pops), ("neurons", neurons), ("repeats", repeats)) if v})
    cells = []
    for n in grid["neurons"]:
        for pop in grid["pops"]:
            log(f"  lowrank: P={pop} N={n}")
            cells.append(cell(pop, n, grid["ranks"], grid["batch"], grid["steps"], grid["repeats"]))
    return {"grid": grid, "threads": torch.get_num_threads(), "cells": cells,
            "what": "member-neuron-steps/s of one generation's forward: full rank (production rollout, P explicit "
                    "matrices), low rank (shared centre + rank-r corrections), batch inference (shared centre only)"}


def report(res: dict) -> str:
    ranks = res["grid"]["ranks"]
    head = ["P", "N", "full rank", *[f"r={r}" for r in ranks], "batch inf.", *[f"r={r}/batch" for r in ranks],
            *[f"r={r}/full" for r in ranks]]
    rows = []
    for c in res["cells"]:
        rate = c["member_neuron_steps_per_s"]
        rows.append([c["P"], c["N"], fmt(rate["full_rank"]) if "full_rank" in rate else "-",
                     *[fmt(rate[f"lowrank_r{r}"]) for r in ranks], fmt(rate["batch_inference"]),
                     *[f"{c['lowrank_over_batch_inference'][f'r{r}']:.0%}" for r in ranks],
                     *[f"{c['lowrank_over_full_rank'][f'r{r}']:.2f}x" if "lowrank_over_full_rank" in c else "-" for r in ranks]])
    return "lowrank (member-neuron-steps/s, one generation's forward):\n" + table(rows, head)
