"""One BPTT step (forward through the spikes, backward with the pseudo-derivative, Adam) at the
simulation benchmark's shapes: seconds and memory.

Memory: the bytes autograd keeps for backward (unique storages, counted with
``torch.autograd.graph.saved_tensors_hooks``), which is what grows with ``P B N T``; on CUDA also
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import torch

from es_l2l.bench.common import input_spikes, interleaved, median, reference_params, table
from es_l2l.bench.sim import BACKWARD_MAX_GIB, N_IN, N_REF, SPARSE_B0, _saved_bytes
from es_l2l.snn import LSNNParams, rollout

TRAINED = ("w_in", "w_rec", "w_out", "b_out")


def step_cell(pop: int, n: int, batch: int, steps: int, repeats: int, recurrent: str = "dense") -> dict:
    params = reference_params(pop, n, N_IN, b0=SPARSE_B0)
    leaves = LSNNParams(*[t.clone().requires_grad_(name in TRAINED) for name, t in zip(LSNNParams._fields, params)])
    trained = [getattr(leaves, k) for k in TRAINED]
    opt = torch.optim.Adam(trained, lr=1e-3)
    x = input_spikes(batch, steps, N_IN)
    readout = torch.arange(0, steps, 20)
    target = torch.zeros(pop, batch, len(readout), 1)

    def step():
        opt.zero_grad(set_to_none=True)
        out = rollout(leaves, x, n_ref=N_REF, readout_steps=readout, recurrent=recurrent)
        loss = (out.y - target).pow(2).mean()
        loss.backward()
        opt.step()

    saved = _saved_bytes(leaves, x, readout[-1:])
    cell = {"P": pop, "B": batch, "N": n, "T": steps, "recurrent": recurrent, "autograd_saved_bytes": saved}
    if saved > BACKWARD_MAX_GIB * 2**30:
        cell["capped"] = f"not run: {saved / 2**30:.1f} GiB saved for backward > {BACKWARD_MAX_GIB:g} GiB cap"
        return cell
    times = interleaved({"step": step}, repeats)
    cell.update(seconds=times["step"], median_seconds=median(times["step"]),
                neuron_steps_per_s=pop * batch * n * steps / median(times["step"]))
    return cell


def run(quick: bool, neurons=None, pops=(1,), repeats: int = 2, log=print) -> dict:
    batch, steps = (4, 60) if quick else (32, 500)
    neurons = tuple(neurons or ((32,) if quick else (100, 200, 400)))
    cells = []
    for pop in pops:
        for n in neurons:
            for recurrent in ("dense", "event"):
                log(f"  BPTT step P={pop} N={n} ({recurrent} W_rec z)")
                cells.append(step_cell(pop, n, batch, steps, 1 if quick else repeats, recurrent))
    return {"optimizer": "Adam on w_in w_rec w_out b_out", "loss": "MSE of readouts every 20 steps", "B": batch, "T": steps,
            "cells": cells}


def report(res: dict) -> str:
    rows = [[c["P"], c["N"], c["recurrent"], "capped" if "capped" in c else f"{c['median_seconds']:.3f}",
             "-" if "capped" in c else f"{c['neuron_steps_per_s']:.3g}", f"{c['autograd_saved_bytes'] / 2**20:,.0f}"]
            for c in res["cells"]]
    return f"BPTT step (forward + backward + Adam), B={res['B']}, T={res['T']}\n" + table(
        rows, ["P", "N", "W_rec z", "s / step", "neuron-steps/s", "autograd MiB"])
