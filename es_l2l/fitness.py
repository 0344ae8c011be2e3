"""Fitness of a population on a batch of tasks: one simulation call for all members.

Shared by every outer loop. ``evaluate`` is a pure function of (genomes, task seed): a restarted
worker that repeats an evaluation gets the same numbers.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from es_l2l.config import ExperimentConfig
from es_l2l.genome import Genome
from es_l2l.snn import LSNNParams, firing_rate_hz, rate_regulariser, rollout
from es_l2l.tasks import teacher
from es_l2l.tasks.base import generator


class TeacherEval(NamedTuple):
    fitness: torch.Tensor  # (P,) minus the loss
    mse: torch.Tensor  # (P,) over all trials and tasks
    mse_per_trial: torch.Tensor  # (P, n_trials) averaged over tasks
    rate_hz: torch.Tensor  # (P,) mean firing rate
    predictions: torch.Tensor  # (P, B, n_trials)
    neuron_steps: int  # P * B * N * T simulated


def evaluate_params(cfg: ExperimentConfig, params: LSNNParams, tasks: teacher.TeacherTasks) -> TeacherEval:
    """Simulate ``P`` networks on ``B`` teacher episodes and score them (differentiable)."""
    out = rollout(
        params,
        tasks.spikes.to(params.w_in.device),
        n_ref=cfg.model.n_ref,
        gamma=cfg.model.gamma,
        dt=cfg.model.dt,
        readout_steps=tasks.readout_steps,
    )
    pred = teacher.predictions(cfg.task, out.y)  # (P, B, n_trials)
    err = (pred - tasks.y.to(pred.device)).pow(2)
    mse_per_trial = err.mean(dim=1)
    mse = mse_per_trial.mean(dim=1)
    rate = firing_rate_hz(out.spike_count, out.n_steps, cfg.model.dt)  # (P, N)
    loss = mse + cfg.model.rate_reg * rate_regulariser(rate, cfg.model.rate_target_hz)
    pop, batch, n = out.spike_count.shape
    return TeacherEval(
        fitness=-loss,
        mse=mse,
        mse_per_trial=mse_per_trial,
        rate_hz=rate.mean(dim=1),
        predictions=pred,
        neuron_steps=pop * batch * n * out.n_steps,
    )


def task_batch(cfg: ExperimentConfig, seed_keys: tuple[int, ...], batch: int) -> teacher.TeacherTasks:
    """The tasks named by ``seed_keys``: the same keys always give the same tasks."""
    return teacher.sample_tasks(cfg.task, generator(*seed_keys), batch)


@torch.no_grad()
def evaluate(
    cfg: ExperimentConfig,
    genome: Genome,
    vectors: torch.Tensor,
    seed_keys: tuple[int, ...],
    batch: int | None = None,
    device: str = "cpu",
) -> TeacherEval:
    """Fitness of (P, D) genomes on the task batch derived from ``seed_keys``."""
    tasks = task_batch(cfg, seed_keys, batch or cfg.task.batch_size)
    params = genome.params(vectors.to(device=device, dtype=torch.float32))
    return evaluate_params(cfg, params, tasks)
