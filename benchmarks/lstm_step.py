"""Seconds per BPTT step of the LSTM model kind: torch's fused LSTM against the cell stepped in Python.

For each config (default: the sMNIST and store-recall LSTM configs) one real BPTT step as the
run does it (:class:`es_l2l.outer.bptt.GradientTrainer`: the family's batch and loss, backward,
Adam), once with the LSTM on torch's own implementation (today's ``lstm_rollout`` for P = 1)
once with the cell loop it replaced, and once with that cell and subnormal floats flushed to zero for
the whole step (what the flush alone buys; torch's path flushes in its backward), alternating, ``--repeats`` times after one warm-up
each; prints the median seconds of each and their ratio as JSON lines. Seconds are the process's
CPU seconds (``time.process_time``, one thread): on a shared machine the wall clock mostly
measures the other processes (wall seconds are printed too). Then, for the population
path ES uses, a forward without grad at ``--pop`` members: the batched cell (what ``lstm_rollout``
runs for P > 1) against one torch LSTM call per member.

    PYTHONPATH=. python benchmarks/lstm_step.py --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

import es_l2l.models.lstm as lstm_mod
from es_l2l.config import load_config
from es_l2l.families import family_of
from es_l2l.genome import build_genome
from es_l2l.models.lstm import LSTMParams, cell_lstm_hidden, init_lstm, torch_lstm_hidden
from es_l2l.outer.shell import gradient_trainer
from es_l2l.seeds import STREAM_TRAIN

ROOT = Path(__file__).resolve().parents[1]
FUSED = lstm_mod.lstm_rollout
SEEN: dict[str, int] = {}  # the sequence length the cell saw


def cell_rollout(params, x, readout_steps=None):
    """The implementation before: the cell stepped over time for every population size."""
    steps = SEEN["steps"] = x.shape[-2]
    x = x.to(params.w_ih.dtype)
    keep = torch.arange(steps) if readout_steps is None else torch.unique(readout_steps.cpu())
    hk = cell_lstm_hidden(params, x, keep)
    return torch.matmul(hk, params.w_out.unsqueeze(1)) + params.b_out[:, None, None, :]


def bptt_steps(config: str, repeats: int) -> dict:
    cfg = load_config(ROOT / "configs" / config, ["run.threads=1"])
    genome = build_genome(cfg)
    trainer = gradient_trainer(cfg, genome)
    keys = (cfg.run.seed, STREAM_TRAIN, 0)
    family_of(cfg.task).gradient_loss  # noqa: B018 (the family is imported before timing)
    times: dict[str, list[float]] = {"cell": [], "cell_flush": [], "torch": []}
    walls: dict[str, list[float]] = {"cell": [], "cell_flush": [], "torch": []}
    for i in range(repeats + 1):
        for name, impl in (("cell", cell_rollout), ("cell_flush", cell_rollout), ("torch", FUSED)):
            lstm_mod.lstm_rollout = impl
            torch.set_flush_denormal(name == "cell_flush")  # what the flush alone gives the cell
            try:
                t0, w0 = time.process_time(), time.perf_counter()
                trainer.step(keys, cfg.run.generations)
                dt, dw = time.process_time() - t0, time.perf_counter() - w0
            finally:
                lstm_mod.lstm_rollout = FUSED
                torch.set_flush_denormal(False)
            if i:  # the first round warms up
                times[name].append(dt)
                walls[name].append(dw)
    n_in, n_out = genome.n_in, genome.n_out
    cell, fused = statistics.median(times["cell"]), statistics.median(times["torch"])
    return dict(config=config, hidden=cfg.model.lstm_units, n_in=n_in, n_out=n_out, batch=cfg.task.batch_size,
                steps=SEEN["steps"], cell_cpu_s=round(cell, 4), cell_flush_cpu_s=round(statistics.median(times["cell_flush"]), 4),
                torch_cpu_s=round(fused, 4), speedup=round(cell / fused, 2), repeats=repeats,
                cell_all=[round(t, 4) for t in times["cell"]], torch_all=[round(t, 4) for t in times["torch"]],
                cell_wall_s=round(statistics.median(walls["cell"]), 3), torch_wall_s=round(statistics.median(walls["torch"]), 3))


@torch.no_grad()
def population_forward(pop: int, n_in: int, hidden: int, batch: int, steps: int, repeats: int) -> dict:
    params = init_lstm(pop, n_in, hidden, 2, torch.Generator().manual_seed(0))
    x = (torch.rand(batch, steps, n_in, generator=torch.Generator().manual_seed(1)) < 0.05).float()
    keep = torch.arange(steps)

    def per_member():
        return torch.cat([torch_lstm_hidden(LSTMParams(*(t[p : p + 1] for t in params)), x) for p in range(pop)])

    times: dict[str, list[float]] = {"cell": [], "torch_per_member": []}
    for i in range(repeats + 1):
        for name, fn in (("cell", lambda: cell_lstm_hidden(params, x, keep)), ("torch_per_member", per_member)):
            t0 = time.process_time()
            fn()
            if i:
                times[name].append(time.process_time() - t0)
    cell, loop = statistics.median(times["cell"]), statistics.median(times["torch_per_member"])
    return dict(population=pop, hidden=hidden, n_in=n_in, batch=batch, steps=steps, cell_cpu_s=round(cell, 4),
                torch_per_member_cpu_s=round(loop, 4), cell_speedup=round(loop / cell, 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", nargs="*", default=["store_recall_lstm_bptt.yaml", "smnist_lstm_bptt.yaml"])
    ap.add_argument("--pop", type=int, nargs="*", default=[16, 64])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta = dict(threads=args.threads, torch=torch.__version__, date=time.strftime("%Y-%m-%d"), load=round(os.getloadavg()[0], 1))
    for config in args.configs:
        print(json.dumps({**bptt_steps(config, args.repeats), **meta}), flush=True)
    for pop in args.pop:  # store-recall's LSTM (5 units, 100 inputs) on 16 sequences of 1,000 steps
        print(json.dumps({**population_forward(pop, 100, 5, 16, 1000, args.repeats), **meta}), flush=True)


if __name__ == "__main__":
    main()
