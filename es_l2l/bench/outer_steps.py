"""Seconds per gradient step of the shipped gradient configs, fused C backward against autograd.

For each config listed in ``benchmarks/outer_steps.yaml`` (the shipped gradient configs) one
:class:`es_l2l.outer.bptt.GradientTrainer` per backend takes the same steps (the same tasks),
interleaved so that both meet the same machine load; the ratio says how many more outer steps a
fixed training budget buys with ``bptt.backend=kernel`` (the default on CPU).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from es_l2l.bench.common import median, table

ROOT = Path(__file__).resolve().parents[2]


def shipped_configs() -> list[str]:
    import yaml

    return yaml.safe_load((ROOT / "benchmarks" / "outer_steps.yaml").read_text())["configs"]


def run(quick: bool, steps: int | None = None, configs=None, log=print) -> dict:
    from es_l2l.config import load_config
    from es_l2l.genome import build_genome
    from es_l2l.outer.shell import gradient_trainer
    from es_l2l.seeds import STREAM_TRAIN

    steps = steps or (2 if quick else 6)
    rows = []
    for name in configs or shipped_configs():
        trainers, times = {}, {"kernel": [], "autograd": []}
        for backend in times:
            cfg = load_config(ROOT / name, [f"bptt.backend={backend}"])
            genome = build_genome(cfg)
            trainers[backend] = gradient_trainer(cfg, genome)
        for k in range(steps + 1):  # the first step of each is a warm-up (kernel build, allocations)
            for backend, trainer in trainers.items():
                t0 = time.perf_counter()
                trainer.step((cfg.run.seed, STREAM_TRAIN, k + 1), 10**6)
                if k:
                    times[backend].append(time.perf_counter() - t0)
        med = {b: median(t) for b, t in times.items()}
        rows.append({"config": name, "steps_timed": steps, "seconds_per_step": med, "speedup": med["autograd"] / med["kernel"],
                     "batch": cfg.bptt.batch_size or cfg.task.batch_size, "neurons": cfg.model.n_lif + cfg.model.n_alif})
        log(f"  {name}: kernel {med['kernel']:.3f} s/step, autograd {med['autograd']:.3f} s/step")
    return {"threads": torch.get_num_threads(), "configs": rows}


def report(res: dict) -> str:
    body = [[r["config"], r["neurons"], r["batch"], f"{r['seconds_per_step']['kernel']:.3f}",
             f"{r['seconds_per_step']['autograd']:.3f}", f"{r['speedup']:.1f}x"] for r in res["configs"]]
    return table(body, ["config", "N", "B", "kernel s/step", "autograd s/step", "speedup"])
