"""One ES generation at P = 256 on 1 and 2 Ray workers: wall time split into simulation, driver
and communication, with the bytes moved.

The project's own pieces: ``MetaProblem`` + ``make_searcher`` (evotorch PGPE, seed traffic) and
``RayEvaluator`` on a local Ray bound to 127.0.0.1. Per generation:

- wall: ``problem.start_generation`` + ``searcher.step()``;
- evaluation: from sending the work to having the results (send, wait, receive, concatenate);
  with seed traffic the work is sent inside ``step`` when evotorch asks for its generator, before
  it samples, so its sampling of the same population on the driver overlaps the workers';
- simulation: the seconds inside ``evaluate`` of the worker whose ``evaluate`` + regeneration took
  longest (the critical path; the sum over workers is recorded too);
- worker sampling: that worker's seconds regenerating its members from the seed recipe (seed
  traffic's price: the population is sampled again on each worker instead of being sent);
- driver: wall - evaluation (the driver's work not hidden behind the workers': ranking, the
  update, bookkeeping, and sampling where it is not overlapped);
- communication: evaluation - simulation - worker sampling (serialisation, object store,
  scheduling, waiting).

Bytes are counted by ``es_l2l.bench.meter.Meter`` (what ``benchmarks/traffic.py`` uses).
"""

from __future__ import annotations

import logging
import os
import time
import warnings

from es_l2l.bench.common import median
from es_l2l.bench.meter import Meter


def _timed_evaluator(base):
    class Timed(base):
        """Evaluation seconds: from sending the work (``submit``/``submit_recipe``; with seed
        traffic that happens before evotorch samples on the driver) to the results being back
        (``collect``)."""

        eval_seconds = 0.0
        _sent = None

        def submit(self, vectors, seed_keys):
            self._sent = time.perf_counter()
            return super().submit(vectors, seed_keys)

        def submit_recipe(self, recipe, seed_keys):
            self._sent = time.perf_counter()
            return super().submit_recipe(recipe, seed_keys)

        def collect(self, refs, expected=None):
            try:
                return super().collect(refs, expected)
            finally:
                self.eval_seconds += time.perf_counter() - self._sent

    return Timed


def run(quick: bool, workers=(1, 2), popsize: int = 256, generations: int = 3, warmup: int = 1, log=print) -> dict:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("evotorch").setLevel(logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from es_l2l.config import load_config
    from es_l2l.cluster.evaluators import RayEvaluator
    from es_l2l.genome import build_genome
    from es_l2l.outer.evo import MetaProblem, make_searcher
    from es_l2l.seeds import STREAM_TRAIN

    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    config = root / "configs" / "smoke.yaml" if quick else None  # None: the embedded defaults
    if quick:
        popsize, generations, warmup = 32, 1, 1
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address="local", num_cpus=max(workers), _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    meter = Meter()
    out = {"config": str(config.relative_to(root)) if config else "embedded defaults", "popsize": popsize, "generations_measured": generations,
           "warmup_generations": warmup, "traffic": "seeds", "runs": []}
    try:
        for n_workers in workers:
            log(f"  ES generation, P={popsize}, {n_workers} worker(s)")
            cfg = load_config(config, [f"es.popsize={popsize}", f"run.workers={n_workers}", "es.traffic=seeds"])
            genome = build_genome(cfg)
            evaluator = _timed_evaluator(RayEvaluator)(cfg, n_workers)
            problem = MetaProblem(genome.dim, evaluator, seed=1)
            searcher = make_searcher(cfg.es, problem, genome.initial_vector())
            rows = []
            try:
                meter.install()
                for gen in range(1, warmup + generations + 1):
                    meter.uninstall()
                    evaluator.busy_seconds()  # reset (not counted as traffic)
                    meter.install()
                    meter.sent = meter.received = 0
                    evaluator.eval_seconds = 0.0
                    t0 = time.perf_counter()
                    problem.start_generation((cfg.run.seed, STREAM_TRAIN, gen))
                    searcher.step()
                    wall = time.perf_counter() - t0
                    sent, received = meter.sent, meter.received
                    meter.uninstall()
                    busy = evaluator.busy_seconds()  # [(evaluate, regenerate)] per worker
                    meter.install()
                    sim, regen = max(busy, key=sum)
                    ev = evaluator.eval_seconds
                    rows.append({"generation": gen, "wall_s": wall, "evaluation_s": ev, "simulation_s": sim,
                                 "worker_sampling_s": regen,
                                 "simulation_sum_over_workers_s": sum(b[0] for b in busy), "driver_s": wall - ev,
                                 "communication_s": ev - sim - regen, "bytes_to_workers": sent, "bytes_from_workers": received,
                                 "neuron_steps": problem.last_eval.neuron_steps})
            finally:
                meter.uninstall()
                evaluator.close()
            measured = rows[warmup:]
            med = {k: median([r[k] for r in measured]) for k in measured[0] if k != "generation"}
            out["runs"].append({
                "workers": n_workers, "genome_dim": genome.dim,
                "neurons": cfg.model.n_lif + cfg.model.n_alif, "tasks_per_generation": cfg.task.batch_size,
                "median": med,
                "driver_plus_communication_share": (med["driver_s"] + med["communication_s"]) / med["wall_s"],
                "neuron_steps_per_s": med["neuron_steps"] / med["wall_s"],
                "generations": rows,
            })
    finally:
        if started_here:
            ray.shutdown()
    return out


def report(res: dict) -> str:
    from es_l2l.bench.common import table

    rows = []
    for r in res["runs"]:
        m = r["median"]
        rows.append([r["workers"], f"{m['wall_s']:.3f}", f"{m['simulation_s']:.3f}", f"{m['worker_sampling_s']:.3f}", f"{m['driver_s']:.3f}",
                     f"{m['communication_s']:.3f}", f"{r['driver_plus_communication_share']:.1%}",
                     f"{m['bytes_to_workers']:,.0f}", f"{m['bytes_from_workers']:,.0f}", f"{r['neuron_steps_per_s']:.3g}"])
    return (f"ES generation, {res['config']}, P={res['popsize']}, seed traffic (medians of {res['generations_measured']})\n"
            + table(rows, ["workers", "wall s", "sim s", "sampling s", "driver s", "comm s", "drv+comm", "bytes out", "bytes back",
                           "neuron-steps/s"]))
