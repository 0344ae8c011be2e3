"""Scoring networks (any model kind) on store-recall sequences: cross-entropy, recall error, fitness."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from es_l2l.families.base import Objective
from es_l2l.families.store_recall import task as sr
from es_l2l.seeds import SeedKey, generator

if TYPE_CHECKING:
    from es_l2l.context import RunContext
    from es_l2l.families.store_recall.config import StoreRecallTaskConfig

# The validation metric that picks the best genome: the fraction of wrong recalls.
OBJECTIVE = Objective("val_recall_error", maximize=False, label="val recall error", digits=4)


class StoreRecallEval(NamedTuple):
    fitness: torch.Tensor  # (P,) minus (cross-entropy + rate regulariser)
    cross_entropy: torch.Tensor  # (P,)
    recall_error: torch.Tensor  # (P,) fraction of wrong recalls
    rate_hz: torch.Tensor  # (P,)
    wrong: torch.Tensor  # (P, B, R) 1.0 where a recall was wrong
    neuron_steps: int

    def summary(self) -> dict[str, float]:
        return {
            "train_recall_error_mean": float(self.recall_error.mean()),
            "train_cross_entropy_mean": float(self.cross_entropy.mean()),
            "rate_hz": float(self.rate_hz.mean()),
        }

    def light(self) -> "StoreRecallEval":
        return self._replace(wrong=self.wrong.new_zeros(self.wrong.shape[0], 0, 0))


def sequences(task: StoreRecallTaskConfig, key: SeedKey, batch: int) -> sr.Batch:
    """The sequences named by ``key`` (the same key always gives the same sequences)."""
    return sr.sample(task, generator(*SeedKey(*key).keys()), batch)


def evaluate_batch(ctx: RunContext, params, batch: sr.Batch, record_spikes: bool = False):
    """``P`` networks on the sequences of ``batch``: the evaluation and the rollout (differentiable)."""
    steps, index = sr.readout_union(batch)
    out = ctx.simulate(params, batch.x, readout_steps=steps, record_spikes=record_spikes)
    logits = sr.gather_recall(out.y, index)  # (P, B, R*W, 2)
    ce = sr.cross_entropy(logits, batch.targets)
    z = sr.recall_logits(logits, batch.n_recalls)  # (P, B, R, 2)
    wrong = (z.argmax(dim=-1) != batch.targets.to(z.device)).float()
    rate, penalty = ctx.rate_terms(out)
    pop, b, n = out.spike_count.shape
    ev = StoreRecallEval(
        fitness=-(ce + penalty),
        cross_entropy=ce,
        recall_error=wrong.mean(dim=(1, 2)),
        rate_hz=rate,
        wrong=wrong,
        neuron_steps=pop * b * n * out.n_steps,
    )
    return ev, out


def evaluate_params(task: StoreRecallTaskConfig, ctx: RunContext, params, key: SeedKey, batch: int) -> StoreRecallEval:
    return evaluate_batch(ctx, params, sequences(task, key, batch))[0]
