"""The task-family contract: everything the shell, the genome and the outer loops ask of a family.

A family is one folder under ``es_l2l/families/`` (or any importable module, named in YAML as
``task.family: package.module:attribute``) holding an object that implements :class:`TaskFamily`.
The shell (CLI, experiment, compare, Ray workers, MLflow, progress display) and every outer loop
talk to families only through this contract, so adding one edits nothing outside its folder but
the registry line in :mod:`es_l2l.families`.

What a family provides:

* ``config``: its pydantic section, validated as the config's ``task:``; it must have a ``family``
  field (the family's registry name) and a ``batch_size`` (tasks per training generation).
* :meth:`TaskFamily.io_sizes`: the network's input and readout sizes for a ``task`` section.
* :meth:`TaskFamily.evaluate`: ``P`` networks (model-space parameters, leading population axis) on
  the ``batch`` tasks named by ``key`` (a :class:`es_l2l.seeds.SeedKey`, read by field name) -> an
  :data:`Evaluation`. A pure function of its arguments, differentiable when the parameters
  require grad.
* ``objective``: the validation metric that picks the best genome and its direction.
* :meth:`TaskFamily.validation_metrics`: the ``val_*`` scalars of one network's evaluation.
* :meth:`TaskFamily.gradient_loss`: what gradient outer loops minimise (default ``-fitness``); a family
  whose evaluation is not differentiable sets ``gradient_loss_name = None`` and guided ES refuses it.
* optional: :meth:`TaskFamily.gradient_loss_shard` (``shards_tasks = True``): the gradient loss on
  a contiguous share of the step's tasks, for data-parallel BPTT (``bptt.workers``).
* :meth:`TaskFamily.report`: the held-out test report, as data (a :class:`HeldOut`).
* :meth:`TaskFamily.summarise_comparison`: what ``es-l2l compare`` shows for the family, as data
  (a :class:`es_l2l.reporting.tables.Comparison`).

A family does no I/O: it neither prints nor logs; the shell (:mod:`es_l2l.reporting`) does both
for every family alike.
* optional: extra status-dict entries per generation (a training curriculum), a weight tying
  (mirror permutations), extra config checks and moved config keys.

Every method receives the family's own ``task`` section and the run context
(:class:`es_l2l.context.RunContext`: seed, device, validation size, the model kind and its
section, the simulation options), never the root config. A family simulates only through
``ctx.simulate`` and scores firing rates with ``ctx.rate_terms``, so it runs with any model kind.
:meth:`TaskFamily.check` gets the same two: the root config's cross-section checks (the model kind
against the outer loop, the mirror tying against the family) stay in the shell (es_l2l.config).

An **Evaluation** is a NamedTuple whose fields include ``fitness`` (P,) (higher is better: the
outer loops maximise it), ``rate_hz`` (P,) and ``neuron_steps`` (int, simulated neuron updates),
with ``summary() -> dict[str, float]`` (the ``train_*`` status scalars, ``train_<metric>_mean``
first) and, optionally, ``light()`` (the copy a Ray worker sends back: per-task data dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import torch

from es_l2l.reporting.tables import Comparison, generic_comparison

if TYPE_CHECKING:  # type names only: families never import the root config
    from es_l2l.context import RunContext
    from es_l2l.seeds import SeedKey


class Decoder(Protocol):
    """What a family's report needs of the genome (an :class:`es_l2l.genome.Genome`): the model
    parameters of (P, D) search-space vectors (of the run's model kind)."""

    def params(self, vectors: torch.Tensor): ...


class Evaluation(Protocol):
    fitness: torch.Tensor  # (P,) higher is better
    rate_hz: torch.Tensor  # (P,) mean firing rate
    neuron_steps: int

    def summary(self) -> dict[str, float]: ...


class Objective(NamedTuple):
    """The validation metric that selects the best genome, and which way is better."""

    key: str  # status-dict key, e.g. "val_mse_late"
    maximize: bool
    label: str  # short, for the terminal: "val MSE(late)"
    digits: int = 4  # decimals when printed

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a > b if self.maximize else a < b

    def best(self, values) -> float:
        return max(values) if self.maximize else min(values)

    def worst(self, values) -> float:
        return min(values) if self.maximize else max(values)

    def reached(self, value: float, target: float) -> bool:
        """Whether ``value`` is at least as good as ``target``."""
        return value >= target if self.maximize else value <= target

    def fmt(self, value: float) -> str:
        return f"{value:.{self.digits}f}"

    def progress(self, what: str, history: list[dict], best_generation: int) -> str:
        """The run's validation in one line: ``validation <what>: <first> at generation 0 -> <last>
        at generation N (best <best> at generation B)``, from the status history."""
        vals = [h for h in history if self.key in h]
        first, last = vals[0][self.key], vals[-1][self.key]
        best = self.best(h[self.key] for h in vals)
        return (f"validation {what}: {self.fmt(first)} at generation 0 -> {self.fmt(last)} at generation "
                f"{vals[-1]['generation']} (best {self.fmt(best)} at generation {best_generation})")


@dataclass
class HeldOut:
    """A family's held-out test report, as data: the trained network beside the untrained one and
    the baselines on the same test tasks. The shell (:mod:`es_l2l.reporting`) prints it and logs it
    to MLflow alike for every family; a family does no I/O.

    ``rows`` are the held-out table (``held_out.json``, the run's description): predictor (its
    printed name) -> {metric: value}. ``metrics`` are the MLflow keys, already grouped
    (``withheld/<predictor>/<metric>``, :mod:`es_l2l.tracking.metric_keys`). ``beats`` name the ``beats.<name>``
    tags. ``figures`` draw into the path they are given; they get the run's status history
    (``None`` when ``es-l2l evaluate`` scores a checkpoint). ``printed`` go to the terminal before
    the verdict (the first is the summary table), ``notes`` after it; ``closing(result)`` is the
    last line (``result``: the outer loop's RunResult, or ``None`` for ``es-l2l evaluate``).
    ``detail`` is the family's own object, for its comparison summary.
    """

    rows: dict[str, dict[str, float]]
    score: float  # the trained network's test value of the objective's metric (same direction)
    verdict: str  # one plain paragraph: what the trained network beats, and what that means
    beats: dict[str, bool]  # tag suffix -> whether the trained network beats that predictor
    metrics: dict[str, float]  # grouped MLflow keys -> values
    tags: dict[str, str] = field(default_factory=dict)  # further tags (besides beats.* and verdict)
    figures: dict[str, Callable[[Path, list | None], object]] = field(default_factory=dict)  # file name -> draw(path, history)
    artifacts: dict[str, str] = field(default_factory=dict)  # file name -> text (CSV, markdown)
    printed: list = field(default_factory=list)  # rich renderables or strings before the verdict
    notes: list[str] = field(default_factory=list)  # lines after the verdict
    closing: Callable[[object], str | None] | None = None
    detail: Any = None


class TaskFamily:
    """Base class of the contract; a family overrides what it has (see the module docstring)."""

    name: str = ""
    config: type = object  # the pydantic model of its ``task:`` section
    objective: Objective = Objective("val_fitness", True, "val fitness")
    gradient_loss_name: str | None = "-fitness"  # shown in the run's one-line description; None: no gradient loss
    shards_tasks: bool = False  # implements gradient_loss_shard (data-parallel BPTT: bptt.workers > 1)
    moved_keys: dict[str, str] = {}  # old top-level config key -> where it lives now
    # every member sees the same inputs and ``evaluate`` simulates only through ctx.simulate:
    # low-rank ES may then simulate a population that shares the centre (es_l2l.snn.lowrank)
    shared_inputs: bool = False

    def io_sizes(self, task) -> tuple[int, int]:
        raise NotImplementedError

    def episode_steps(self, task) -> int:
        """Simulation steps of one task episode (what the memory estimate before a run multiplies)."""
        return 1000

    def evaluate(self, task, ctx: RunContext, params, key: SeedKey, batch: int) -> Evaluation:
        raise NotImplementedError

    def validation_metrics(self, ev: Evaluation) -> dict[str, float]:
        """The ``val_*`` scalars of a one-member evaluation; must include ``objective.key``."""
        return {self.objective.key: float(ev.fitness[0])}

    def gradient_loss(self, task, ctx: RunContext, params, key: SeedKey, batch: int) -> tuple[torch.Tensor, Evaluation, dict[str, float]]:
        """The scalar loss gradient outer loops minimise on these tasks, its evaluation and extra terms."""
        ev = self.evaluate(task, ctx, params, key, batch)
        return -ev.fitness.sum(), ev, {}

    def gradient_loss_shard(
        self, task, ctx: RunContext, params, key: SeedKey, batch: int, start: int, stop: int
    ) -> tuple[torch.Tensor, Evaluation, dict[str, float]]:
        """:meth:`gradient_loss` on tasks ``start:stop`` of the ``batch`` tasks named by ``key``.

        The tasks are those of the whole batch (the seeds decide them, not the worker), and the loss
        is a mean over the tasks it sees, so the shards' losses weighted by their task counts add up
        to the whole batch's. A family that can say so sets ``shards_tasks = True``.
        """
        raise NotImplementedError(f"the {self.name} family cannot split a batch of tasks across data-parallel workers")

    def report(self, task, ctx: RunContext, genome: Decoder, initial: torch.Tensor, trained: torch.Tensor) -> HeldOut:
        raise NotImplementedError

    def summarise_comparison(self, plan, children: list) -> Comparison:
        """Columns, rows, verdict, figures and metrics of a comparison, as data (``es-l2l compare``
        logs and prints them; see :func:`es_l2l.reporting.tables.generic_comparison`, which every family may reuse)."""
        return generic_comparison(self.objective, plan, children)

    def status_extras(self, task, generation: int) -> dict[str, float]:
        """Extra status-dict scalars of training generation ``generation`` (e.g. a curriculum flag)."""
        return {}

    def mirror_permutations(self, task) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(input, output) permutations of a left-right weight tying, or None where the family has none."""
        return None

    def stored_task(self, task: dict) -> dict:
        """A ``task:`` section as an older es-l2l stored it (in a checkpoint), with values renamed since
        brought up to date (the same numbers); today's configs name the new values themselves."""
        return task

    def check(self, task, ctx: RunContext) -> None:
        """Raise ValueError (one sentence naming the keys) where the ``task`` section does not fit
        the run (``ctx``: its validation size, its model kind) or the family."""

