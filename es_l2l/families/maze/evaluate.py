"""Scoring agents on maze episodes: reward, finds, exploitation, fitness; and the search curriculum."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from es_l2l.families.base import Objective
from es_l2l.families.maze import env as maze
from es_l2l.families.maze.baselines import episode_means
from es_l2l.seeds import STREAM_TRAIN, SeedKey, generator

if TYPE_CHECKING:
    from es_l2l.context import RunContext
    from es_l2l.families.maze.config import MazeConfig

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


def maze_eval(ctx: RunContext, ep) -> MazeEval:
    """Score an :class:`es_l2l.families.maze.agent.Episode` of ``P`` agents on ``B`` mazes."""
    reward = ep.total_reward().mean(dim=1)
    found, first_find, later_trip = episode_means(ep.reached.detach())
    rate, penalty = ctx.rate_terms(ep)  # the model kind's rate regulariser (none without spikes)
    return MazeEval(
        fitness=reward - penalty,
        reward=reward,
        found=found,
        first_find=first_find,
        later_trip=later_trip,
        rate_hz=rate,
        neuron_steps=ep.neuron_steps,
    )


def in_search_curriculum(task: MazeConfig, generation: int) -> bool:
    """True while training generation (or A2C step) ``generation``, counted from 1, plays relocating goals."""
    return generation <= task.search_curriculum


def maze_batch(task: MazeConfig, key: SeedKey, batch: int) -> tuple[maze.Mazes, torch.Generator]:
    """The mazes named by ``key`` and the generator of their episodes' draws (input spikes, actions).

    Training mazes ``(seed, STREAM_TRAIN, generation, ...)`` relocate their goal after every find
    while ``generation <= task.search_curriculum`` (generations and steps count from 1); every
    other stream plays the task family.
    """
    key = SeedKey(*key)
    relocate = key.stream == STREAM_TRAIN and key.generation is not None and in_search_curriculum(task, key.generation)
    mazes = maze.sample_mazes(task, generator(*key.keys()), batch, task.balanced_goals, relocate=relocate)
    return mazes, generator(*key.keys(), 1)


def play_params(
    task: MazeConfig,
    ctx: RunContext,
    params,
    key: SeedKey,
    batch: int,
    greedy: bool | None = None,
    record_spikes: bool = False,
    record_inputs: bool = False,
):
    """Closed-loop episodes of ``P`` networks (any model kind with a closed-loop stepper) on the
    mazes of ``key`` -> :class:`es_l2l.families.maze.agent.Episode`."""
    from es_l2l.families.maze.agent import play

    mazes, gen = maze_batch(task, key, batch)
    greedy = task.policy == "greedy" if greedy is None else greedy
    return play(task, ctx, params, mazes, gen, greedy=greedy, record_spikes=record_spikes, record_inputs=record_inputs)
