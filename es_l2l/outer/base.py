"""The outer-loop contract: what the shell asks of ES, BPTT, the hybrid, or any new outer loop.

An outer loop is one object registered in :data:`es_l2l.outer.OUTER_LOOPS` under its config name
(``outer: es``). It declares its config section (a pydantic model the root config composes under
``section``), checks a config against it, says in one line what it will do, and runs: it steps its
search, hands each generation's own metrics to :class:`es_l2l.outer.driver.Driver` (which
validates, tracks the best genome, applies the budgets and emits the status dict to the
subscribers) and returns the :class:`RunResult`. Resuming is a capability a loop declares
(``resumable``): the driver then carries the loop's state in ``resume_state`` every
``run.checkpoint_every`` generations. A loop that needs Ray evaluation actors says so
(``uses_evaluator``); the shell then builds them before any MLflow run exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig
    from es_l2l.families.base import TaskFamily
    from es_l2l.genome import Genome

Subscriber = Callable[[dict], None]


class NonFiniteFitness(RuntimeError):
    """Some members' fitness came back NaN or infinite."""


@dataclass
class RunResult:
    initial: torch.Tensor  # (D,) genome at generation 0
    final: torch.Tensor  # (D,) search centre at the end
    best: torch.Tensor  # (D,) centre with the best validation score (the family's objective)
    best_generation: int
    generations: int
    history: list[dict] = field(default_factory=list)


class OuterLoop:
    """Base class of the contract; a loop overrides ``run`` and what else it has."""

    name: str = ""
    section: str | None = None  # its config section's key, e.g. "es"
    config: type | None = None  # the pydantic model of that section
    uses_evaluator: bool = False  # needs the (Ray) population evaluator
    resumable: bool = False  # can continue from a ``resume_state``
    driver_gpu: bool = False  # takes gradient steps in the driver (so with run.device=cuda the driver needs a GPU)

    @property
    def sections(self) -> tuple[str, ...]:
        """The outer-loop config sections this loop reads (its own; the hybrid also reads es and bptt)."""
        return (self.section,) if self.section else ()

    def check(self, cfg: ExperimentConfig) -> None:
        """Raise ValueError (one sentence naming the keys) where ``cfg`` does not fit this loop."""

    def describe(self, cfg: ExperimentConfig, family: TaskFamily) -> str:
        """What this loop will do, in a few words (the run's first line)."""
        return self.name

    def run(
        self,
        cfg: ExperimentConfig,
        genome: Genome,
        evaluator,
        subscribers: list[Subscriber] = (),
        resume: dict | None = None,
    ) -> RunResult:
        raise NotImplementedError
