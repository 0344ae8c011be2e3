"""The outer-loop driver: step the search, validate, emit one status dict per generation.

Progress display, MLflow and checkpoints subscribe to the status dict; the driver knows none
of them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

import torch

from es_l2l.families import family_of
from es_l2l.fitness import evaluate
from es_l2l.outer.base import RunResult, Subscriber
from es_l2l.seeds import STREAM_VALIDATION

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig
    from es_l2l.families.base import Evaluation
    from es_l2l.genome import Genome


def held_out(cfg: ExperimentConfig, genome: Genome, vector: torch.Tensor, stream: int) -> Evaluation:
    """One genome on the fixed held-out tasks of ``stream`` (validation or test)."""
    keys = (cfg.run.seed, stream)
    return evaluate(cfg, genome, vector.unsqueeze(0), keys, batch=cfg.run.validation_tasks, device=cfg.run.device)


def validation_metrics(cfg: ExperimentConfig, genome: Genome, vector: torch.Tensor) -> dict[str, float]:
    """One genome's scalar summaries on the validation tasks (``val_*``, the family's)."""
    return family_of(cfg.task).validation_metrics(held_out(cfg, genome, vector, STREAM_VALIDATION))


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
        self.family = family_of(cfg.task)
        self.objective = self.family.objective
        self.key = self.objective.key
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
        """What a resumed driver needs, plus the outer loop's own state (e.g. the search's)."""
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
        return self.objective.better(value, self.best_val)

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
        status.update(self.family.status_extras(self.cfg.task, generation))  # e.g. a training curriculum's flag
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
