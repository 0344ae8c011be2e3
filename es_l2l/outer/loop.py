"""The outer-loop driver: step the search, validate, emit one status dict per generation.

Progress display, MLflow and checkpoints subscribe to the status dict; the driver knows none
of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from es_l2l.config import ExperimentConfig
from es_l2l.distributed import Evaluator
from es_l2l.fitness import Evaluation, MazeEval, evaluate, in_search_curriculum
from es_l2l.genome import Genome
from es_l2l.outer.es import MetaProblem, center_of, initial_stdev, make_searcher, stdev_of
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


def held_out(cfg: ExperimentConfig, genome: Genome, vector: torch.Tensor, stream: int) -> Evaluation:
    """One genome on the fixed held-out tasks of ``stream`` (validation or test)."""
    keys = (cfg.run.seed, stream)
    return evaluate(cfg, genome, vector.unsqueeze(0), keys, batch=cfg.run.validation_tasks, device=cfg.run.device)


def objective(cfg: ExperimentConfig) -> tuple[str, bool]:
    """The validation metric that picks the best genome, and whether higher is better."""
    return ("val_reward", True) if cfg.family == "maze" else ("val_mse_late", False)


def validation_metrics(cfg: ExperimentConfig, genome: Genome, vector: torch.Tensor) -> dict[str, float]:
    """One genome's scalar summaries on the validation tasks (``val_*``)."""
    ev = held_out(cfg, genome, vector, STREAM_VALIDATION)
    if isinstance(ev, MazeEval):
        return {
            "val_reward": float(ev.reward[0]),
            "val_found": float(ev.found[0]),
            "val_first_find": float(ev.first_find[0]),
            "val_later_trip": float(ev.later_trip[0]),
            "val_rate_hz": float(ev.rate_hz[0]),
        }
    return episode_metrics(ev.mse_per_trial[0], "val")


def held_out_test_keys(cfg: ExperimentConfig) -> tuple[int, int]:
    return (cfg.run.seed, STREAM_TEST)


@dataclass
class RunResult:
    initial: torch.Tensor  # (D,) genome at generation 0
    final: torch.Tensor  # (D,) search centre at the end
    best: torch.Tensor  # (D,) centre with the best validation score (see ``objective``)
    best_generation: int
    generations: int
    history: list[dict] = field(default_factory=list)


