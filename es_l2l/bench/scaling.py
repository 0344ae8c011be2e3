"""``es-l2l bench --only scaling``: what one ES generation and one BPTT step cost against workers, the
coordination cost of many actors, and the scaling model fitted to them (:mod:`es_l2l.bench.scaling_model`).

Four measurements, each with the load average beside it (the machine is shared):

- **ES generation split** at the shipped sizes (``benchmarks/scaling.yaml`` lists the configs and populations,
  P = 64 .. 1024) on W = 1 and 2 Ray workers, the two pools alive side by side and stepped in turn,
  generation by generation (the same generations, so the same numbers: the fitnesses are compared
  bit for bit). Per generation: the searcher's step (``wall``) split into evaluation (send to results
  back), the busiest worker's simulation and regeneration of the members, traffic (evaluation minus
  those two: seeds out, fitnesses back, Ray's scheduling), the driver (wall minus evaluation: ranking,
  update, bookkeeping; the driver's sampling runs while the workers evaluate and is timed on its own);
  then the driver's record (status dict and MLflow, on a SQLite store: tracking) and, per family, a
  validation of the centre (amortised over ``run.validate_every``).
- **BPTT step** (the configs in ``benchmarks/scaling.yaml``; on one process only where the family cannot
  split a batch) on one process at B and B/2 tasks (the per-task compute and the fixed part) and on
  two data-parallel replicas (compute and the gloo all-reduce), interleaved.
- **Coordination** with many actors and a trivial evaluation (a 4-neuron network on one 2-trial task):
  one pool of actors on a multi-node Ray cluster on 127.0.0.1 (:mod:`es_l2l.bench.loopback`; ``--quick``:
  the local Ray, one node), generations sent to W of them (spread over n nodes), the time that is not
  the busiest worker's compute fitted as ``a + b * W + c * n``.
- **The model** from the W = 1 constants and the coordination slope: predictions for W = 2 against the
  measurement, for W = 1 .. 1,000 across nodes under the stated network, and time to the target of
  each family from the recorded progress (docs/results) for ES and data-parallel BPTT.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from es_l2l.bench.common import median
from es_l2l.bench.es_gen import _timed_evaluator
from es_l2l.bench.scaling_model import (
    BANDWIDTH_BPS,
    LATENCY_S,
    BPTTConstants,
    ESConstants,
    crossover,
    fit_linear,
    ring_allreduce_s,
)

ROOT = Path(__file__).resolve().parents[2]

SPEC = ROOT / "benchmarks" / "scaling.yaml"  # the shipped sizes measured and the recorded progress to each target


def spec() -> dict:
    import yaml

    return yaml.safe_load(SPEC.read_text())


MODEL_WORKERS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)


def _load() -> float:
    return os.getloadavg()[0]


def _quiet() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("evotorch").setLevel(logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray runs its workers 15 nice levels below the raylet: on a shared machine the actors would then wait for
    # every other process while the driver does not; timed here at the driver's priority (a Ray started later)
    os.environ.setdefault("RAY_worker_niceness", "0")


def _start_ray(cpus: float) -> bool:
    import ray

    if ray.is_initialized():
        return False
    ray.init(address="local", num_cpus=cpus, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    return True


def _cpu(procs) -> list[float]:
    """User + system CPU seconds of each process so far (0 for one that is gone)."""
    out = []
    for p in procs:
        try:
            t = p.cpu_times()
            out.append(t.user + t.system)
        except Exception:  # noqa: BLE001  (psutil.Error: gone)
            out.append(0.0)
    return out


class _Timer:
    def __init__(self):
        self.s = 0.0

    def wrap(self, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.s += time.perf_counter() - t0
        return timed


class _Pool:
    """One W: evaluator, searcher, driver with an MLflow subscriber, stepped a generation at a time."""

    def __init__(self, cfg, genome, workers: int, store: Path):
        from es_l2l.cluster.evaluators import RayEvaluator
        from es_l2l.outer.driver import Driver
        from es_l2l.outer.evo import MetaProblem, initial_stdev, make_searcher
        from es_l2l.outer.shell import driver_services
        from es_l2l.seeds import STREAM_SEARCH, derive_seed
        from es_l2l.tracking.run import MlflowRun

        self.cfg, self.workers = cfg, workers
        self.evaluator = _timed_evaluator(RayEvaluator)(cfg, workers)
        self.problem = MetaProblem(genome.dim, self.evaluator, seed=derive_seed(cfg.run.seed, STREAM_SEARCH) % 2**31)
        self.searcher = make_searcher(cfg.es, self.problem, genome.initial_vector(), initial_stdev(cfg.es, genome))
        self.rank, self.update, self.tracking = _Timer(), _Timer(), _Timer()
        tcfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={
            "uri": f"sqlite:///{store / 'mlflow.db'}", "artifact_root": str(store / 'mlruns'), "experiment": "scaling-bench"})})
        self.tracker = MlflowRun(tcfg, run_name=f"{cfg.name}-P{cfg.es.popsize}-W{workers}", log_config=False)
        v = genome.initial_vector()
        resume = {"initial": v, "status0": {"generation": 0}, "best": v, "best_generation": 0, "best_val": 0.0,
                  "generation": 0, "neuron_steps": 0}  # no validation at generation 0: timed on its own
        validate, extras, objective = driver_services(cfg, genome)
        self.driver = Driver(cfg.run, validate, extras, objective, v, [self.tracking.wrap(self.tracker)], resume=resume)
        import psutil

        self.procs = [psutil.Process(pid) for pid in self.evaluator.pids()]  # the actors (the same machine)

    def generation(self, gen: int) -> dict:
        from es_l2l.outer.evo import center_of, time_update_and_ranking
        from es_l2l.seeds import STREAM_TRAIN

        ev, pr, s = self.evaluator, self.problem, self.searcher
        self.rank.s = self.update.s = self.tracking.s = 0.0
        time_update_and_ranking(s, self.update.wrap, self.rank.wrap)  # this generation's distribution
        ev.busy_seconds()  # reset
        ev.eval_seconds = 0.0
        load = _load()
        cpu0, drv0 = _cpu(self.procs), time.process_time()
        t0 = time.perf_counter()
        pr.start_generation((self.cfg.run.seed, STREAM_TRAIN, gen))
        s.step()
        wall = time.perf_counter() - t0
        drv, cpu = time.process_time() - drv0, [b - a for a, b in zip(cpu0, _cpu(self.procs))]
        e = pr.last_eval
        t1 = time.perf_counter()
        self.driver.record(gen, wall, e.neuron_steps, {"fitness_mean": float(e.fitness.mean()), "fitness_best": float(e.fitness.max()),
                                                       "fitness_std": float(e.fitness.std()), **e.summary()}, lambda: center_of(s))
        record = time.perf_counter() - t1
        busy = ev.busy_seconds()
        sim, regen = max(busy, key=sum)
        sample = max(pr.handed_over - ev._sent, 0.0)
        return {"generation": gen, "load_1min": load, "wall_s": wall, "evaluation_s": ev.eval_seconds, "simulation_s": sim,
                "regen_s": regen, "traffic_s": ev.eval_seconds - sim - regen, "driver_s": wall - ev.eval_seconds,
                "sample_s": sample, "rank_s": self.rank.s, "update_s": self.update.s, "record_s": record,
                "tracking_s": self.tracking.s, "fitness": e.fitness.clone(),
                # CPU seconds (what a busy machine does not distort the way it distorts wall time): the driver
                # process (its Ray threads included) and the busiest actor, during the step
                "driver_cpu_s": drv, "worker_cpu_max_s": max(cpu), "worker_cpu_sum_s": sum(cpu),
                "cpu_critical_s": drv + max(cpu)}

    def close(self) -> None:
        self.evaluator.close()
        with contextlib.suppress(Exception):  # a scratch store
            self.tracker.client.set_terminated(self.tracker.run_id)


def es_split(family: str, config: Path | None, pops, workers, repeats: int, warmup: int, overrides=(), log=print,
             cpus_per_worker: float = 1.0) -> dict:
    """One family's ES generation split at each P, the W pools stepped in turn (medians over ``repeats``)."""
    from es_l2l.bench.meter import Meter
    from es_l2l.config import load_config
    from es_l2l.genome import build_genome
    from es_l2l.outer.shell import validation_metrics

    out = {"family": family, "config": str(config.relative_to(ROOT)) if config else None, "overrides": list(overrides), "cells": []}
    store = Path(tempfile.mkdtemp(prefix="esl2l-scaling-"))
    base = load_config(config, [*overrides, "es.traffic=seeds", f"run.cpus_per_worker={cpus_per_worker}"])
    genome = build_genome(base)
    # validation of the centre: the same at every P and W (run.validation_tasks, every run.validate_every generations)
    val = []
    for _ in range(max(1, min(repeats, 3))):
        load = _load()
        t0 = time.perf_counter()
        validation_metrics(base, genome, genome.initial_vector())
        val.append((time.perf_counter() - t0, load))
    out["validation"] = {"tasks": base.run.validation_tasks, "validate_every": base.run.validate_every,
                         "seconds_median": median([v for v, _ in val]), "load_1min": [l for _, l in val]}
    log(f"  {family}: validation of {base.run.validation_tasks} tasks {out['validation']['seconds_median']:.3f} s "
        f"(every {base.run.validate_every} generations)")
    meter = Meter()
    for p in pops:
        cfg = load_config(config, [*overrides, "es.traffic=seeds", f"run.cpus_per_worker={cpus_per_worker}", f"es.popsize={p}"])
        pools = {}
        try:
            for w in workers:
                pools[w] = _Pool(cfg.model_copy(update={"run": cfg.run.model_copy(update={"workers": w})}), genome, w, store)
                pools[w].evaluator.pids()  # started
            rows = {w: [] for w in workers}
            sizes = {}
            identical = True
            for gen in range(1, warmup + repeats + 1):
                fits = []
                for w in workers:
                    if gen == 1:  # bytes counted in the warm-up generation (counting pickles everything again)
                        meter.sent = meter.received = 0
                        meter.install()
                    try:
                        r = pools[w].generation(gen)
                    finally:
                        if gen == 1:
                            meter.uninstall()
                            sizes[w] = (meter.sent, meter.received)
                    r["bytes_out"], r["bytes_back"] = sizes[w]
                    fits.append(r.pop("fitness"))
                    if gen > warmup:
                        rows[w].append(r)
                identical &= all(torch.equal(fits[0], f) for f in fits[1:])
        finally:
            for pool in pools.values():
                pool.close()
        cell = {"popsize": p, "genome_dim": genome.dim, "fitness_identical_across_workers": identical, "runs": []}
        for w in workers:
            med = {k: median([r[k] for r in rows[w]]) for k in rows[w][0] if k != "generation"}
            med["generation_s"] = med["wall_s"] + med["record_s"] + out["validation"]["seconds_median"] / base.run.validate_every
            cell["runs"].append({"workers": w, "median": med, "generations": rows[w]})
        one, two = cell["runs"][0]["median"], cell["runs"][-1]["median"]
        nw = cell["runs"][-1]["workers"]
        cell["parallel_efficiency_step"] = one["wall_s"] / (nw * two["wall_s"])
        cell["parallel_efficiency_generation"] = one["generation_s"] / (nw * two["generation_s"])
        cell["parallel_efficiency_simulation"] = one["simulation_s"] / (nw * two["simulation_s"])
        # on CPU seconds: driver + busiest worker, as if each process had a core of its own (pessimistic: no overlap)
        cell["parallel_efficiency_cpu"] = one["cpu_critical_s"] / (nw * two["cpu_critical_s"])
        cell["extra_cpu_share"] = (two["driver_cpu_s"] + two["worker_cpu_sum_s"]) / (one["driver_cpu_s"] + one["worker_cpu_sum_s"]) - 1
        log(f"  {family} P={p}: " + ", ".join(f"W={r['workers']} {r['median']['wall_s']:.3f} s" for r in cell["runs"])
            + f"; efficiency {cell['parallel_efficiency_step']:.1%}, on CPU seconds {cell['parallel_efficiency_cpu']:.1%} "
            f"(load {one['load_1min']:.1f})")
        out["cells"].append(cell)
    return out


