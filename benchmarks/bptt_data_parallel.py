"""One BPTT step at bptt.workers = 1 against 2 (data-parallel replicas on a local Ray), side by side.

At the shipped teacher BPTT size (configs/teacher_bptt.yaml: 64 tasks a step) and one torch thread
per process: W = 1 is the single-process GradientTrainer in this process; W = 2 is two Ray replicas
in one gloo group, each taking 32 tasks. For W = 2 the step splits into the all-reduce of the D
gradients (timed inside the replicas) and the rest (forward, backward, Adam, the Ray round trip).
The two are timed in alternation (one W = 1 step, one W = 2 step, ...), so that a change in the
machine's load lands on both. Writes a JSON with the medians and their ratio.

    python benchmarks/bptt_data_parallel.py [--steps 20] [--set bptt.batch_size=512] [--out benchmarks/results/NAME.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "teacher_bptt.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. bptt.batch_size=512")
    args = ap.parse_args()

    import ray

    from es_l2l.config import load_config
    from es_l2l.genome import build_genome
    from es_l2l.outer.shell import gradient_trainer
    from es_l2l.outer.data_parallel import make_data_parallel
    from es_l2l.seeds import STREAM_TRAIN

    torch.set_num_threads(1)
    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    cfg1 = load_config(CONFIG, ["run.threads=1", *args.set])
    cfg2 = load_config(CONFIG, ["run.threads=1", *args.set, "bptt.workers=2"])
    genome = build_genome(cfg1)
    one = gradient_trainer(cfg1, genome)
    two = make_data_parallel(cfg2, genome)
    total = args.warmup + args.steps
    t1, t2, reduce_s = [], [], []
    try:
        for step in range(1, total + 1):
            keys = (cfg1.run.seed, STREAM_TRAIN, step)
            t0 = time.perf_counter()
            one.step(keys, total)
            a = time.perf_counter() - t0
            t0 = time.perf_counter()
            metrics = two.step(keys, total)
            b = time.perf_counter() - t0
            if step > args.warmup:
                t1.append(a)
                t2.append(b)
                reduce_s.append(metrics["allreduce_s"])
    finally:
        two.close()
        ray.shutdown()
    med1, med2, med_r = statistics.median(t1), statistics.median(t2), statistics.median(reduce_s)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    out = {
        "what": "one BPTT step, bptt.workers=1 (one process) against 2 (Ray replicas, gloo all-reduce)",
        "config": "configs/teacher_bptt.yaml",
        "overrides": args.set,
        "tasks_per_step": cfg1.bptt.batch_size or cfg1.task.batch_size,
        "genome_dim": genome.dim,
        "gradient_dim": int(sum(p.numel() for p in one.leaves.values())),
        "steps_timed": args.steps,
        "threads_per_process": 1,
        "w1_step_s_median": med1,
        "w2_step_s_median": med2,
        "w2_allreduce_s_median": med_r,
        "w2_rest_s_median": statistics.median(b - r for b, r in zip(t2, reduce_s)),
        "speedup_w2_over_w1": med1 / med2,
        "parallel_efficiency": med1 / med2 / 2,
        "allreduce_share_of_w2_step": med_r / med2,
        "w1_step_s": t1,
        "w2_step_s": t2,
        "w2_allreduce_s": reduce_s,
        "commit": commit,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), os.cpu_count={__import__('os').cpu_count()}",
        "note": "shared 2-core machine, heavily loaded by other jobs while measured: read the ratios, not the seconds",
    }
    text = json.dumps(out, indent=2)
    print(json.dumps({k: v for k, v in out.items() if not isinstance(v, list)}, indent=2))
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
