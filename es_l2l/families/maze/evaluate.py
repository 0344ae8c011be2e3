"""Scoring agents on maze episodes: reward, finds, exploitation, fitness; and the search curriculum."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from es_l2l.families.base import Objective
from es_l2l.families.maze import env as maze
from es_l2l.families.maze.baselines import episode_means
from es_l2l.seeds import STREAM_TRAIN, generator
from es_l2l.snn import LSNNParams, firing_rate_hz, rate_regulariser

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig

# The validation metric that picks the best genome: mean total reward per episode.
OBJECTIVE = Objective("val_reward", maximize=True, label="val reward", digits=2)


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


def maze_eval(cfg: ExperimentConfig, ep) -> MazeEval:
    """Score an :class:`es_l2l.families.maze.agent.Episode` of ``P`` agents on ``B`` mazes."""
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
    return generation <= cfg.task.search_curriculum


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
    cfg: ExperimentConfig,
    params: LSNNParams,
    seed_keys: tuple[int, ...],
    batch: int,
    greedy: bool | None = None,
    record_spikes: bool = False,
    record_inputs: bool = False,
):
    """Closed-loop episodes of ``P`` networks on the mazes of ``seed_keys`` -> :class:`es_l2l.families.maze.agent.Episode`."""
    from es_l2l.families.maze.agent import play

    mazes, gen = maze_batch(cfg, seed_keys, batch)
    greedy = cfg.task.policy == "greedy" if greedy is None else greedy
    return play(cfg.task, cfg.model, params, mazes, gen, greedy=greedy, record_spikes=record_spikes, record_inputs=record_inputs)
