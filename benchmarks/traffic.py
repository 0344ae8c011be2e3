"""Driver <-> worker traffic and time per ES generation: three ways to ship a population to Ray actors.

On one config and one local Ray with 2 evaluation actors, side by side:

- ``seeds``:   es-l2l's seed-only traffic (the distribution and sampler state once a generation
               through the object store; per-member scalars back), ``es.traffic=seeds``;
- ``vectors``: es-l2l's actors receiving their members, ``es.traffic=vectors``;
- ``evotorch``: evotorch's own actor mode, ``Problem(num_actors=2)``, on the same fitness.

The three searches step in turn, generation by generation. Bytes are the serialized sizes (``ray.cloudpickle``, protocol 5, buffers in-band) of every
argument passed to an actor method, every ``ray.put`` and every result fetched with ``ray.get``
during a generation, counted by wrapping those three Ray calls in this process: the payload Ray
moves, not counting its own framing. Seconds are the wall time of ``searcher.step()``.

    .venv/bin/python benchmarks/traffic.py [--generations 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=DeprecationWarning)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
import torch  # noqa: E402

from es_l2l.bench.meter import Meter  # noqa: E402
from es_l2l.config import load_config  # noqa: E402
from es_l2l.cluster.evaluators import LocalEvaluator, RayEvaluator  # noqa: E402
from es_l2l.genome import build_genome  # noqa: E402
from es_l2l.outer.evo import MetaProblem, make_searcher  # noqa: E402
from es_l2l.seeds import STREAM_TRAIN  # noqa: E402
from es_l2l.families.teacher.tasks import n_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class EvotorchActorProblem(MetaProblem):
    """evotorch's actor mode on the same fitness: actors get copies of this problem (with a local
    evaluator) and their share of each SolutionBatch; the task seed is synced each generation."""

    def __getstate__(self):
        return dict(self.__dict__, last_eval=None)

    def seed(self, seed):
        # evotorch 0.6.1's EvaluationActor calls problem.seed(...) on a Problem made with seed=,
        # a method Problem does not have (it has manual_seed): without this, actor mode cannot start.
        self.manual_seed(seed)

    def _make_sync_data_for_actors(self):
        return self.seed_keys

    def _use_sync_data_from_main(self, received):
        self.seed_keys = received


def setup(mode: str, cfg, genome):
    """(problem, searcher, evaluator) for one mode, all started from the same centre and sampler seed."""
    if mode == "evotorch":
        evaluator = LocalEvaluator(cfg, genome)
        problem = EvotorchActorProblem(genome.dim, evaluator, seed=1, num_actors=cfg.run.workers,
                                       actor_config={"num_cpus": cfg.run.cpus_per_worker})
    else:
        c = cfg.model_copy(update={"es": cfg.es.model_copy(update={"traffic": mode})})
        evaluator = RayEvaluator(c, cfg.run.workers)
        problem = MetaProblem(genome.dim, evaluator, seed=1)
    return problem, make_searcher(cfg.es, problem, genome.initial_vector()), evaluator


def measure(modes, cfg, genome, generations: int, warmup: int, meter: Meter) -> list[dict]:
    """Step every mode's search one generation in turn (interleaved, so drifting machine load
    hits all modes alike); per mode, the medians over the generations after ``warmup``."""
    runs = {m: setup(m, cfg, genome) for m in modes}
    rows = {m: [] for m in modes}
    try:
        for gen in range(1, warmup + generations + 1):
            for mode, (problem, searcher, _) in runs.items():
                problem.start_generation((cfg.run.seed, STREAM_TRAIN, gen))
                meter.sent = meter.received = 0
                t0 = time.perf_counter()
                searcher.step()
                rows[mode].append({"generation": gen, "seconds": time.perf_counter() - t0,
                                   "bytes_to_workers": meter.sent, "bytes_from_workers": meter.received})
    finally:
        for mode, (problem, _, evaluator) in runs.items():
            evaluator.close()
            if mode == "evotorch":
                problem.kill_actors()
    out = []
    for mode, (_, searcher, _) in runs.items():
        measured = rows[mode][warmup:]
        out.append({
            "mode": mode,
            "center": searcher.status["center"].clone(),
            "median_seconds_per_generation": statistics.median(r["seconds"] for r in measured),
            "median_bytes_to_workers": statistics.median(r["bytes_to_workers"] for r in measured),
            "median_bytes_from_workers": statistics.median(r["bytes_from_workers"] for r in measured),
            "generations": rows[mode],
        })
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "teacher_es.yaml"))
    ap.add_argument("--generations", type=int, default=5, help="measured generations per mode")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured generations first (actor start-up)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="the smoke config (seconds)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "traffic.json"))
    args = ap.parse_args(argv)
    config = ROOT / "configs" / "smoke.yaml" if args.quick else Path(args.config)
    cfg = load_config(config, [f"run.workers={args.workers}"])
    genome = build_genome(cfg, n_inputs(cfg.task))
    # Logical CPUs for all three pools' actors; only one pool computes at a time.
    ray.init(num_cpus=3 * args.workers, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    meter = Meter()
    meter.install()
    try:
        results = measure(("seeds", "vectors", "evotorch"), cfg, genome, args.generations, args.warmup, meter)
    finally:
        meter.uninstall()
        ray.shutdown()
    for r in results:  # the same search, whatever carries it?
        r["same_centre_as_seeds"] = torch.equal(r["center"], results[0]["center"])
    same = all(r["same_centre_as_seeds"] for r in results)
    for r in results:
        r.pop("center")
    P, D = cfg.es.popsize, genome.dim
    report = {
        "benchmark": "traffic",
        "config": str(config.relative_to(ROOT) if config.is_relative_to(ROOT) else config),
        "popsize": P, "genome_dim": D, "workers": args.workers, "population_bytes_float32": P * D * 4,
        "same_centre_after_all_generations": same,
        "note": "evotorch's actor mode draws its actors' seeds from the problem's generator when it creates them "
                "(during generation 1), so its sample stream, and its centre, differ from generation 2 on",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "torch": torch.__version__, "ray": ray.__version__},
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "modes": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"P={P} D={D} workers={args.workers}; same centre as seeds: "
          + ", ".join(f"{r['mode']} {r['same_centre_as_seeds']}" for r in results))
    print(f"{'mode':<10}{'s/gen':>8}{'bytes to workers':>18}{'bytes back':>12}")
    for r in results:
        print(f"{r['mode']:<10}{r['median_seconds_per_generation']:>8.3f}{r['median_bytes_to_workers']:>18,.0f}"
              f"{r['median_bytes_from_workers']:>12,.0f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
