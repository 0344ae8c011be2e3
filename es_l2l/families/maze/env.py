"""Learning from rewards: meta-RL navigation in grid mazes (Bellec et al. 2018, Fig. 3 style).

A maze is a ``rows x cols`` grid (default 4 x 5) with cells numbered ``i = r * cols + c``. The
goal is one of the four corners, unknown to the agent. An episode has ``n_steps`` moves:

- actions ``a`` in {0 up, 1 down, 2 left, 3 right}; the cell moved into is
  ``(clip(r + dr_a, 0, rows - 1), clip(c + dc_a, 0, cols - 1))``, so a move into the border
  leaves the agent in place;
- reward ``+1`` if that cell is the goal, after which the agent is put in the next pre-drawn
  respawn cell (never the goal; the goal stays), else ``-0.1`` (bumps into the border included);
- the start cell and every respawn cell are uniform over the ``rows * cols - 1`` non-goal cells.

All randomness of a maze (goal, start, the sequence of up to ``n_steps`` respawn cells) is drawn
once by :func:`sample_mazes` from an explicit generator, so :func:`step` draws nothing: a maze
plays out the same for every population member and whatever the batch layout. :func:`reset`
broadcasts ``B`` mazes to any leading shape, e.g. ``(P,)`` members -> state ``(P, B)``.
``sample_mazes(..., relocate=True)`` draws the search curriculum's mazes (not the family): the
goal moves to a pre-drawn corner after every find (``task.search_curriculum``).

Network input each environment step (:func:`input_probabilities`): one-hot channels, each of
``k = neurons_per_channel`` neurons firing at ``rate_hz`` while active, for ``ms_per_step`` ms:

    neurons [0, C*k)                    current position (C channels, ``task.position_code``):
                                        cell: one per cell, C = rows*cols;
                                        rowcol: one per row then one per column, C = rows+cols;
                                        both: the cell channels, then the row and column ones
    next 4k                             previous action (silent at the first step)
    next 3k                             previous reward: +1, -0.1, none (first step)

``n_in = (C + 7) * k``; nothing tells the agent where the goal is.

Public API: ``MazeConfig`` (es_l2l.config), ``Mazes``, ``MazeState``, ``sample_mazes``,
``reset``, ``step``, ``is_done``, ``move``, ``corners``, ``n_inputs``, ``position_channels``,
``position_code``, ``mirror_permutations``, ``input_probabilities``, ``input_spikes``. Baselines live in
:mod:`es_l2l.families.maze.baselines`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from es_l2l.families.maze.config import MazeConfig

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
N_ACTIONS = 4
GOAL_REWARD = 1.0
MOVE_REWARD = -0.1
_DR = (-1, 1, 0, 0)  # row change per action
_DC = (0, 0, -1, 1)  # column change per action


class Mazes(NamedTuple):
    """``B`` mazes (any shape ``S``): everything random about an episode, drawn up front."""

    goal: torch.Tensor  # (*S,) goal cell, a corner
    start: torch.Tensor  # (*S,) start cell, not the goal
    respawn: torch.Tensor  # (*S, n_steps) cell after the j-th goal reached, not the goal
    next_goal: torch.Tensor | None = None  # (*S, n_steps) goal after the j-th find (relocating goal only)


class MazeState(NamedTuple):
    """Environment state, all tensors with the same leading batch shape ``S``."""

    pos: torch.Tensor  # (*S,) long, current cell
    goal: torch.Tensor  # (*S,) long, goal cell
    t: torch.Tensor  # (*S,) long, moves made so far
    prev_action: torch.Tensor  # (*S,) long, -1 before the first move
    prev_reward: torch.Tensor  # (*S,) float, 0 before the first move
    n_found: torch.Tensor  # (*S,) long, goals reached so far (index of the next respawn cell)
    respawn: torch.Tensor  # (*S, n_steps) long, pre-drawn respawn cells
    next_goal: torch.Tensor | None = None  # (*S, n_steps) long, goal after the j-th find; None: it stays


def corners(task: MazeConfig) -> torch.Tensor:
    """The four corner cells (4,): top-left, top-right, bottom-left, bottom-right."""
    last = task.rows * task.cols - 1
    return torch.tensor([0, task.cols - 1, last - (task.cols - 1), last])


def position_channels(task: MazeConfig) -> int:
    """Channels of the position code: rows * cols (``cell``), rows + cols (``rowcol``) or both."""
    cells, lines = task.rows * task.cols, task.rows + task.cols
    return {"cell": cells, "rowcol": lines, "both": cells + lines}[task.position_code]


def n_inputs(task: MazeConfig) -> int:
    return (position_channels(task) + N_ACTIONS + 3) * task.neurons_per_channel


def position_code(task: MazeConfig, pos: torch.Tensor) -> torch.Tensor:
    """``(*S,)`` cells -> ``(*S, position_channels)`` 0/1 channels (see ``MazeConfig.position_code``)."""
    one_hot = torch.nn.functional.one_hot
    parts = []
    if task.position_code in ("cell", "both"):
        parts.append(one_hot(pos, task.rows * task.cols))
    if task.position_code in ("rowcol", "both"):
        parts += [one_hot(pos // task.cols, task.rows), one_hot(pos % task.cols, task.cols)]
    return torch.cat(parts, dim=-1)


def mirror_permutations(task: MazeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Index maps of the left-right mirror ``c -> cols - 1 - c``: inputs ``(n_in,)`` and readout ``(5,)``.

    Input neuron ``perm_in[j]`` of the mirrored maze plays the role of neuron ``j``: position
    channels move to the mirrored cell (column), the left and right action channels swap, the
    reward channels stay. The readout swaps the left and right logits; up, down and the value
    stay. Both maps are involutions.
    """
    cells = torch.arange(task.rows * task.cols)
    mirrored = (cells // task.cols) * task.cols + (task.cols - 1 - cells % task.cols)
    channels = []
    if task.position_code in ("cell", "both"):
        channels.append(mirrored)
    if task.position_code in ("rowcol", "both"):
        offset = sum(len(c) for c in channels)
        channels += [offset + torch.arange(task.rows), offset + task.rows + torch.arange(task.cols).flip(0)]
    n_pos = position_channels(task)
    actions = torch.tensor([UP, DOWN, RIGHT, LEFT])
    channels += [n_pos + actions, n_pos + N_ACTIONS + torch.arange(3)]
    channel = torch.cat(channels)
    k = task.neurons_per_channel
    perm_in = (channel.unsqueeze(-1) * k + torch.arange(k)).reshape(-1)
    return perm_in, torch.cat([actions, torch.tensor([N_ACTIONS])])


def _non_goal_cells(task: MazeConfig, goal: torch.Tensor, gen: torch.Generator, extra: tuple[int, ...]) -> torch.Tensor:
    """Cells uniform over the non-goal cells: draw ``u`` in ``[0, n - 2]`` and skip the goal."""
    u = torch.randint(task.rows * task.cols - 1, goal.shape + extra, generator=gen)
    g = goal.reshape(goal.shape + (1,) * len(extra))
    return u + (u >= g).long()


def sample_mazes(task: MazeConfig, gen: torch.Generator, n: int, balanced: bool = False, relocate: bool = False) -> Mazes:
    """``n`` mazes; a pure function of the generator state (goal, then start, then respawns).

    ``relocate``: a training curriculum, not the task family. After the ``j``-th find the goal
    moves to ``next_goal[j]``, a corner drawn uniformly (it may stay), and the ``j``-th respawn
    cell avoids that new goal. Nothing can be exploited beyond chance, so the best policy is a
    fast search of all four corners. These draws come after the others, so the goal and start
    cells do not depend on ``relocate``.

    ``balanced``: the batch holds every corner equally often (``n / 4`` each when ``n`` is a
    multiple of 4; corners in random order), while each maze's goal stays uniform over the four.
    A batch of 16 mazes then never lacks a corner, which removes most of the batch-to-batch
    variance of the fitness.
    """
    if balanced:
        which = (torch.randperm(n, generator=gen) + torch.randint(4, (1,), generator=gen)) % 4
    else:
        which = torch.randint(4, (n,), generator=gen)
    goal = corners(task)[which]
    start = _non_goal_cells(task, goal, gen, ())
    respawn = _non_goal_cells(task, goal, gen, (task.n_steps,))
    if not relocate:
        return Mazes(goal=goal, start=start, respawn=respawn)
    next_goal = corners(task)[torch.randint(4, (n, task.n_steps), generator=gen)]
    return Mazes(goal=goal, start=start, respawn=_non_goal_cells(task, next_goal, gen, ()), next_goal=next_goal)


def reset(task: MazeConfig, mazes: Mazes, batch_shape: tuple[int, ...] = ()) -> MazeState:
    """Initial state of shape ``batch_shape + mazes.goal.shape``: the same mazes for every leading index."""
    shape = tuple(batch_shape) + tuple(mazes.goal.shape)
    goal = mazes.goal.expand(shape)
    respawn = mazes.respawn.expand(shape + (task.n_steps,))
    zeros = torch.zeros(shape, dtype=torch.long)
    return MazeState(
        pos=mazes.start.expand(shape).clone(),
        goal=goal,
        t=zeros,
        prev_action=zeros - 1,
        prev_reward=torch.zeros(shape),
        n_found=zeros,
        respawn=respawn,
        next_goal=None if mazes.next_goal is None else mazes.next_goal.expand(shape + (task.n_steps,)),
    )


def move(task: MazeConfig, pos: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """The cell moved into: ``(clip(r + dr_a), clip(c + dc_a))`` as a cell index, same shape as ``pos``."""
    r = (pos // task.cols + torch.tensor(_DR)[action]).clamp(0, task.rows - 1)
    c = (pos % task.cols + torch.tensor(_DC)[action]).clamp(0, task.cols - 1)
    return r * task.cols + c


def is_done(task: MazeConfig, state: MazeState) -> torch.Tensor:
    """True where the episode's ``n_steps`` moves are used up."""
    return state.t >= task.n_steps


def step(task: MazeConfig, state: MazeState, action: torch.Tensor) -> tuple[MazeState, torch.Tensor, torch.Tensor]:
    """One move of every maze in the batch; draws nothing (respawns were drawn by :func:`sample_mazes`).

    Returns ``(state, reward, reached_goal)``. Where the episode is already over the state is
    left unchanged and the reward is 0.
    """
    action = action.long()
    live = ~is_done(task, state)
    target = move(task, state.pos, action)
    reached = (target == state.goal) & live
    idx = state.n_found.clamp(max=task.n_steps - 1).unsqueeze(-1)
    respawn = state.respawn.gather(-1, idx).squeeze(-1)
    goal = state.goal
    if state.next_goal is not None:
        goal = torch.where(reached, state.next_goal.gather(-1, idx).squeeze(-1), goal)
    reward = torch.where(reached, GOAL_REWARD, MOVE_REWARD) * live
    new = MazeState(
        pos=torch.where(live, torch.where(reached, respawn, target), state.pos),
        goal=goal,
        t=state.t + live.long(),
        prev_action=torch.where(live, action, state.prev_action),
        prev_reward=torch.where(live, reward, state.prev_reward),
        n_found=state.n_found + reached.long(),
        respawn=state.respawn,
        next_goal=state.next_goal,
    )
    return new, reward, reached


def input_probabilities(task: MazeConfig, state: MazeState, dt: float = 1.0) -> torch.Tensor:
    """Spike probability per ms of every input neuron: ``(*S,) -> (*S, n_in)`` (layout in the module doc)."""
    first = state.prev_action < 0
    reward_channel = torch.where(first, 2, torch.where(state.prev_reward > 0, 0, 1))
    channels = torch.cat(
        [
            position_code(task, state.pos),
            torch.nn.functional.one_hot(state.prev_action.clamp(min=0), N_ACTIONS) * (~first).unsqueeze(-1),
            torch.nn.functional.one_hot(reward_channel, 3),
        ],
        dim=-1,
    ).to(torch.float32)  # (*S, position_channels + 7)
    p = min(task.rate_hz * dt * 1e-3, 1.0)
    return channels.repeat_interleave(task.neurons_per_channel, dim=-1) * p


def input_spikes(task: MazeConfig, state: MazeState, gen: torch.Generator, dt: float = 1.0) -> torch.Tensor:
    """Bernoulli input spikes for one environment step: ``(*S, ms_per_step, n_in)``."""
    prob = input_probabilities(task, state, dt).unsqueeze(-2).expand(*state.pos.shape, task.ms_per_step, n_inputs(task))
    return (torch.rand(prob.shape, generator=gen) < prob).to(torch.float32)
