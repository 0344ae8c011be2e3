"""Baselines for the maze family, played on the same mazes as the LSNN.

A policy here is ``act(state, memory) -> (action, memory)``: it sees the environment state (the
agent's position, previous action and previous reward, like the network; the oracle also reads
the goal) and carries its own memory between steps. :func:`rollout` plays one episode of every
maze in the batch.

- random: uniform actions from an explicit generator;
- oracle: knows the goal and walks a shortest path to it (rows first, then columns); each trip
  from a cell at Manhattan distance ``d`` takes ``d`` moves and earns ``1 - 0.1 (d - 1)``;
- explorer: knows the rules but not the goal. It rules out every corner it stands on without a
  reward (the start and respawn cells are never the goal), walks to the nearest corner not yet
  ruled out (Manhattan distance, ties to the lower corner index), and once it has been rewarded
  it knows the goal (the cell its last move led into) and walks shortest paths to it.

:func:`exploit_statistic` splits an episode into the search (moves until the first goal) and the
trips after it (mean moves per complete trip after the first goal).

Measured on the default family (4 x 5, 100 moves), 1,024 mazes from ``generator(0, STREAM_BASELINE)``,
random actions from ``generator(0, STREAM_BASELINE, 1)``; mean total reward per episode (+- s.e.),
moves to the first goal, mean moves per later trip (means over episodes where defined):

    random    -8.35 +- 0.04   first 36.8 (77 % of episodes find the goal at all)
    explorer  18.66 +- 0.09   first 6.75   later 3.68
    oracle    19.58 +- 0.08   first 3.71   later 3.68   (70 / 19 = 3.684 expected per trip)
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from es_l2l.families.maze import env as maze
from es_l2l.families.maze.config import MazeConfig
from es_l2l.families.maze.env import DOWN, LEFT, RIGHT, UP, MazeState, Mazes


class Trajectory(NamedTuple):
    """One episode of every maze in a batch ``S``; time is the last axis."""

    pos: torch.Tensor  # (*S, T) cell before each move
    action: torch.Tensor  # (*S, T)
    reward: torch.Tensor  # (*S, T)
    reached: torch.Tensor  # (*S, T) bool, the move reached the goal

    def total_reward(self) -> torch.Tensor:
        """Total reward per episode (*S,)."""
        return self.reward.sum(-1)


class ExploitStats(NamedTuple):
    first_find: torch.Tensor  # (*S,) moves until the first goal (inclusive); nan if never found
    later_trip: torch.Tensor  # (*S,) mean moves per complete trip after the first; nan if < 2 finds


Policy = Callable[[MazeState, object], tuple[torch.Tensor, object]]


def rollout(
    task: MazeConfig, mazes: Mazes, act: Policy, memory: object = None, batch_shape: tuple[int, ...] = ()
) -> Trajectory:
    """Play ``task.n_steps`` moves of every maze with policy ``act``."""
    state = maze.reset(task, mazes, batch_shape)
    pos, actions, rewards, reached = [], [], [], []
    for _ in range(task.n_steps):  # loop over time (not over members or mazes)
        action, memory = act(state, memory)
        pos.append(state.pos)
        state, r, hit = maze.step(task, state, action)
        actions.append(action)
        rewards.append(r)
        reached.append(hit)
    stack = lambda xs: torch.stack(xs, dim=-1)  # noqa: E731
    return Trajectory(stack(pos), stack(actions), stack(rewards), stack(reached))


def toward(task: MazeConfig, pos: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A shortest-path move from ``pos`` to ``target`` (rows first, then columns; any action if equal)."""
    dr = target // task.cols - pos // task.cols
    dc = target % task.cols - pos % task.cols
    horizontal = torch.where(dc > 0, RIGHT, LEFT)
    return torch.where(dr < 0, UP, torch.where(dr > 0, DOWN, horizontal))


def random_policy(gen: torch.Generator) -> Policy:
    def act(state: MazeState, memory: object):
        return torch.randint(maze.N_ACTIONS, state.pos.shape, generator=gen), memory

    return act


def oracle_policy(task: MazeConfig) -> Policy:
    def act(state: MazeState, memory: object):
        return toward(task, state.pos, state.goal), memory

    return act


class ExplorerMemory(NamedTuple):
    ruled_out: torch.Tensor  # (*S, 4) bool, corners known not to be the goal
    goal: torch.Tensor  # (*S,) long, the goal cell once found, else -1
    last_pos: torch.Tensor  # (*S,) long, position before the previous move, -1 at the start


def explorer_policy(task: MazeConfig) -> Policy:
    """Nearest corner not ruled out; after the first reward, shortest paths to the known goal."""
    corner_cells = maze.corners(task)

    def act(state: MazeState, memory: ExplorerMemory | None):
        if memory is None:
            shape = state.pos.shape
            none = torch.full(shape, -1)
            memory = ExplorerMemory(torch.zeros(shape + (4,), dtype=torch.bool), none, none)
        found_now = state.prev_reward > 0
        entered = maze.move(task, memory.last_pos.clamp(min=0), state.prev_action.clamp(min=0))
        goal = torch.where(found_now & (memory.goal < 0), entered, memory.goal)
        # Standing on a corner without having been rewarded for it: not the goal.
        ruled_out = memory.ruled_out | (state.pos.unsqueeze(-1) == corner_cells)
        r, c = state.pos // task.cols, state.pos % task.cols
        dist = (r.unsqueeze(-1) - corner_cells // task.cols).abs() + (c.unsqueeze(-1) - corner_cells % task.cols).abs()
        dist = torch.where(ruled_out, torch.iinfo(torch.long).max, dist)  # (*S, 4)
        nearest = corner_cells[dist.argmin(-1)]  # argmin takes the first of equal minima
        target = torch.where(goal >= 0, goal, nearest)
        return toward(task, state.pos, target), ExplorerMemory(ruled_out, goal, state.pos)

    return act


def play_baselines(task: MazeConfig, mazes: Mazes, gen: torch.Generator) -> dict[str, Trajectory]:
    """Random (actions from ``gen``), explorer and oracle on the same mazes."""
    return {
        "random": rollout(task, mazes, random_policy(gen)),
        "explorer": rollout(task, mazes, explorer_policy(task)),
        "oracle": rollout(task, mazes, oracle_policy(task)),
    }


def exploit_statistic(reached: torch.Tensor) -> ExploitStats:
    """Moves to the first goal vs mean moves per trip after it, from ``reached`` (*S, T).

    With goal times ``t_1 < ... < t_n`` (1-based move counts): ``first_find = t_1`` and
    ``later_trip = (t_n - t_1) / (n - 1)``; the unfinished trip at the episode end is ignored.
    """
    reached = reached.bool()
    steps = torch.arange(1, reached.shape[-1] + 1, dtype=torch.float64)
    n = reached.sum(-1)
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    first = torch.where(reached, steps, float("inf")).amin(-1)
    last = torch.where(reached, steps, 0.0).amax(-1)
    first_find = torch.where(n > 0, first, nan)
    later_trip = torch.where(n > 1, (last - first) / (n - 1).clamp(min=1), nan)
    return ExploitStats(first_find, later_trip)


def episode_means(reached: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Over the episodes (second-to-last axis) of ``reached`` (*S, B, T): the share with a find,
    and the mean :func:`exploit_statistic` (first find, later trip) where defined; each (*S,)."""
    stats = exploit_statistic(reached)
    found = reached.bool().any(-1).double().mean(-1)
    return found, stats.first_find.nanmean(-1), stats.later_trip.nanmean(-1)

