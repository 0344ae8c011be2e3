"""Scoring networks on teacher episodes: MSE per trial, fitness, the status and validation scalars."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from es_l2l.families.base import Objective
from es_l2l.families.teacher import tasks as teacher
from es_l2l.seeds import STREAM_TRAIN, SeedKey, generator

if TYPE_CHECKING:
    from es_l2l.context import RunContext
    from es_l2l.families.teacher.config import TeacherConfig


# The report's predictor keys (its metric slugs, lsnn_meta_trained -> withheld/model/...); what the report
# shows names the model kind that was trained instead of "LSNN" (model_name, HeldOutReport.label).
LSNN_TRAINED, LSNN_UNTRAINED = "LSNN meta-trained", "LSNN generation 0"


def model_name(ctx: RunContext) -> str:
    """What the trained network is, in words: the kind's name for a model without spikes (``LSTM``),
    ``LIF network`` (spiking, no adaptive neuron) or ``LSNN``."""
    if not ctx.model.spiking:
        return ctx.model.name.upper()
    return "LIF network" if getattr(ctx.model_cfg, "n_alif", 1) == 0 else "LSNN"


# The validation metric that picks the best genome: MSE over the second half of each episode.
OBJECTIVE = Objective("val_mse_late", maximize=False, label="val MSE(late)", digits=4)


class TeacherEval(NamedTuple):
    fitness: torch.Tensor  # (P,) minus the loss
    mse: torch.Tensor  # (P,) over all trials and tasks
    mse_per_trial: torch.Tensor  # (P, n_trials) averaged over tasks
    rate_hz: torch.Tensor  # (P,) mean firing rate
    predictions: torch.Tensor  # (P, B, n_trials)
    neuron_steps: int  # P * B * N * T simulated

    def summary(self) -> dict[str, float]:
        return {"train_mse_mean": float(self.mse.mean()), "rate_hz": float(self.rate_hz.mean())}

    def light(self) -> "TeacherEval":
        """Without the per-task predictions (what a Ray worker sends back: O(P) traffic)."""
        return self._replace(predictions=self.predictions.new_zeros(self.predictions.shape[0], 0, 0))


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


def weighted_mse(mse_per_trial: torch.Tensor, late_weight: float) -> torch.Tensor:
    """(P, n_trials) -> (P,): the mean over trials with the second half's trials weighted ``late_weight``
    against 1 for the first half's (weights normalised to mean 1, so ``late_weight=1`` is the plain mean)."""
    n = mse_per_trial.shape[-1]
    w = torch.ones(n, dtype=mse_per_trial.dtype, device=mse_per_trial.device)
    w[n // 2 :] = late_weight
    return (mse_per_trial * (w / w.mean())).mean(dim=-1)


def is_training(key: SeedKey) -> bool:
    """True for the training stream's tasks ``(seed, STREAM_TRAIN, generation, ...)``."""
    return key.stream == STREAM_TRAIN and key.generation is not None


def in_shape_curriculum(task: TeacherConfig, key: SeedKey) -> bool:
    """True for training tasks ``(seed, STREAM_TRAIN, generation, ...)`` with ``generation <= task.shape_curriculum``."""
    return is_training(key) and key.generation <= task.shape_curriculum


def task_batch(task: TeacherConfig, key: SeedKey, batch: int, targets: teacher.Targets | None = None) -> teacher.TeacherTasks:
    """The tasks named by ``key``: the same key always gives the same tasks (offset-free
    during the shape curriculum's training steps). ``targets`` defaults to the training mix of
    fresh and frequent networks on the training stream and to fresh networks on every other stream
    (validation and test: model selection never sees the frequent ones)."""
    key = SeedKey(*key)
    if targets is None:
        targets = teacher.TARGETS_TRAINING if is_training(key) else teacher.TARGETS_FRESH
    return teacher.sample_tasks(task, generator(*key.keys()), batch, centered=in_shape_curriculum(task, key), targets=targets)


def evaluate_params(task: TeacherConfig, ctx: RunContext, params, tasks: teacher.TeacherTasks) -> TeacherEval:
    """Simulate ``P`` networks (any model kind) on ``B`` teacher episodes and score them (differentiable)."""
    out = ctx.simulate(params, tasks.spikes, readout_steps=tasks.readout_steps)
    pred = teacher.predictions(task, out.y)  # (P, B, n_trials)
    err = (pred - tasks.y.to(pred.device)).pow(2)
    mse_per_trial = err.mean(dim=1)
    mse = mse_per_trial.mean(dim=1)
    rate, penalty = ctx.rate_terms(out)
    fit = mse if task.late_weight == 1.0 else weighted_mse(mse_per_trial, task.late_weight)
    loss = fit + penalty
    pop, batch, n = out.spike_count.shape
    return TeacherEval(
        fitness=-loss,
        mse=mse,
        mse_per_trial=mse_per_trial,
        rate_hz=rate,
        predictions=pred,
        neuron_steps=pop * batch * n * out.n_steps,
    )
