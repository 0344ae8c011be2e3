"""The outer-loop driver: step the search, validate, emit one status dict per generation.

Progress display, MLflow and checkpoints subscribe to the status dict; the driver knows none
of them.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from es_l2l.config import ExperimentConfig
from es_l2l.distributed import Evaluator
from es_l2l.fitness import TeacherEval, evaluate
from es_l2l.genome import Genome
from es_l2l.outer.es import MetaProblem, center_of, make_searcher, stdev_of
from es_l2l.tasks.base import STREAM_SEARCH, STREAM_TEST, STREAM_TRAIN, STREAM_VALIDATION, derive_seed

Subscriber = Callable[[dict], None]


def window(n_trials: int) -> int:
    """Trials in the "first" and "last" windows of an episode."""
    return max(1, n_trials // 6)


def episode_metrics(mse_per_trial: torch.Tensor, prefix: str) -> dict[str, float]:
    """Scalar summaries of an (n_trials,) MSE curve."""
    k, n = window(len(mse_per_trial)), len(mse_per_trial)
    return {
        f"{prefix}_mse": float(mse_per_trial.mean()),
        f"{prefix}_mse_late": float(mse_per_trial[n // 2 :].mean()),
        f"{prefix}_mse_first": float(mse_per_trial[:k].mean()),
        f"{prefix}_mse_last": float(mse_per_trial[-k:].mean()),
    }


def held_out(cfg: ExperimentConfig, genome: Genome, vector: torch.Tensor, stream: int) -> TeacherEval:
    """One genome on the fixed held-out tasks of ``stream`` (validation or test)."""
    keys = (cfg.run.seed, stream)
    return evaluate(cfg, genome, vector.unsqueeze(0), keys, batch=cfg.run.validation_tasks, device=cfg.run.device)


def held_out_test_keys(cfg: ExperimentConfig) -> tuple[int, int]:
    return (cfg.run.seed, STREAM_TEST)


@dataclass
class RunResult:
    initial: torch.Tensor  # (D,) genome at generation 0
    final: torch.Tensor  # (D,) search centre at the end
    best: torch.Tensor  # (D,) centre with the lowest validation MSE over late trials
    best_generation: int
    generations: int
    history: list[dict] = field(default_factory=list)


def run_es(
    cfg: ExperimentConfig,
    genome: Genome,
    evaluator: Evaluator,
    subscribers: list[Subscriber] = (),
    resume: dict | None = None,
) -> RunResult:
    """Meta-train with the configured evolution strategy; returns the initial, final and best genomes.

    Every ``run.checkpoint_every`` generations the status dict carries ``resume_state``: the whole
    search (distribution, optimizer state, sampler RNG state, via pickling the searcher without its
    evaluator) and the driver's own state (generation, best genome). ``resume=`` that dict continues
    after its generation; since each generation's tasks are a pure function of (seed, generation),
    the continued run ends exactly where an uninterrupted one does.
    """
    emit = lambda status: [s(status) for s in subscribers]  # noqa: E731

    def validation(vector: torch.Tensor) -> dict[str, float]:
        return episode_metrics(held_out(cfg, genome, vector, STREAM_VALIDATION).mse_per_trial[0], "val")

    if resume is None:
        search_seed = derive_seed(cfg.run.seed, STREAM_SEARCH) % (2**31)
        problem = MetaProblem(genome.dim, evaluator, seed=search_seed, nan_policy=cfg.es.nan_policy)
        initial = genome.initial_vector()
        searcher = make_searcher(cfg.es, problem, initial.clone())
        status0 = {"generation": 0, "elapsed_s": 0.0, "neuron_steps": 0, **validation(initial)}
        best, best_gen, best_val = initial.clone(), 0, status0["val_mse_late"]
        status0["best_val_mse_late"] = best_val
        emit(status0)
        first, steps_total = 1, 0
    else:
        searcher = pickle.loads(resume["searcher"])
        problem = searcher.problem
        problem.attach(evaluator)
        initial, status0 = resume["initial"], resume["status0"]
        best, best_gen, best_val = resume["best"], resume["best_generation"], resume["best_val_mse_late"]
        first, steps_total = resume["generation"] + 1, resume["neuron_steps"]
    history = [status0]
    start, gen = time.perf_counter(), first - 1
    for gen in range(first, cfg.run.generations + 1):
        problem.start_generation((cfg.run.seed, STREAM_TRAIN, gen))
        t0 = time.perf_counter()
        searcher.step()
        seconds = time.perf_counter() - t0
        ev = problem.last_eval
        steps_total += ev.neuron_steps
        status = {
            "generation": gen,
            "fitness_mean": float(ev.fitness.mean()),
            "fitness_best": float(ev.fitness.max()),
            "fitness_std": float(ev.fitness.std()),
            "train_mse_mean": float(ev.mse.mean()),
            "rate_hz": float(ev.rate_hz.mean()),
            "stdev": stdev_of(searcher),
            "seconds_per_generation": seconds,
            "neuron_steps_per_s": ev.neuron_steps / max(seconds, 1e-9),
            "neuron_steps": steps_total,
            "elapsed_s": time.perf_counter() - start,
        }
        out_of_time = cfg.run.max_seconds is not None and status["elapsed_s"] >= cfg.run.max_seconds
        if gen % cfg.run.validate_every == 0 or gen == cfg.run.generations or out_of_time:
            center = center_of(searcher)
            status.update(validation(center))
            if status["val_mse_late"] < best_val:
                best, best_gen, best_val = center, gen, status["val_mse_late"]
            status["best_val_mse_late"] = best_val
            # Genomes ride along for checkpoint subscribers; scalar subscribers skip them.
            status["genomes"] = {"center": center, "best": best, "initial": initial}
            status["best_generation"] = best_gen
        if gen % cfg.run.checkpoint_every == 0 and gen < cfg.run.generations:
            status["resume_state"] = {
                "generation": gen,
                "searcher": pickle.dumps(searcher),  # MetaProblem drops its evaluator when pickled
                "initial": initial,
                "best": best,
                "best_generation": best_gen,
                "best_val_mse_late": best_val,
                "neuron_steps": steps_total,
                "status0": status0,
            }
        emit(status)
        history.append(status)
        if out_of_time:
            break
    return RunResult(initial, center_of(searcher), best, best_gen, gen, history)
