"""Fitness of a population on a batch of tasks: one simulation call for all members.

Shared by every outer loop. ``evaluate`` is a pure function of (genomes, task seed): a restarted
worker that repeats an evaluation gets the same numbers. Each family has its own result type
(:class:`TeacherEval`, :class:`MazeEval`); both carry ``fitness`` (P,), ``rate_hz`` (P,) and
``neuron_steps`` and say how to summarise themselves for the status dict.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from es_l2l.config import ExperimentConfig
from es_l2l.genome import Genome
from es_l2l.snn import LSNNParams, firing_rate_hz, rate_regulariser, rollout
from es_l2l.tasks import maze, teacher
from es_l2l.tasks.base import STREAM_TRAIN, generator


class TeacherEval(NamedTuple):
    fitness: torch.Tensor  # (P,) minus the loss
    mse: torch.Tensor  # (P,) over all trials and tasks
    mse_per_trial: torch.Tensor  # (P, n_trials) averaged over tasks
    rate_hz: torch.Tensor  # (P,) mean firing rate
    predictions: torch.Tensor  # (P, B, n_trials)
    neuron_steps: int  # P * B * N * T simulated

    def summary(self) -> dict[str, float]:
        return {"train_mse_mean": float(self.mse.mean()), "rate_hz": float(self.rate_hz.mean())}


class MazeEval(NamedTuple):
    fitness: torch.Tensor  # (P,) mean total reward per episode, minus the rate regulariser
    reward: torch.Tensor  # (P,) mean total reward per episode
    found: torch.Tensor  # (P,) share of episodes in which the goal was reached at least once
    first_find: torch.Tensor  # (P,) mean moves to the first goal (episodes that found it)
    later_trip: torch.Tensor  # (P,) mean moves per trip after the first goal (episodes with 2+ finds)
    rate_hz: torch.Tensor  # (P,) mean firing rate
    neuron_steps: int

    def summary(self) -> dict[str, float]:
        return {"train_reward_mean": float(self.reward.mean()), "rate_hz": float(self.rate_hz.mean())}


Evaluation = TeacherEval | MazeEval


def concat(evals: list[Evaluation]) -> Evaluation:
    """Member-wise concatenation of several evaluations of one family (``neuron_steps`` add up)."""
    kind = type(evals[0])
    return kind(*[sum(col) if isinstance(col[0], int) else torch.cat(col) for col in zip(*evals)])


def detach(ev: Evaluation) -> Evaluation:
    return type(ev)(*(t.detach() if isinstance(t, torch.Tensor) else t for t in ev))


def maze_eval(cfg: ExperimentConfig, ep) -> MazeEval:
    """Score an :class:`es_l2l.agent.Episode` of ``P`` agents on ``B`` mazes."""
    from es_l2l.tasks.maze_baselines import episode_means

    reward = ep.total_reward().mean(dim=1)
    found, first_find, later_trip = episode_means(ep.reached.detach())
    rate = firing_rate_hz(ep.spike_count, cfg.task.n_steps * cfg.task.ms_per_step, cfg.model.dt)
    penalty = cfg.model.rate_reg * rate_regulariser(rate, cfg.model.rate_target_hz)
    return MazeEval(
        fitness=reward - penalty,
        reward=reward,
        found=found,
        first_find=first_find,
        later_trip=later_trip,
        rate_hz=rate.mean(dim=1),
        neuron_steps=ep.neuron_steps,
    )


def in_search_curriculum(cfg: ExperimentConfig, generation: int) -> bool:
    """True while training generation (or A2C step) ``generation``, counted from 1, plays relocating goals."""
    return cfg.family == "maze" and generation <= cfg.task.search_curriculum


def maze_batch(cfg: ExperimentConfig, seed_keys: tuple[int, ...], batch: int) -> tuple[maze.Mazes, torch.Generator]:
    """The mazes named by ``seed_keys`` and the generator of their episodes' draws (input spikes, actions).

    Training mazes ``(seed, STREAM_TRAIN, generation, ...)`` relocate their goal after every find
    while ``generation <= task.search_curriculum`` (generations and steps count from 1); every
    other stream plays the task family.
    """
    relocate = len(seed_keys) > 2 and seed_keys[1] == STREAM_TRAIN and in_search_curriculum(cfg, seed_keys[2])
    mazes = maze.sample_mazes(cfg.task, generator(*seed_keys), batch, cfg.task.balanced_goals, relocate=relocate)
    return mazes, generator(*seed_keys, 1)


def play_params(
    cfg: ExperimentConfig, params: LSNNParams, seed_keys: tuple[int, ...], batch: int, greedy: bool | None = None, record_spikes: bool = False
):
    """Closed-loop episodes of ``P`` networks on the mazes of ``seed_keys`` -> :class:`es_l2l.agent.Episode`."""
    from es_l2l.agent import play

    mazes, gen = maze_batch(cfg, seed_keys, batch)
    greedy = cfg.task.policy == "greedy" if greedy is None else greedy
    return play(cfg.task, cfg.model, params, mazes, gen, greedy=greedy, record_spikes=record_spikes)


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
) -> Evaluation:
    """Fitness of (P, D) genomes on the task batch derived from ``seed_keys``."""
    params = genome.params(vectors.to(device=device, dtype=torch.float32).as_subclass(torch.Tensor))
    if cfg.family == "maze":
        return maze_eval(cfg, play_params(cfg, params, seed_keys, batch or cfg.task.batch_size))
    tasks = task_batch(cfg, seed_keys, batch or cfg.task.batch_size)
    return evaluate_params(cfg, params, tasks)
