"""Seconds of one guided-ES generation against one plain ES generation plus one BPTT step, at the
sizes of the shipped configs listed in ``benchmarks/guided.yaml`` (the default family's), measured
side by side in one run.

Guided ES (:mod:`es_l2l.outer.guided`) costs one ES generation of the same population plus one
surrogate gradient, so "guided / (ES + BPTT)" near 1 says that the subspace, the seeded directions
and the estimate add little beyond the two parts it is made of. Each round runs the three in turn
(interleaved, so all meet the same machine load), in the driver (``run.workers=0``) on the
configured threads, from the configs the file lists:

- plain ES: the ``es`` config's PGPE generation (as shipped: P = 64, 16 tasks), ``MetaProblem`` +
  ``make_searcher`` with the evaluation in this process;
- BPTT: the ``bptt`` config's Adam step (as shipped: 64 tasks, fused C backward);
- guided: the ``guided`` config's generation (as shipped: P = 64, 16 tasks, the surrogate on the
  generation's 16 tasks), the loop's own step (:class:`es_l2l.outer.guided.GuidedRun`); its
  surrogate's share is recorded too. A second guided cell takes its surrogate on BPTT's batch.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from es_l2l.bench.common import median, table

ROOT = Path(__file__).resolve().parents[2]


def listed() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "benchmarks" / "guided.yaml").read_text())


def run(quick: bool, rounds: int | None = None, log=print) -> dict:
    from es_l2l.config import load_config
    from es_l2l.cluster.evaluators import LocalEvaluator
    from es_l2l.genome import build_genome
    from es_l2l.context import RunContext
    from es_l2l.outer import OUTER_LOOPS
    from es_l2l.outer.shell import gradient_trainer, inputs_of
    from es_l2l.outer.evo import MetaProblem, make_searcher
    from es_l2l.seeds import STREAM_TRAIN

    rounds = rounds or (2 if quick else 8)
    spec = listed()
    configs = spec["configs"]
    sets = ["run.workers=0", *(spec.get("quick_set") or [] if quick else [])]
    cfg_es = load_config(ROOT / configs["es"], sets)
    cfg_bptt = load_config(ROOT / configs["bptt"], sets)
    bptt_batch = cfg_bptt.bptt.batch_size or cfg_bptt.task.batch_size
    cfg_guided = load_config(ROOT / configs["guided"], sets)
    cfg_guided64 = load_config(ROOT / configs["guided"], [*sets, f"guided.surrogate_batch={bptt_batch}"])

    genome = build_genome(cfg_es)
    problem = MetaProblem(genome.dim, LocalEvaluator(cfg_es, genome), seed=1)
    searcher = make_searcher(cfg_es.es, problem, genome.initial_vector())
    trainer = gradient_trainer(cfg_bptt, build_genome(cfg_bptt))
    guided = {name: (c, OUTER_LOOPS["guided"].start(c.guided, RunContext.of(c), inputs_of(c, genome, LocalEvaluator(c, genome))), None)
              for name, c in (("guided", cfg_guided), ("guided_bptt_batch", cfg_guided64))}

    times: dict[str, list[float]] = {"es": [], "bptt": [], "guided": [], "guided_bptt_batch": []}
    surrogate: dict[str, list[float]] = {"guided": [], "guided_bptt_batch": []}
    for k in range(rounds + 1):  # round 0 warms up (kernel builds, allocations, evotorch's first step)
        gen = k + 1
        t0 = time.perf_counter()
        problem.start_generation((cfg_es.run.seed, STREAM_TRAIN, gen))
        searcher.step()
        t_es = time.perf_counter() - t0
        t0 = time.perf_counter()
        trainer.step((cfg_bptt.run.seed, STREAM_TRAIN, gen), 10**6)
        t_bptt = time.perf_counter() - t0
        row = {"es": t_es, "bptt": t_bptt}
        for name, (cfg, search, evaluator) in guided.items():
            t0 = time.perf_counter()
            metrics = search.step(gen)
            row[name] = time.perf_counter() - t0
            if k:
                surrogate[name].append(metrics["surrogate_s"])
        if k:
            for name, t in row.items():
                times[name].append(t)
    med = {name: median(t) for name, t in times.items()}
    out = {
        "configs": configs,
        "rounds_timed": rounds,
        "threads": torch.get_num_threads(),
        "genome_dim": genome.dim,
        "neurons": cfg_es.model.n_lif + cfg_es.model.n_alif,
        "popsize": {"es": cfg_es.es.popsize, "guided": cfg_guided.guided.popsize},
        "tasks": {"es_generation": cfg_es.task.batch_size, "bptt_step": bptt_batch,
                  "guided_generation": cfg_guided.task.batch_size,
                  "guided_surrogate": cfg_guided.guided.surrogate_batch or cfg_guided.task.batch_size,
                  "guided_bptt_batch": bptt_batch},
        "k": cfg_guided.guided.k,
        "seconds": med,
        "surrogate_seconds": {name: median(t) for name, t in surrogate.items()},
        "guided_over_es_plus_bptt": med["guided"] / (med["es"] + med["bptt"]),
        "guided_bptt_batch_over_es_plus_bptt": med["guided_bptt_batch"] / (med["es"] + med["bptt"]),
        "guided_over_es": med["guided"] / med["es"],
        "all_rounds": times,
    }
    log(f"  ES generation {med['es']:.3f} s, BPTT step {med['bptt']:.3f} s, guided generation {med['guided']:.3f} s "
        f"(surrogate on {bptt_batch} tasks: {med['guided_bptt_batch']:.3f} s)")
    return out


def report(res: dict) -> str:
    s, sur = res["seconds"], res["surrogate_seconds"]
    t = res["tasks"]
    body = [
        ["plain ES generation", f"P={res['popsize']['es']}, {t['es_generation']} tasks", f"{s['es']:.3f}", ""],
        ["BPTT step", f"{t['bptt_step']} tasks", f"{s['bptt']:.3f}", ""],
        ["ES generation + BPTT step", "", f"{s['es'] + s['bptt']:.3f}", ""],
        ["guided ES generation", f"P={res['popsize']['guided']}, k={res['k']}, surrogate on {t['guided_surrogate']} tasks",
         f"{s['guided']:.3f}", f"{sur['guided']:.3f}"],
        ["guided ES generation", f"P={res['popsize']['guided']}, k={res['k']}, surrogate on {t['guided_bptt_batch']} tasks",
         f"{s['guided_bptt_batch']:.3f}", f"{sur['guided_bptt_batch']:.3f}"],
    ]
    return table(body, ["what", "shape", "s (median)", "of which surrogate s"]) + (
        f"\nguided / (ES + BPTT): {res['guided_over_es_plus_bptt']:.2f} (surrogate on {t['guided_surrogate']} tasks), "
        f"{res['guided_bptt_batch_over_es_plus_bptt']:.2f} (on {t['guided_bptt_batch']})")
