"""A2C through the spiking dynamics: the maze family's gradient loss (Bellec et al. 2018, Fig. 3).

The agent samples its actions from the softmax policy; the loss of an episode batch is

    L = mean_t[ -log pi(a_t | h_t) * A_t ]  +  value_weight * mean_t[ (R_t - V_t)^2 ]
        -  entropy_weight * mean_t[ H(pi(. | h_t)) ]

with discounted returns ``R_t = sum_{k >= 0} discount^k r_{t+k}`` (to the episode's end) and
advantages ``A_t = R_t - V_t`` (the critic's value held fixed in the policy term; optionally
scaled to unit variance over the batch). Gradients flow through the spikes by the
pseudo-derivative, as for any family's gradient loss; :class:`es_l2l.outer.bptt.GradientTrainer`
owns the optimiser, schedule, clipping and DEEP R. The settings live in the config's ``task.a2c``.
"""

from __future__ import annotations

import torch

from typing import TYPE_CHECKING

from es_l2l.families.maze.agent import policy
from es_l2l.families.maze.evaluate import MazeEval, maze_eval, play_params

if TYPE_CHECKING:
    from es_l2l.context import RunContext
    from es_l2l.families.maze.config import MazeConfig
    from es_l2l.seeds import SeedKey


def discounted_returns(reward: torch.Tensor, discount: float) -> torch.Tensor:
    """``R_t = r_t + discount * R_{t+1}`` along the last axis, ``R_T = 0`` after the episode."""
    out, running = torch.empty_like(reward), torch.zeros_like(reward[..., 0])
    for t in range(reward.shape[-1] - 1, -1, -1):  # loop over time, not members
        running = reward[..., t] + discount * running
        out[..., t] = running
    return out


def a2c_loss(task: MazeConfig, ctx: RunContext, params, key: SeedKey, batch: int) -> tuple[torch.Tensor, MazeEval, dict[str, float]]:
    """The A2C loss of one sampled episode per maze (differentiable), its evaluation and loss terms."""
    a = task.a2c
    ep = replayed_episode(task, ctx, params, key, batch)
    value = ep.value
    ret = discounted_returns(ep.reward.to(value), a.discount)
    adv = ret - value.detach()
    if a.normalize_advantages:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    policy_loss = -(ep.logp * adv).mean()
    value_loss = (ret - value).pow(2).mean()
    entropy = ep.entropy.mean()
    _, penalty = ctx.rate_terms(ep)  # (P,) the model kind's rate regulariser (zero without spikes)
    loss = policy_loss + a.value_weight * value_loss - a.entropy_weight * entropy
    loss = loss + penalty.sum()
    terms = {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "entropy": entropy.item()}
    return loss, maze_eval(ctx, _detach(ep)), terms


def replayed_episode(task: MazeConfig, ctx: RunContext, params, key: SeedKey, batch: int):
    """One sampled episode per maze, differentiable in ``params``.

    Where the model kind's open-loop gradient path applies (the LSNN's fused backward with
    ``bptt.backend`` auto or kernel, on CPU; torch's LSTM), the agent plays without a graph and
    records the input spikes it met; the episode is then replayed as an open-loop rollout of those
    inputs (``ctx.simulate``: for the LSNN the fused forward and backward of
    :mod:`es_l2l.snn.fused_grad`), which gives the readouts at every environment step with their
    exact gradients. The actions are the played ones: the inputs depend on the parameters only
    through discrete actions, which carry no gradient in A2C either way. Elsewhere the closed loop
    is recorded by autograd step by step.
    """
    backend = ctx.sim.backend
    if backend == "autograd":
        return play_params(task, ctx, params, key, batch, greedy=False)
    with torch.no_grad():
        ep = play_params(task, ctx, type(params)(*(t.detach() for t in params)), key, batch, greedy=False, record_inputs=True)
    why = ctx.model.replay_unsupported(params, ep.inputs)
    if why is not None:
        if backend == "kernel":
            raise ValueError(f"bptt.backend=kernel does not apply here ({why}); set bptt.backend=auto or autograd")
        return play_params(task, ctx, params, key, batch, greedy=False)
    ms = task.ms_per_step
    ends = torch.arange(ms - 1, ep.inputs.shape[2], ms)  # the last ms of every environment step
    out = ctx.simulate(params, ep.inputs, readout_steps=ends)  # (P, B, T, 5), differentiable
    logp_all, value = policy(out.y, task.temperature)
    logp = logp_all.gather(-1, ep.action.to(logp_all.device).unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return ep._replace(logp=logp, entropy=entropy, value=value, spike_count=out.spike_count, inputs=None)


def _detach(ep):
    return type(ep)(*(t.detach() if isinstance(t, torch.Tensor) else t for t in ep))
