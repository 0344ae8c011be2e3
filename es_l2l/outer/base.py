"""The outer-loop contract: what the shell asks of ES, BPTT, the hybrid, guided ES, or any new outer loop.

An outer loop is one :class:`OuterLoop` object, registered in :data:`es_l2l.outer.OUTER_LOOPS` under
its config name (``outer: es``) or named by its import path (``outer: package.module:attribute``).
It has two sides:

* **Facts** the shell asks before anything runs, each from a :class:`LoopSetting` (the outer-loop
  sections and the parts of the config a loop may read): its config section (``section``,
  ``config``; ``sections`` lists every outer-loop section it reads), :meth:`OuterLoop.check`,
  :meth:`OuterLoop.describe`, the blocks it searches and trains (:meth:`OuterLoop.blocks`), its
  memory estimate (:meth:`OuterLoop.memory`), whether it needs Ray (:meth:`OuterLoop.needs_ray`,
  ``uses_evaluator``), what its Ray workers receive (:meth:`OuterLoop.seed_traffic`), whether it
  takes gradient steps in the driver (``driver_gpu``), whether it resumes (``resumable``) and what
  one of its steps is called (``step_label``).
* **The search**, in the manner of ask/tell: :meth:`OuterLoop.start` receives the loop's own section,
  the :class:`es_l2l.context.RunContext` and the :class:`LoopInputs` the shell built (the genome, the
  population evaluator, the gradient loss) and returns a :class:`Search`, whose ``step(generation)``
  runs one generation and returns that generation's own metrics, ``centre()`` the genome it proposes
  now, ``state()`` / ``restore()`` its state as plain data (tensors, numbers, strings) for resuming.

The driver (:func:`es_l2l.outer.driver.drive`) owns the one generation loop: timing, budgets,
validation, the best genome, the resume cadence and the status dict its subscribers receive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

if TYPE_CHECKING:
    from es_l2l.context import RunContext
    from es_l2l.families.base import Evaluation, TaskFamily
    from es_l2l.genome import Genome

Subscriber = Callable[[dict], None]
# (model parameters, seed keys, batch, shard (start, stop) of the batch or None) -> (loss, evaluation, extra terms)
GradientLoss = Callable[..., "tuple[torch.Tensor, Evaluation, dict[str, float]]"]

FLOAT = 4  # bytes


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
    step_label: str = "generation"  # what one of its steps is called (the loop's ``step_label``)


@dataclass(frozen=True)
class LoopSetting:
    """What an outer loop may read of a run's config besides its own section, when it checks the
    config and states its facts; the shell builds it once (:func:`es_l2l.outer.shell.setting_of`)."""

    sections: Mapping[str, Any]  # every outer-loop section of the config, by key (a loop reads those in its ``sections``)
    genome: Any  # the genome section (search, mirror)
    task: Any  # the task section
    family: TaskFamily
    model: Any  # the model section
    spiking: bool  # whether the model kind spikes
    workers: int  # run.workers: Ray evaluation workers (0: in the driver)
    validation_tasks: int
    model_blocks: Callable[[], tuple] = field(default=tuple, compare=False)  # the model kind's blocks for this task
    units: int = 0  # the model kind's units (an LSNN's neurons, an LSTM's cells): what memory estimates multiply

    def neurons(self) -> int:
        return self.units


@dataclass(frozen=True)
class LoopInputs:
    """What the shell hands a loop when it starts (:func:`es_l2l.outer.shell.inputs_of`)."""

    genome: Genome
    evaluator: Any  # (P, D) members, seed keys -> Evaluation (Ray actors or in-process); or the loop's own workers
    gradient_loss: GradientLoss | None  # the family's gradient loss; None where it has none
    batch_size: int  # task.batch_size: tasks a generation
    sections: Mapping[str, Any]  # the outer-loop sections the loop declares besides its own (the hybrid: es, bptt)
    generations: int  # run.generations: the steps a run may take (a learning-rate schedule spans them)


class Search:
    """One run of an outer loop: ask/tell behind ``step``."""

    def step(self, generation: int) -> dict:
        """Run ``generation`` (1, 2, ...); its own metrics, with ``neuron_steps`` (simulated neuron
        updates of this generation) among them, and where it has them ``fitness_mean``, ``fitness_best``
        and the evaluation's ``summary()`` (the progress display shows them)."""
        raise NotImplementedError

    def centre(self) -> torch.Tensor:
        """(D,) the genome the search proposes now (a copy)."""
        raise NotImplementedError

    def state(self) -> dict:
        """The search's state as plain data, from which :meth:`restore` continues exactly (resumable loops)."""
        raise NotImplementedError

    def restore(self, state: dict) -> None:
        raise NotImplementedError


