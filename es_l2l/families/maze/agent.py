"""The network as a meta-RL agent: closed-loop episodes in the maze family.

One call plays ``P`` networks on ``B`` mazes for a whole episode. Every environment step the
network sees its position, previous action and previous reward as Poisson spikes for
``task.ms_per_step`` ms (:func:`es_l2l.families.maze.env.input_spikes`'s encoding), then its readout
(the LSNN's ``W_out zf + b_out``; 5 outputs) gives the policy logits (4 actions, softmax) and the
value. The network steps through its model kind's closed-loop stepper
(:meth:`es_l2l.models.base.ModelKind.stepper`), so any kind that has one plays.

The random draws of an episode (input spikes, action sampling) come from one generator per
maze batch and have shape ``(B, ...)``: every member meets the same draws (common random
numbers), and the numbers never depend on how the population is split across workers. The
input noise is shared by all members, a member's spikes depend on its own state: input neuron
``j`` fires where ``u_j < p_j(state)``. Sampling inverts the policy's CDF at a shared uniform.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from es_l2l.families.maze import env as maze
from es_l2l.families.maze.config import MazeConfig
from es_l2l.families.maze.env import Mazes
if TYPE_CHECKING:
    from es_l2l.context import RunContext

N_OUT = maze.N_ACTIONS + 1  # four policy logits, then the value


class Episode(NamedTuple):
    """One episode of ``P`` agents on ``B`` mazes; time (environment steps) is the last axis."""

    pos: torch.Tensor  # (P, B, T) long, cell before each move
    action: torch.Tensor  # (P, B, T) long
    reward: torch.Tensor  # (P, B, T)
    reached: torch.Tensor  # (P, B, T) bool, the move reached the goal
    logp: torch.Tensor  # (P, B, T) log-probability of the action taken (differentiable)
    entropy: torch.Tensor  # (P, B, T) policy entropy
    value: torch.Tensor  # (P, B, T) value readout (differentiable)
    spike_count: torch.Tensor  # (P, B, N)
    spikes: torch.Tensor | None  # (P, B, T * ms_per_step, N) when recorded
    neuron_steps: int
    inputs: torch.Tensor | None = None  # (P, B, T * ms_per_step, n_in) input spikes, when recorded
    n_steps: int = 0  # simulation steps (T * ms_per_step): what firing rates divide by

    def total_reward(self) -> torch.Tensor:
        """(P, B) total reward per episode."""
        return self.reward.sum(-1)


def policy(out: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Readout (..., 5) -> log-probabilities (..., 4) of ``softmax(logits / temperature)`` and value (...)."""
    return torch.log_softmax(out[..., : maze.N_ACTIONS] / temperature, dim=-1), out[..., maze.N_ACTIONS]


def choose(logp: torch.Tensor, u: torch.Tensor, greedy: bool) -> torch.Tensor:
    """Actions from log-probabilities (P, B, 4): argmax, or the inverse CDF at shared uniforms ``u`` (B,)."""
    if greedy:
        return logp.argmax(-1)
    cdf = logp.detach().exp().cumsum(-1)
    return (cdf < u.unsqueeze(-1)).sum(-1).clamp(max=maze.N_ACTIONS - 1)


def play(
    task: MazeConfig,
    ctx: RunContext,
    params,
    mazes: Mazes,
    gen: torch.Generator,
    *,
    greedy: bool = False,
    record_spikes: bool = False,
    record_inputs: bool = False,
) -> Episode:
    """Play one episode of every maze with every member (differentiable when ``params`` need
    grad; otherwise on the C kernel where it applies, with the same numbers). ``record_inputs``
    keeps the input spikes the agent met, so that its episode can be replayed as an open-loop
    rollout (:func:`es_l2l.families.maze.a2c.a2c_loss` replays it through the fused backward)."""
    first = params[0]  # the first weight (P, n_in, ...) of any model kind: population, device, dtype
    pop, n_in = first.shape[0], maze.n_inputs(task)
    batch = mazes.goal.shape[0]
    device, dtype = first.device, first.dtype
    state = maze.reset(task, mazes, (pop,))
    cols: dict[str, list[torch.Tensor]] = {k: [] for k in ("pos", "action", "reward", "reached", "logp", "entropy", "value")}
    spikes, inputs = [], []
    net = ctx.model.stepper(ctx, params, batch)
    for _ in range(task.n_steps):
        prob = maze.input_probabilities(task, state, ctx.sim.dt).to(device)  # (P, B, n_in)
        u_in = torch.rand(batch, task.ms_per_step, n_in, generator=gen).to(device)
        x = (u_in < prob.unsqueeze(2)).to(dtype)  # (P, B, ms, n_in)
        z = net.advance(x, record_spikes=record_spikes)  # this step's ms: one kernel call without gradients
        if record_spikes:
            spikes.append(z)
        if record_inputs:
            inputs.append(x)
        out = net.readout()  # (P, B, 5)
        logp_all, value = policy(out, task.temperature)
        u_act = torch.rand(batch, generator=gen).to(device)
        action = choose(logp_all, u_act, greedy)
        cols["pos"].append(state.pos)
        state, reward, reached = maze.step(task, state, action.cpu())
        cols["action"].append(action.cpu())
        cols["reward"].append(reward)
        cols["reached"].append(reached)
        cols["logp"].append(logp_all.gather(-1, action.unsqueeze(-1)).squeeze(-1))
        cols["entropy"].append(-(logp_all.exp() * logp_all).sum(-1))
        cols["value"].append(value)
    stacked = {k: torch.stack(v, dim=-1) for k, v in cols.items()}
    n = net.spike_count.shape[-1]
    return Episode(
        **stacked,
        spike_count=net.spike_count,
        spikes=torch.cat(spikes, dim=2) if record_spikes else None,
        inputs=torch.cat(inputs, dim=2) if record_inputs else None,
        neuron_steps=pop * batch * n * task.n_steps * task.ms_per_step,
        n_steps=task.n_steps * task.ms_per_step,
    )
