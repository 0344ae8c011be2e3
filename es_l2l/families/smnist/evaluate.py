"""Scoring networks (any model kind) on sequential-MNIST digits: cross-entropy, accuracy, fitness.

Which digits: training batches are drawn (with replacement) from the train split by their seed
keys; the validation stream (:data:`es_l2l.seeds.STREAM_VALIDATION`) takes a fixed random subset
of the val split (the same digits at every validation), the test stream one of the test split. Each split is read
and encoded once per process (:func:`split`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NamedTuple

import torch

from es_l2l.families.base import Objective
from es_l2l.families.smnist import task as sm
from es_l2l.families.smnist.data import Digits, first_per_class, load_digits
from es_l2l.seeds import STREAM_TEST, STREAM_VALIDATION, SeedKey, generator

if TYPE_CHECKING:
    from es_l2l.context import RunContext
    from es_l2l.families.smnist.config import SMNISTTaskConfig

OBJECTIVE = Objective("val_accuracy", maximize=True, label="val accuracy", digits=4)


class SMNISTEval(NamedTuple):
    fitness: torch.Tensor  # (P,) minus (cross-entropy + rate regulariser)
    cross_entropy: torch.Tensor  # (P,)
    accuracy: torch.Tensor  # (P,)
    rate_hz: torch.Tensor  # (P,)
    right: torch.Tensor  # (P, B) 1.0 where the digit was classified right
    neuron_steps: int

    def summary(self) -> dict[str, float]:
        return {
            "train_accuracy_mean": float(self.accuracy.mean()),
            "train_cross_entropy_mean": float(self.cross_entropy.mean()),
            "rate_hz": float(self.rate_hz.mean()),
        }

    def light(self) -> "SMNISTEval":
        return self._replace(right=self.right.new_zeros(self.right.shape[0], 0))


@functools.lru_cache(maxsize=8)
def _split(source: str, split_name: str, data_dir: str | None, n_val: int, n_train: int | None) -> Digits:
    digits = load_digits(source, split_name, data_dir, n_val)
    return digits if n_train is None else first_per_class(digits, n_train)


def split(task, name: str) -> Digits:
    """The ``name`` split ("train", "val", "test") of the task's digit source, loaded once per process
    (the train split cut to ``task.n_train`` digits where that is set)."""
    return _split(task.source, name, task.data_dir, task.n_val, task.n_train if name == "train" else None)  # one cached val/test


def digit_batch(task: SMNISTTaskConfig, key: SeedKey, batch: int) -> sm.SMNISTBatch:
    """The digits named by ``key`` (see the module doc)."""
    key = SeedKey(*key)
    if key.stream in (STREAM_VALIDATION, STREAM_TEST):
        digits = split(task, "val" if key.stream == STREAM_VALIDATION else "test")
        order = torch.randperm(len(digits), generator=generator(*key.keys()))  # the splits are sorted by class
        return sm.make_batch(task, digits, order[: min(batch, len(digits))].sort().values)
    return sm.sample(task, split(task, "train"), generator(*key.keys()), batch)


def evaluate_batch(ctx: RunContext, params, batch: sm.SMNISTBatch, record_spikes: bool = False):
    out = ctx.simulate(params, batch.x, readout_steps=batch.readout_steps, record_spikes=record_spikes)
    ce = sm.cross_entropy(out.y, batch.labels)
    right = (sm.class_logits(out.y).argmax(dim=-1) == batch.labels.to(out.y.device)).float()
    rate, penalty = ctx.rate_terms(out)
    pop, b, n = out.spike_count.shape
    ev = SMNISTEval(fitness=-(ce + penalty), cross_entropy=ce, accuracy=right.mean(dim=1), rate_hz=rate, right=right,
                    neuron_steps=pop * b * n * out.n_steps)
    return ev, out


def evaluate_params(task: SMNISTTaskConfig, ctx: RunContext, params, key: SeedKey, batch: int) -> SMNISTEval:
    return evaluate_batch(ctx, params, digit_batch(task, key, batch))[0]
