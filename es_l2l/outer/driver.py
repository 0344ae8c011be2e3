"""The outer-loop driver: the one generation loop. Step the search, validate, emit one status dict a generation.

:func:`drive` runs any outer loop (es_l2l.outer.base): it starts the loop's search, then each
generation times one ``step``, and :class:`Driver` adds what every loop shares (budgets,
validation, the best genome, the resume cadence, the status dict). Progress display, MLflow and
checkpoints subscribe to the status dict; the driver knows none of them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

import torch

from es_l2l.outer.base import RunResult, Subscriber

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig
    from es_l2l.genome import Genome


def drive(
    cfg: ExperimentConfig,
    genome: Genome,
    evaluator=None,
    subscribers: list[Subscriber] = (),
    resume: dict | None = None,
) -> RunResult:
    """Meta-train with ``cfg.outer``'s loop; returns the initial, final and best genomes.

    ``evaluator``: the population evaluator (Ray actors or in-process) of a loop that ``uses_evaluator``,
    or a loop's own workers (data-parallel BPTT's replicas), or None. A resumable loop's status dict
    carries ``resume_state`` every ``run.checkpoint_every`` generations: the search's whole state (as
    plain data) and the driver's (generation, best genome); ``resume=`` that dict continues after its
    generation, and since each generation's tasks are a pure function of (seed, generation), the
    continued run ends exactly where an uninterrupted one does.
    """
    from es_l2l.context import RunContext
    from es_l2l.outer.shell import driver_services, inputs_of, loop_of, section_of

    loop = loop_of(cfg)
    if resume is not None and not loop.resumable:
        raise ValueError(f"outer={cfg.outer} runs cannot be resumed; start the run again instead")
    search = loop.start(section_of(cfg, loop), RunContext.of(cfg), inputs_of(cfg, genome, evaluator, loop))
    if resume is not None:
        search.restore(resume["searcher"])
    validate, extras, objective = driver_services(cfg, genome)
    driver = Driver(cfg.run, validate, extras, objective, search.centre(), subscribers, resume=resume)
    resumable = loop.resumable and getattr(search, "resumable", True)  # (data-parallel BPTT's replicas keep their state)
    state = (lambda: {"searcher": search.state()}) if resumable else None
    for generation in range(driver.first_generation, cfg.run.generations + 1):
        t0 = time.perf_counter()
        metrics = search.step(generation)
        seconds = time.perf_counter() - t0
        steps = metrics.pop("neuron_steps")
        if driver.record(generation, seconds, steps, metrics, search.centre, state):
            break
    result = driver.result(search.centre())
    result.step_label = loop.step_label
    return result


class Driver:
    """What every outer loop shares: validation, best-genome tracking, budgets, the status dict.

    :func:`drive` calls :meth:`record` once per generation (ES) or gradient step (BPTT) with the
    step's own metrics; the driver adds the common ones (``generation``, ``elapsed_s``: training
    wall time without validation, ``neuron_steps``: simulated neuron updates so far), validates when
    due, emits the status dict to the subscribers and says whether the budget is spent.
    """

    def __init__(
        self,
        run,
        validate: Callable[[torch.Tensor], dict[str, float]],
        extras: Callable[[int], dict],
        objective,
        initial: torch.Tensor,
        subscribers: list[Subscriber] = (),
        resume: dict | None = None,
    ):
        self.run, self.subscribers = run, list(subscribers)
        self.validate, self.extras, self.objective = validate, extras, objective
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
        return self.validate(vector)

    def improves(self, value: float) -> bool:
        return self.objective.better(value, self.best_val)

    def _emit(self, status: dict) -> None:
        for subscriber in self.subscribers:
            subscriber(status)
        self.history.append(status)

    def budget_spent(self) -> bool:
        run = self.run
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
        status.update(self.extras(generation))  # e.g. a training curriculum's flag
        stop = self.budget_spent() or generation >= self.run.generations
        if generation % self.run.validate_every == 0 or stop:
            vector = center()
            status.update(self.validation(vector))
            if self.improves(status[self.key]):
                self.best, self.best_generation, self.best_val = vector.clone(), generation, status[self.key]
            status[f"best_{self.key}"] = self.best_val
            # Genomes ride along for checkpoint subscribers; scalar subscribers skip them.
            status["genomes"] = {"center": vector, "best": self.best, "initial": self.initial}
            status["best_generation"] = self.best_generation
        if loop_state is not None and generation % self.run.checkpoint_every == 0 and not stop:
            status["resume_state"] = self.resume_state(**loop_state())
        self._emit(status)
        return stop

    def result(self, final: torch.Tensor) -> RunResult:
        return RunResult(self.initial, final, self.best, self.best_generation, self.generation, self.history)