def population_memory(popsize: int, dim: int, setting: LoopSetting) -> dict[str, int]:
    """A population search's largest allocations: members in the driver, their simulation state."""
    n = setting.neurons()
    return {
        # the population and its sampled directions, in the driver (and regenerated in each worker)
        "population (P x D x 4 bytes x 3 copies)": 3 * popsize * dim * FLOAT,
        # simulation state: P x B x N x ~8 floats, plus the recurrent weights of every member
        "simulation state (P x B x N x 8 floats)": popsize * setting.task.batch_size * n * 8 * FLOAT + popsize * n * n * FLOAT,
    }


def centre_problem(state: dict, dim: int, name: str) -> str | None:
    """:meth:`OuterLoop.state_problem` of a search whose state is a centre ``state[name]`` (D,) and an
    optional gradient ``history`` (k, D)."""
    t = state.get(name)
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != (dim,) or not t.is_floating_point() or not bool(torch.isfinite(t).all()):
        return f"searcher.{name} is not a ({dim},) tensor of finite floats for this config"
    history = state.get("history", torch.zeros(0, dim))
    if not isinstance(history, torch.Tensor) or history.ndim != 2 or history.shape[1] != dim or not bool(torch.isfinite(history).all()):
        return f"searcher.history is not a (k, {dim}) tensor of finite floats"
    return None


class OuterLoop:
    """Base class of the contract; a loop sets its facts and overrides ``start`` (and what else it has)."""

    name: str = ""
    section: str | None = None  # its config section's key, e.g. "es"
    config: type | None = None  # the pydantic model of that section
    uses_evaluator: bool = False  # needs the population evaluator (Ray actors where run.workers > 0)
    resumable: bool = False  # its Search has state() / restore()
    driver_gpu: bool = False  # takes gradient steps in the driver (so with run.device=cuda the driver needs a GPU)
    step_label: str = "generation"  # what one step of the status dict is called on a figure's axis
    popsize_key: str | None = None  # the config key of its population size (a population search's)

    @property
    def sections(self) -> tuple[str, ...]:
        """The outer-loop config sections this loop reads (its own; the hybrid also reads es and bptt)."""
        return (self.section,) if self.section else ()

    def own(self, setting: LoopSetting) -> Any:
        """This loop's own section of ``setting``."""
        return setting.sections.get(self.section) if self.section else None

    # --- facts ------------------------------------------------------------------------------

    def check(self, setting: LoopSetting) -> None:
        """Raise ValueError (one sentence naming the keys) where the config does not fit this loop."""

    def describe(self, setting: LoopSetting) -> str:
        """What this loop will do, in a few words (the run's first line)."""
        return self.name

    def blocks(self, setting: LoopSetting) -> tuple[list[str], list[str]]:
        """(the genome blocks it searches without gradients, those it trains by gradient)."""
        return list(setting.genome.search), []

    def popsize(self, setting: LoopSetting) -> int | None:
        """Members a generation (None: not a population search)."""
        return None

    def memory(self, setting: LoopSetting, dim: int) -> dict[str, int]:
        """Its largest allocations (bytes) by what holds them, for a genome of ``dim`` coordinates."""
        p = self.popsize(setting)
        return population_memory(p, dim, setting) if p else {}

    def needs_ray(self, setting: LoopSetting) -> bool:
        """Whether a run starts Ray (evaluation actors, or the loop's own workers)."""
        return self.uses_evaluator and setting.workers > 0

    def seed_traffic(self, setting: LoopSetting) -> bool:
        """Whether Ray workers regenerate the members from the sampler's state rather than receive them."""
        return False

    def state_problem(self, setting: LoopSetting, state: dict, dim: int) -> str | None:
        """What in a saved search state (read back from a resume file) cannot be true of a search over
        ``dim`` coordinates, naming the field; None when it fits (``restore`` checks the rest)."""
        return None

    # --- the search ---------------------------------------------------------------------------

    def start(self, section: Any, ctx: RunContext, inputs: LoopInputs) -> Search:
        """A fresh search at generation 0 (``section``: this loop's own config section)."""
        raise NotImplementedError
