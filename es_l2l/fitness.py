"""Fitness of a population on a batch of tasks: one simulation call for all members.

Shared by every outer loop. :func:`evaluate` is a pure function of (genomes, task seed): a
restarted worker that repeats an evaluation gets the same numbers. The task family (see
:mod:`es_l2l.families.base`) simulates and scores; its evaluation carries ``fitness`` (P,),
``rate_hz`` (P,) and ``neuron_steps`` and says how to summarise itself for the status dict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from es_l2l.context import RunContext
from es_l2l.families import family_of
from es_l2l.families.base import Evaluation
from es_l2l.seeds import SeedKey

if TYPE_CHECKING:
    from es_l2l.genome import Genome


def concat(evals: list[Evaluation]) -> Evaluation:
    """Member-wise concatenation of several evaluations of one family (``neuron_steps`` add up)."""
    kind = type(evals[0])
    return kind(*[sum(col) if isinstance(col[0], int) else torch.cat(col) for col in zip(*evals)])


def detach(ev: Evaluation) -> Evaluation:
    return type(ev)(*(t.detach() if isinstance(t, torch.Tensor) else t for t in ev))


def light(ev: Evaluation) -> Evaluation:
    """What a worker sends back: the family's ``light()`` copy where it has one (per-task data dropped)."""
    return ev.light() if hasattr(ev, "light") else ev


@torch.no_grad()
def evaluate(
    cfg,
    genome: Genome,
    vectors: torch.Tensor,
    seed_keys: tuple[int, ...],
    batch: int | None = None,
    device: str = "cpu",
    ctx: RunContext | None = None,
) -> Evaluation:
    """Fitness of (P, D) genomes on the task batch derived from ``seed_keys`` (a :class:`SeedKey`
    or its fields in order). ``cfg``: the root config (its ``task`` section is read; not imported
    here, as the outer loops import this module and the root config imports them). ``ctx``: the run context (built from ``cfg`` where not given)."""
    params = genome.params(vectors.to(device=device, dtype=torch.float32).as_subclass(torch.Tensor))
    ctx = RunContext.of(cfg) if ctx is None else ctx
    return family_of(cfg.task).evaluate(cfg.task, ctx, params, SeedKey(*seed_keys), batch or cfg.task.batch_size)
