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

from es_l2l.families.maze.evaluate import MazeEval, maze_eval, play_params
from es_l2l.snn import LSNNParams, firing_rate_hz, rate_regulariser

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig


def discounted_returns(reward: torch.Tensor, discount: float) -> torch.Tensor:
    """``R_t = r_t + discount * R_{t+1}`` along the last axis, ``R_T = 0`` after the episode."""
    out, running = torch.empty_like(reward), torch.zeros_like(reward[..., 0])
    for t in range(reward.shape[-1] - 1, -1, -1):  # loop over time, not members
        running = reward[..., t] + discount * running
        out[..., t] = running
    return out


def a2c_loss(
    cfg: ExperimentConfig, params: LSNNParams, seed_keys: tuple[int, ...], batch: int
) -> tuple[torch.Tensor, MazeEval, dict[str, float]]:
    """The A2C loss of one sampled episode per maze (differentiable), its evaluation and loss terms."""
    a = cfg.task.a2c
    ep = play_params(cfg, params, seed_keys, batch, greedy=False)
    value = ep.value
    ret = discounted_returns(ep.reward.to(value), a.discount)
    adv = ret - value.detach()
    if a.normalize_advantages:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    policy_loss = -(ep.logp * adv).mean()
    value_loss = (ret - value).pow(2).mean()
    entropy = ep.entropy.mean()
    rate = firing_rate_hz(ep.spike_count, cfg.task.n_steps * cfg.task.ms_per_step, cfg.model.dt)
    loss = policy_loss + a.value_weight * value_loss - a.entropy_weight * entropy
    loss = loss + cfg.model.rate_reg * rate_regulariser(rate, cfg.model.rate_target_hz).sum()
    terms = {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "entropy": entropy.item()}
    return loss, maze_eval(cfg, _detach(ep)), terms


def _detach(ep):
    return type(ep)(*(t.detach() if isinstance(t, torch.Tensor) else t for t in ep))