class Driver:
    """What every outer loop shares: validation, best-genome tracking, budgets, the status dict.

    An outer loop calls :meth:`record` once per generation (ES) or gradient step (BPTT) with the
    step's own metrics; the driver adds the common ones (``generation``, ``elapsed_s``: training
    wall time without validation, ``neuron_steps``: simulated neuron updates so far), validates when
    due, emits the status dict to the subscribers and says whether the budget is spent.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        genome: Genome,
        initial: torch.Tensor,
        subscribers: list[Subscriber] = (),
        resume: dict | None = None,
    ):
        self.cfg, self.genome, self.subscribers = cfg, genome, list(subscribers)
        self.key, self.maximize = objective(cfg)
        self.wall_start = time.perf_counter()
        self.history: list[dict] = []
        if resume is not None:  # continue after the checkpointed generation (see resume_state)
            self.initial, self.status0 = resume["initial"], resume["status0"]
            self.best, self.best_generation = resume["best"], resume["best_generation"]
            self.best_val = resume.get("best_val", resume.get("best_val_mse_late"))  # older resume files
            self.generation = resume["generation"]
            self.neuron_steps, self.train_seconds = resume["neuron_steps"], resume.get("elapsed_s", 0.0)
            self.history.append(self.status0)
            return
        self.initial = initial.clone()
        self.train_seconds, self.neuron_steps, self.generation = 0.0, 0, 0
        self.status0 = {"generation": 0, "elapsed_s": 0.0, "neuron_steps": 0, **self.validation(self.initial)}
        self.best, self.best_generation, self.best_val = self.initial.clone(), 0, self.status0[self.key]
        self.status0[f"best_{self.key}"] = self.best_val
        self._emit(self.status0)

    @property
    def first_generation(self) -> int:
        return self.generation + 1

    def resume_state(self, **loop_state) -> dict:
        """What a resumed driver needs, plus the outer loop's own state (e.g. the searcher's state)."""
        return {
            "generation": self.generation,
            "initial": self.initial,
            "best": self.best,
            "best_generation": self.best_generation,
            "best_val": self.best_val,
            "neuron_steps": self.neuron_steps,
            "elapsed_s": self.train_seconds,
            "status0": self.status0,
            **loop_state,
        }

    def validation(self, vector: torch.Tensor) -> dict[str, float]:
        return validation_metrics(self.cfg, self.genome, vector)

    def improves(self, value: float) -> bool:
        return value > self.best_val if self.maximize else value < self.best_val

    def _emit(self, status: dict) -> None:
        for subscriber in self.subscribers:
            subscriber(status)
        self.history.append(status)

    def budget_spent(self) -> bool:
        run = self.cfg.run
        return (run.max_seconds is not None and self.train_seconds >= run.max_seconds) or (
            run.max_neuron_steps is not None and self.neuron_steps >= run.max_neuron_steps
        )

    def record(
        self,
        generation: int,
        seconds: float,
        neuron_steps: int,
        metrics: dict,
        center: Callable[[], torch.Tensor],
        loop_state: Callable[[], dict] | None = None,
    ) -> bool:
        """Emit one generation's status; returns True when the run must stop (budget or generations spent).

        Every ``run.checkpoint_every`` generations (and not at the last) the status carries
        ``resume_state`` when the outer loop can be resumed (``loop_state`` given).
        """
        self.generation = generation
        self.train_seconds += seconds
        self.neuron_steps += neuron_steps
        status = {
            "generation": generation,
            **metrics,
            "seconds_per_generation": seconds,
            "neuron_steps_per_s": neuron_steps / max(seconds, 1e-9),
            "neuron_steps": self.neuron_steps,
            "elapsed_s": self.train_seconds,
            "wall_s": time.perf_counter() - self.wall_start,
        }
        if self.cfg.family == "maze" and self.cfg.task.search_curriculum:  # this generation trained on relocating goals
            status["search_curriculum"] = float(in_search_curriculum(self.cfg, generation))
        stop = self.budget_spent() or generation >= self.cfg.run.generations
        if generation % self.cfg.run.validate_every == 0 or stop:
            vector = center()
            status.update(self.validation(vector))
            if self.improves(status[self.key]):
                self.best, self.best_generation, self.best_val = vector.clone(), generation, status[self.key]
            status[f"best_{self.key}"] = self.best_val
            # Genomes ride along for checkpoint subscribers; scalar subscribers skip them.
            status["genomes"] = {"center": vector, "best": self.best, "initial": self.initial}
            status["best_generation"] = self.best_generation
        if loop_state is not None and generation % self.cfg.run.checkpoint_every == 0 and not stop:
            status["resume_state"] = self.resume_state(**loop_state())
        self._emit(status)
        return stop

    def result(self, final: torch.Tensor) -> RunResult:
        return RunResult(self.initial, final, self.best, self.best_generation, self.generation, self.history)


def run_es(
    cfg: ExperimentConfig,
    genome: Genome,
    evaluator: Evaluator,
    subscribers: list[Subscriber] = (),
    resume: dict | None = None,
) -> RunResult:
    """Meta-train with the configured evolution strategy; returns the initial, final and best genomes.

    Every ``run.checkpoint_every`` generations the status dict carries ``resume_state``: the whole
    search (distribution, optimizer state, sampler RNG state, as plain data: es_l2l.search_state) and the driver's own state (generation, best genome). ``resume=`` that dict continues
    after its generation; since each generation's tasks are a pure function of (seed, generation),
    the continued run ends exactly where an uninterrupted one does.
    """
    from es_l2l.search_state import restore_searcher, searcher_state

    search_seed = derive_seed(cfg.run.seed, STREAM_SEARCH) % (2**31)
    problem = MetaProblem(genome.dim, evaluator, seed=search_seed, nan_policy=cfg.es.nan_policy)
    searcher = make_searcher(cfg.es, problem, genome.initial_vector(), initial_stdev(cfg.es, genome))
    if resume is not None:  # the fresh searcher takes the saved state: plain data, no pickle
        restore_searcher(searcher, resume["searcher"])
    driver = Driver(cfg, genome, genome.initial_vector(), subscribers, resume=resume)
    state = lambda: {"searcher": searcher_state(searcher)}  # noqa: E731  tensors and numbers (es_l2l.search_state)
    for gen in range(driver.first_generation, cfg.run.generations + 1):
        t0 = time.perf_counter()
        problem.start_generation((cfg.run.seed, STREAM_TRAIN, gen))  # with seed traffic, this sends the work
        searcher.step()
        seconds = time.perf_counter() - t0
        ev = problem.last_eval
        metrics = {
            "fitness_mean": float(ev.fitness.mean()),
            "fitness_best": float(ev.fitness.max()),
            "fitness_std": float(ev.fitness.std()),
            **ev.summary(),
            "stdev": stdev_of(searcher),
        }
        if driver.record(gen, seconds, ev.neuron_steps, metrics, lambda: center_of(searcher), state):
            break
    return driver.result(center_of(searcher))


def run_outer(
    cfg: ExperimentConfig,
    genome: Genome,
    evaluator: Evaluator | None,
    subscribers: list[Subscriber] = (),
    resume: dict | None = None,
) -> RunResult:
    """The outer loop that ``cfg.outer`` names (es, bptt or hybrid); only ES runs resume."""
    if cfg.outer == "es":
        return run_es(cfg, genome, evaluator, subscribers, resume=resume)
    if resume is not None:
        raise ValueError(f"only ES runs can be resumed, this one is outer={cfg.outer}")
    if cfg.outer == "bptt":
        from es_l2l.outer.bptt import run_bptt

        return run_bptt(cfg, genome, subscribers)
    from es_l2l.outer.hybrid import run_hybrid

    return run_hybrid(cfg, genome, evaluator, subscribers)
