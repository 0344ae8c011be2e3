"""Scoring networks on teacher episodes: MSE per trial, fitness, the status and validation scalars."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from es_l2l.families.base import Objective
from es_l2l.families.teacher import tasks as teacher
from es_l2l.seeds import generator
from es_l2l.models import rate_terms, simulate

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig


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


def task_batch(cfg: ExperimentConfig, seed_keys: tuple[int, ...], batch: int) -> teacher.TeacherTasks:
    """The tasks named by ``seed_keys``: the same keys always give the same tasks."""
    return teacher.sample_tasks(cfg.task, generator(*seed_keys), batch)


def evaluate_params(cfg: ExperimentConfig, params, tasks: teacher.TeacherTasks) -> TeacherEval:
    """Simulate ``P`` networks (any model kind) on ``B`` teacher episodes and score them (differentiable)."""
    out = simulate(cfg, params, tasks.spikes, readout_steps=tasks.readout_steps)
    pred = teacher.predictions(cfg.task, out.y)  # (P, B, n_trials)
    err = (pred - tasks.y.to(pred.device)).pow(2)
    mse_per_trial = err.mean(dim=1)
    mse = mse_per_trial.mean(dim=1)
    rate, penalty = rate_terms(cfg, out)
    loss = mse + penalty
    pop, batch, n = out.spike_count.shape
    return TeacherEval(
        fitness=-loss,
        mse=mse,
        mse_per_trial=mse_per_trial,
        rate_hz=rate,
        predictions=pred,
        neuron_steps=pop * batch * n * out.n_steps,
    )