def bptt_split(config: Path, overrides=(), steps: int = 8, warmup: int = 2, data_parallel: bool = True, log=print) -> dict:
    """One BPTT step on one process at B and B/2 tasks, and (``data_parallel``) on two replicas, interleaved."""
    from es_l2l.config import load_config
    from es_l2l.genome import build_genome
    from es_l2l.outer.shell import gradient_trainer
    from es_l2l.outer.data_parallel import make_data_parallel
    from es_l2l.seeds import STREAM_TRAIN

    cfg = load_config(config, ["run.threads=1", *overrides])
    batch = cfg.bptt.batch_size or cfg.task.batch_size
    half = load_config(config, ["run.threads=1", *overrides, f"bptt.batch_size={batch // 2}"])
    genome = build_genome(cfg)
    one = gradient_trainer(cfg, genome)
    onehalf = gradient_trainer(half, genome)
    two = make_data_parallel(load_config(config, ["run.threads=1", *overrides, "bptt.workers=2"]), genome) if data_parallel else None
    rows = []
    total = warmup + steps
    try:
        for step in range(1, total + 1):
            keys = (cfg.run.seed, STREAM_TRAIN, step)
            r = {"step": step, "load_1min": _load()}
            c0, t0 = time.process_time(), time.perf_counter()
            one.step(keys, total)
            r["w1_s"], r["w1_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
            c0, t0 = time.process_time(), time.perf_counter()
            onehalf.step(keys, total)
            r["w1_half_batch_s"], r["w1_half_batch_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
            if two is not None:
                t0 = time.perf_counter()
                m = two.step(keys, total)
                r["w2_s"] = time.perf_counter() - t0
                r["w2_allreduce_s"] = m["allreduce_s"]
                r["w2_rest_s"] = r["w2_s"] - m["allreduce_s"]
            if step > warmup:
                rows.append(r)
    finally:
        if two is not None:
            two.close()
    med = {k: median([r[k] for r in rows]) for k in rows[0] if k != "step"}
    per_task = (med["w1_s"] - med["w1_half_batch_s"]) / (batch - batch // 2)
    per_task_cpu = (med["w1_cpu_s"] - med["w1_half_batch_cpu_s"]) / (batch - batch // 2)
    out = {"config": str(config.relative_to(ROOT)), "overrides": list(overrides), "tasks_per_step": batch,
           "gradient_floats": int(sum(p.numel() for p in one.leaves.values())), "median": med,
           "compute_per_task_s": per_task, "fixed_s": med["w1_s"] - per_task * batch,
           "compute_per_task_cpu_s": per_task_cpu, "fixed_cpu_s": med["w1_cpu_s"] - per_task_cpu * batch, "steps": rows}
    if two is not None:
        out["speedup_w2"] = med["w1_s"] / med["w2_s"]
        out["parallel_efficiency"] = med["w1_s"] / (2 * med["w2_s"])
    log(f"  BPTT {config.name}: W=1 {med['w1_s']:.3f} s (B/2: {med['w1_half_batch_s']:.3f} s)"
        + (f", W=2 {med['w2_s']:.3f} s (all-reduce {med['w2_allreduce_s']:.4f} s)" if two is not None else ""))
    return out


# ----- coordination: many actors, trivial evaluation -----

TRIVIAL = ["model.n_lif=2", "model.n_alif=2", "task.n_trials=2", "task.trial_ms=2", "task.readout_ms=1", "task.batch_size=1",
           "es.traffic=seeds", "run.threads=1"]


def coordination(cells: list[tuple[int, int]], actors: int, cpus_per_worker: float, popsize: int, repeats: int,
                 by_ray_node: bool = False, log=print) -> dict:
    """Generations of a trivial evaluation sent to W of a pool of ``actors``, on n nodes, for each (W, n) of ``cells``,
    round-robin over the cells ``repeats`` times. ``by_ray_node``: the actors are grouped by the Ray node each
    runs on (its node id); otherwise they count as one node."""
    from es_l2l.config import load_config
    from es_l2l.cluster.evaluators import RayEvaluator
    from es_l2l.genome import build_genome
    from es_l2l.outer.evo import MetaProblem, make_searcher
    from es_l2l.seeds import STREAM_TRAIN

    cfg = load_config(None, [*TRIVIAL, f"es.popsize={popsize}", f"run.cpus_per_worker={cpus_per_worker}", f"run.workers={actors}"])
    genome = build_genome(cfg)
    t0 = time.perf_counter()
    ev = _timed_evaluator(RayEvaluator)(cfg, actors)
    pids = ev.pids()
    start_s = time.perf_counter() - t0
    if by_ray_node:
        ids = ev.node_ids()
        first = list(dict.fromkeys(ids))  # node index: order of first appearance
        nodes = [first.index(i) for i in ids]
    else:
        nodes = [0] * len(pids)
    pool = list(ev.actors)
    by_node: dict[int, list] = {}
    for a, n in zip(pool, nodes):
        by_node.setdefault(n, []).append(a)
    order = sorted(by_node)
    problem = MetaProblem(genome.dim, ev, seed=1)
    searcher = make_searcher(cfg.es, problem, genome.initial_vector())
    rows = {c: [] for c in cells}
    gen = 0
    try:
        for rep in range(repeats + 1):  # the first round warms up
            for w, n in cells:
                if n > len(order) or w > sum(len(by_node[k]) for k in order[:n]):
                    continue
                chosen = []
                i = 0
                while len(chosen) < w:  # round-robin over the first n nodes
                    lst = by_node[order[i % n]]
                    k = i // n
                    if k < len(lst):
                        chosen.append(lst[k])
                    i += 1
                ev.actors, ev.target = chosen, w
                ev.busy_seconds()
                ev.eval_seconds = 0.0
                gen += 1
                load = _load()
                drv0 = time.process_time()
                t0 = time.perf_counter()
                problem.start_generation((cfg.run.seed, STREAM_TRAIN, gen))
                searcher.step()
                wall = time.perf_counter() - t0
                drv = time.process_time() - drv0
                busy = ev.busy_seconds()
                sim, regen = max(busy, key=sum)
                if rep:
                    rows[(w, n)].append({"load_1min": load, "wall_s": wall, "evaluation_s": ev.eval_seconds, "busiest_compute_s": sim + regen,
                                         "coordination_s": ev.eval_seconds - sim - regen, "driver_cpu_s": drv})
    finally:
        ev.actors, ev.target = pool, actors
        ev.close()
    out = {"actors": actors, "nodes": len(order), "popsize": popsize, "genome_dim": genome.dim, "pool_start_s": start_s,
           "actors_per_node": {str(k): len(v) for k, v in by_node.items()}, "cells": []}
    for (w, n), rs in rows.items():
        if rs:
            out["cells"].append({"workers": w, "nodes": n, **{k: median([r[k] for r in rs]) for k in rs[0]}, "repeats": len(rs)})
    xs = [[c["workers"], c["nodes"]] if out["nodes"] > 1 else [c["workers"]] for c in out["cells"]]
    coef = fit_linear(xs, [c["coordination_s"] for c in out["cells"]])
    out["fit"] = {"a_s": coef[0], "b_per_actor_s": coef[1], "c_per_node_s": coef[2] if len(coef) > 2 else None,
                  "form": "coordination_s = a + b * W" + (" + c * nodes" if len(coef) > 2 else "")}
    for c in out["cells"]:
        c["fit_s"] = coef[0] + coef[1] * c["workers"] + (coef[2] * c["nodes"] if len(coef) > 2 else 0.0)
    cpu = fit_linear(xs, [c["driver_cpu_s"] for c in out["cells"]])  # the driver's CPU seconds a generation
    out["fit_driver_cpu"] = {"a_s": cpu[0], "b_per_actor_s": cpu[1], "c_per_node_s": cpu[2] if len(cpu) > 2 else None}
    log(f"  coordination, {actors} actors on {len(order)} node(s): a = {coef[0] * 1e3:.2f} ms, b = {coef[1] * 1e3:.3f} ms/actor"
        + (f", c = {coef[2] * 1e3:.2f} ms/node" if len(coef) > 2 else ""))
    return out


def coordination_cluster(nodes: int = 2, cpus: int = 16, actors: int = 32, popsize: int = 64, repeats: int = 5, log=print) -> dict:
    """:func:`coordination` on a loopback cluster (a head without CPUs and ``nodes`` worker nodes of ``cpus``),
    driven from a child process attached to it (this process may hold a local Ray)."""
    from es_l2l.bench.loopback import LoopbackCluster

    cluster = LoopbackCluster()
    try:
        t0 = time.perf_counter()
        cluster.start_head()
        names = [f"n{i}" for i in range(nodes)]
        cluster.add_nodes(*names, cpus=cpus)
        started = time.perf_counter() - t0
        log(f"  loopback cluster: head + {nodes} nodes of {cpus} CPUs in {started:.0f} s")
        per = actors // nodes
        cells = [(w, n) for n in sorted({1, 2, nodes}) for w in (1, 2, 4, 8, 16, 32) if n <= w <= per * n]
        cells = sorted(set(cells), key=lambda c: (c[1], c[0]))
        args = json.dumps({"cells": cells, "actors": actors, "cpus_per_worker": nodes * cpus / actors, "popsize": popsize,
                           "repeats": repeats})
        env = {**cluster.env, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, "-m", "es_l2l.bench.scaling", "coordination", cluster.address, args],
                              env=env, capture_output=True, text=True, timeout=1800, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"the coordination run on the loopback cluster failed:\n{proc.stderr[-3000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["cluster_start_s"] = started
        res["cluster"] = f"loopback: head (0 CPUs) + {nodes} worker nodes of {cpus} logical CPUs, every address 127.0.0.1"
        f = res["fit"]
        log(f"  coordination, {actors} actors on {res['nodes']} nodes: a = {f['a_s'] * 1e3:.2f} ms, "
            f"b = {f['b_per_actor_s'] * 1e3:.3f} ms/actor, c = {(f['c_per_node_s'] or 0) * 1e3:.2f} ms/node")
        return res
    finally:
        cluster.stop()


def _child_coordination(address: str, args: dict) -> None:
    """The child process of :func:`coordination_cluster`: attach, measure, print one JSON line."""
    import ray

    _quiet()
    torch.set_num_threads(1)
    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    res = coordination([tuple(c) for c in args["cells"]], args["actors"], args["cpus_per_worker"], args["popsize"],
                       args["repeats"], by_ray_node=True, log=lambda s: print(s, file=sys.stderr))
    ray.shutdown()
    print(json.dumps(res))


# ----- the model -----

def worker_line(fam: dict, cpu: bool = False) -> dict[int, tuple[float, float]]:
    """Per P: a worker's (fixed, per-member) seconds at W = 1, from a line through the family's W = 1 cells
    (worker time = fixed + per_member * P); with one P, the fixed part is the regeneration alone. ``cpu``: on the
    busiest actor's CPU seconds (regeneration scaled to CPU by the actor's CPU share of its wall time)."""
    pts = []
    for cell in fam["cells"]:
        one = next(r for r in cell["runs"] if r["workers"] == 1)["median"]
        if cpu:
            share = one["worker_cpu_max_s"] / max(one["simulation_s"] + one["regen_s"], 1e-12)
            pts.append((cell["popsize"], one["worker_cpu_max_s"], one["regen_s"] * share))
        else:
            pts.append((cell["popsize"], one["simulation_s"] + one["regen_s"], one["regen_s"]))
    if len(pts) > 1:
        fixed, per = fit_linear([[p] for p, _, _ in pts], [t for _, t, _ in pts])
        if fixed >= 0 and per > 0:
            return {p: (fixed, per) for p, _, _ in pts}
    return {p: (regen, (t - regen) / p) for p, t, regen in pts}


def model(res: dict) -> dict:
    """Constants, the W = 2 validation, predictions to W = 1,000 and the time-to-target table."""
    coord = res["coordination"]["fit"]
    # the per-actor cost: the driver's CPU seconds per actor (its serial work: submitting, waiting, receiving); the
    # wall-time slope on one loaded machine adds the actors' wait for a core, which a cluster does not have
    cpu_fit = res["coordination"].get("fit_driver_cpu")
    b = max((cpu_fit or coord)["b_per_actor_s"], 0.0)
    out = {"network": {"latency_s": LATENCY_S, "bandwidth_bytes_per_s": BANDWIDTH_BPS,
                       "assumed": "in-datacenter: 0.1 ms one way, 10 Gb/s; the driver's link carries every worker's "
                                  "recipe; Ray's per-actor cost b: the driver's CPU seconds per actor, measured"},
           "per_actor_s": b,
           "es": [], "bptt": [], "time_to_target": []}
    for fam in res["es"]:
        line, line_cpu = worker_line(fam), (worker_line(fam, cpu=True) if "worker_cpu_max_s" in fam["cells"][0]["runs"][0]["median"] else None)
        for cell in fam["cells"]:
            one = next(r for r in cell["runs"] if r["workers"] == 1)["median"]
            fixed, per = line[cell["popsize"]]
            k = ESConstants(popsize=cell["popsize"], driver_s=one["driver_s"], validation_s=fam["validation"]["seconds_median"],
                            validate_every=fam["validation"]["validate_every"], tracking_s=one["record_s"], worker_fixed_s=fixed,
                            sim_per_member_s=per, traffic_s=one["traffic_s"], coord_per_actor_s=b,
                            bytes_out=one["bytes_out"], bytes_back=one["bytes_back"])
            two = next((r for r in cell["runs"] if r["workers"] == 2), None)
            row = {"family": fam["family"], "popsize": cell["popsize"], "constants": k.as_dict(),
                   "predicted": {str(w): k.generation_s(w, network=True) for w in MODEL_WORKERS},
                   "serial_share_s": k.serial_s() + k.worker_fixed_s + k.traffic_s}
            if two is not None:
                measured = two["median"]["generation_s"]
                pred = k.generation_s(2)
                row["validation_w2"] = {"predicted_s": pred, "measured_s": measured, "error": pred / measured - 1,
                                        "predicted_step_s": k.step_s(2), "measured_step_s": two["median"]["wall_s"],
                                        "step_error": k.step_s(2) / two["median"]["wall_s"] - 1}
            if two is not None and line_cpu is not None:
                # the same formula on CPU seconds (driver process + busiest actor): the machine's load out of it
                cf, cp = line_cpu[cell["popsize"]]
                kc = ESConstants(popsize=k.popsize, driver_s=one["driver_cpu_s"], validation_s=0.0, validate_every=1, tracking_s=0.0,
                                 worker_fixed_s=cf, sim_per_member_s=cp, traffic_s=0.0,
                                 coord_per_actor_s=b,
                                 bytes_out=k.bytes_out, bytes_back=k.bytes_back)
                row["constants_cpu"] = kc.as_dict()
                # validation and the MLflow record were timed in wall seconds: scaled by the actors' CPU share of
                # their wall time at W = 1 (the machine's load on our processes)
                share = one["worker_cpu_max_s"] / max(one["simulation_s"] + one["regen_s"], 1e-12)
                extra = share * (k.validation_s / k.validate_every + k.tracking_s)
                row["serial_extra_cpu_s"] = extra
                row["predicted_cpu"] = {str(w): kc.generation_s(w, network=True) + extra for w in MODEL_WORKERS}
                row["speedup_cap_cpu"] = (kc.generation_s(1) + extra) / (kc.generation_s(k.popsize) + extra)
                row["validation_w2_cpu"] = {"predicted_s": kc.generation_s(2), "measured_s": two["median"]["cpu_critical_s"],
                                            "error": kc.generation_s(2) / two["median"]["cpu_critical_s"] - 1,
                                            "efficiency_predicted": kc.generation_s(1) / (2 * kc.generation_s(2)),
                                            "efficiency_measured": cell.get("parallel_efficiency_cpu")}
            # beyond W = P a worker has at most one member: the curve is flat
            row["speedup_cap"] = k.generation_s(1) / k.generation_s(k.popsize)
            out["es"].append(row)
    for fam in res["bptt"]:
        k = BPTTConstants(batch=fam["tasks_per_step"], gradient_floats=fam["gradient_floats"],
                          compute_per_task_s=fam["compute_per_task_s"], fixed_s=fam["fixed_s"],
                          coord_base_s=max((cpu_fit or coord)["a_s"], 0.0), coord_per_actor_s=b)
        row = {"config": fam["config"], "constants": k.as_dict(),
               "predicted": {str(w): k.step_s(w, network=True) for w in MODEL_WORKERS if w <= k.batch}}
        if "compute_per_task_cpu_s" in fam:
            kc = BPTTConstants(batch=k.batch, gradient_floats=k.gradient_floats, compute_per_task_s=fam["compute_per_task_cpu_s"],
                               fixed_s=fam["fixed_cpu_s"], coord_base_s=k.coord_base_s, coord_per_actor_s=b)
            row["constants_cpu"] = kc.as_dict()
            row["predicted_cpu"] = {str(w): kc.step_s(w, network=True) for w in MODEL_WORKERS if w <= k.batch}
        if "w2_s" in fam["median"]:
            row["validation_w2"] = {"predicted_s": k.step_s(2), "measured_s": fam["median"]["w2_s"],
                                    "error": k.step_s(2) / fam["median"]["w2_s"] - 1}
        row["allreduce_1000_s"] = ring_allreduce_s(1000, k.gradient_floats)
        out["bptt"].append(row)
    for prog in spec()["progress"]:
        name = prog["name"]
        es = next((r for r in out["es"] if r["family"] == name and r["popsize"] == prog["es_popsize"]), None)
        bp = next((r for r in out["bptt"] if Path(r["config"]).name == Path(prog["bptt_config"]).name), None)
        if es is None or bp is None:
            continue
        ek, bk = ESConstants(**es["constants"]), BPTTConstants(**bp.get("constants_cpu", bp["constants"]))
        ws = list(MODEL_WORKERS)
        if "predicted_cpu" in es:  # the CPU-seconds constants: a machine without other load
            extra = es["serial_extra_cpu_s"]
            ek = ESConstants(**es["constants_cpu"])
            es_t = {w: prog["es_generations"] * (ek.generation_s(w, network=w > 2) + extra) for w in ws}
        else:
            es_t = {w: prog["es_generations"] * ek.generation_s(w, network=w > 2) for w in ws}
        bp_t = {w: prog["bptt_steps"] * bk.step_s(min(w, bk.batch), network=w > 2) for w in ws}
        out["time_to_target"].append({
            "family": name, "target": prog["target"], "source": prog["source"], "es_generations": prog["es_generations"],
            "es_popsize": prog["es_popsize"], "bptt_steps": prog["bptt_steps"], "bptt_tasks_per_step": bk.batch,
            "bptt_data_parallel_supported": prog["bptt_data_parallel"],
            "es_s": {str(w): v for w, v in es_t.items()}, "bptt_s": {str(w): v for w, v in bp_t.items()},
            "es_at_or_below_bptt_from_w": crossover(es_t, bp_t),
            "constants": "CPU seconds" if "predicted_cpu" in es else "wall seconds",
            "es_cap": f"flat beyond W = P = {ek.popsize} (at most one member a worker); serial share "
                      f"{ek.serial_s() + ek.worker_fixed_s + ek.traffic_s:.4f} s a generation",
            "bptt_cap": f"flat beyond W = B = {bk.batch} tasks a step; fixed part {bk.fixed_s:.4f} s a step",
        })
    return out


def run(quick: bool, log=print, workers=(1, 2), pops=None, cluster: bool | None = None) -> dict:
    _quiet()
    import ray

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the driver on one thread, as run.threads=1
    need = sum(workers)
    started = _start_ray(need)
    have = float(ray.cluster_resources().get("CPU", 0.0))
    cpw = min(1.0, have / need)
    out = {"quick": quick, "load_1min_start": _load(), "es": [], "bptt": []}
    try:
        sp = spec()
        if quick:
            tiny = ["model.n_lif=4", "model.n_alif=4", "task.n_trials=4", "task.trial_ms=4", "task.readout_ms=2",
                    "task.batch_size=2", "run.validation_tasks=4", "run.validate_every=5"]
            q = sp["quick"]
            out["es"].append(es_split(q["es"]["name"], ROOT / q["es"]["config"], pops or (8,), workers, 2, 1, tiny, log, cpw))
            out["bptt"].append(bptt_split(ROOT / q["bptt"], ["model.n_lif=4", "model.n_alif=4", "task.n_trials=4", "task.trial_ms=4",
                                                         "task.readout_ms=2", "bptt.batch_size=4"], steps=2, warmup=1, log=log))
            out["coordination"] = coordination([(1, 1), (2, 1), (4, 1)], 4, min(0.5, have / 4), 8, 2, log=log)
        else:
            for e in sp["es"]:
                out["es"].append(es_split(e["name"], ROOT / e["config"], pops or tuple(e["popsizes"]), workers, 5, 1, (), log, cpw))
            for b in sp["bptt"]:
                out["bptt"].append(bptt_split(ROOT / b["config"], data_parallel=b["data_parallel"], log=log))
            if started:
                ray.shutdown()
                started = False
            note = None
            if cluster is not False:
                try:
                    out["coordination"] = coordination_cluster(log=log)
                except RuntimeError as exc:  # a raylet misses Ray's 30 s registration deadline on a loaded machine
                    note = f"the loopback multi-node cluster did not start ({str(exc).splitlines()[0]}); measured on one node"
                    log(f"  {note}")
            if "coordination" not in out:
                _start_ray(2)
                started = True
                have = float(ray.cluster_resources().get("CPU", 0.0))
                out["coordination"] = coordination([(w, 1) for w in (1, 2, 4, 8, 16, 32)], 32, have / 32, 64, 5, log=log)
                out["coordination"]["note"] = note or "one node (the local Ray)"
    finally:
        if started:
            ray.shutdown()
        torch.set_num_threads(threads)
    out["load_1min_end"] = _load()
    out["model"] = model(out)
    return out


def report(res: dict) -> str:
    from es_l2l.bench.common import table

    lines = []
    rows = []
    for fam in res["es"]:
        for cell in fam["cells"]:
            for r in cell["runs"]:
                m = r["median"]
                rows.append([fam["family"], cell["popsize"], r["workers"], f"{m['generation_s']:.4f}", f"{m['wall_s']:.4f}",
                             f"{m['simulation_s']:.4f}", f"{m['regen_s']:.4f}", f"{m['traffic_s']:.4f}", f"{m['driver_s']:.4f}",
                             f"{m['sample_s']:.4f}", f"{m['rank_s'] + m['update_s']:.4f}", f"{m['record_s']:.4f}",
                             f"{fam['validation']['seconds_median'] / fam['validation']['validate_every']:.4f}", f"{m['load_1min']:.1f}"])
            rows.append(["", "", "eff.", f"{cell['parallel_efficiency_generation']:.1%}", f"{cell['parallel_efficiency_step']:.1%}",
                         f"{cell['parallel_efficiency_simulation']:.1%}", "", "", "", "", "", "", "",
                         "same" if cell["fitness_identical_across_workers"] else "DIFFER"])
    lines.append("ES generation (medians, seconds): generation = step + record + validation/validate_every")
    lines.append(table(rows, ["family", "P", "W", "generation", "step", "sim", "regen", "traffic", "driver", "sample*",
                              "rank+upd", "record", "valid.", "load"]))
    lines.append("  * the driver samples while the workers evaluate (inside 'sim'); eff. = T1 / (W * TW)")
    for b in res["bptt"]:
        m = b["median"]
        lines.append(f"BPTT step {b['config']} ({b['tasks_per_step']} tasks): W=1 {m['w1_s']:.4f} s; per task "
                     f"{b['compute_per_task_s']:.5f} s, fixed {b['fixed_s']:.4f} s"
                     + (f"; W=2 {m['w2_s']:.4f} s = rest {m['w2_rest_s']:.4f} + all-reduce {m['w2_allreduce_s']:.5f} "
                        f"(efficiency {b['parallel_efficiency']:.1%})" if "w2_s" in m else "; data-parallel: not supported, modelled"))
    c = res["coordination"]
    lines.append(f"Coordination ({c['actors']} actors, {c['nodes']} node(s), trivial evaluation): "
                 + ", ".join(f"W={x['workers']}/n={x['nodes']} {x['coordination_s'] * 1e3:.2f} ms" for x in c["cells"]))
    f = c["fit"]
    lines.append(f"  fit {f['form']}: a = {f['a_s'] * 1e3:.3f} ms, b = {f['b_per_actor_s'] * 1e3:.4f} ms"
                 + (f", c = {f['c_per_node_s'] * 1e3:.3f} ms" if f["c_per_node_s"] is not None else ""))
    mod = res["model"]
    lines.append(f"Model (network beyond this machine: {mod['network']['assumed']})")
    for r in mod["es"]:
        v = r.get("validation_w2")
        pred = r.get("predicted_cpu", r["predicted"])
        lines.append(f"  ES {r['family']} P={r['popsize']}" + (" (CPU seconds)" if "predicted_cpu" in r else "") + ": "
                     + ", ".join(f"W={w} {pred[str(w)]:.3f}" for w in (1, 2, 16, 64, 256, 1000))
                     + (f" s; W=2 predicted {v['predicted_s']:.4f} vs measured {v['measured_s']:.4f} ({v['error']:+.1%})" if v else ""))
    for r in mod["bptt"]:
        v = r.get("validation_w2")
        lines.append(f"  BPTT {r['config']}" + (" (CPU seconds)" if "predicted_cpu" in r else "") + ": "
                     + ", ".join(f"W={w} {s:.4f}" for w, s in r.get("predicted_cpu", r["predicted"]).items())
                     + (f" s; W=2 predicted {v['predicted_s']:.4f} vs measured {v['measured_s']:.4f} ({v['error']:+.1%})" if v else ""))
    for r in mod["es"]:
        if "validation_w2_cpu" in r:
            v = r["validation_w2_cpu"]
            lines.append(f"  ES {r['family']} P={r['popsize']}, CPU seconds: W=2 predicted {v['predicted_s']:.4f} vs measured "
                         f"{v['measured_s']:.4f} ({v['error']:+.1%})")
    for t in mod["time_to_target"]:
        lines.append(f"  time to {t['target']} ({t['family']}): " + ", ".join(
            f"W={w} ES {t['es_s'][str(w)]:.0f} s / BPTT {t['bptt_s'][str(w)]:.0f} s" for w in (1, 2, 16, 64, 256, 1000))
            + f"; ES at or below BPTT from W = {t['es_at_or_below_bptt_from_w']}")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "coordination":
        _child_coordination(sys.argv[2], json.loads(sys.argv[3]))
    else:
        sys.exit("usage: python -m es_l2l.bench.scaling coordination ADDRESS JSON (run by es-l2l bench --only scaling)")
