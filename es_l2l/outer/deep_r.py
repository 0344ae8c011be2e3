"""DEEP R (Bellec, Kappel, Maass, Legenstein, "Deep rewiring", ICLR 2018) for one weight block.

Every potential connection ``k`` has a fixed sign ``s_k`` and a strength ``theta_k``. Exactly
``n_active`` connections are active at any time; the weight is ``w_k = s_k * theta_k`` when active
and 0 when dormant. After each gradient step the active strengths get an l1 pull and Gaussian
noise (``theta <- theta - lr * l1 + sqrt(2 lr T) * N(0, 1)``); a connection whose strength turns
negative goes dormant, and as many dormant connections, drawn uniformly, come alive with a tiny
strength. The number of active connections and every connection's sign never change. With Dale's
law the sign belongs to the presynaptic neuron (a row of ``w``): a fixed share is excitatory.

Pure functions on tensors; the randomness comes from explicit generators.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from pydantic import Field

from es_l2l.schema import Strict


class DeepRConfig(Strict):
    """DEEP R (Bellec et al., ICLR 2018): sparse, sign-preserving connectivity learned by rewiring."""

    enabled: bool = Field(False, description="rewire the listed weight blocks during BPTT")
    blocks: list[Literal["w_in", "w_rec"]] = Field(default_factory=lambda: ["w_rec"], description="rewired blocks")
    connectivity: float = Field(0.2, gt=0, le=1, description="fraction of possible connections that are active")
    l1: float = Field(1e-4, ge=0, description="l1 pull on active connection strengths, per step (x lr)")
    temperature: float = Field(1e-6, ge=0, description="noise temperature: each step adds N(0, 2 lr T)")
    dale: bool = Field(False, description="Dale's law: every presynaptic neuron is excitatory or inhibitory")
    excitatory_fraction: float = Field(0.8, gt=0, lt=1, description="share of excitatory neurons under Dale's law")


REVIVED_STRENGTH = 1e-6  # strength of a connection that comes alive (the reference uses a tiny epsilon)


class Rewiring(NamedTuple):
    sign: torch.Tensor  # (*shape) +1 / -1, fixed
    active: torch.Tensor  # (*shape) bool
    allowed: torch.Tensor  # (*shape) bool: connections that may exist (no autapses)


def init_rewiring(
    w: torch.Tensor,
    connectivity: float,
    gen: torch.Generator,
    *,
    no_self: bool,
    dale: bool,
    excitatory_fraction: float,
) -> tuple[Rewiring, torch.Tensor]:
    """Signs, an initial active set of ``round(connectivity * allowed)`` connections, and strengths.

    ``w``: (n_pre, n_post) initial dense weights; strengths are ``|w| / sqrt(connectivity)`` so
    that the input a neuron receives keeps its scale. Returns the rewiring state and ``theta``.
    """
    n_pre, n_post = w.shape
    allowed = torch.ones(n_pre, n_post, dtype=torch.bool)
    if no_self:
        allowed &= ~torch.eye(n_pre, n_post, dtype=torch.bool)
    if dale:
        excitatory = torch.rand(n_pre, generator=gen) < excitatory_fraction
        sign = torch.where(excitatory, 1.0, -1.0)[:, None].expand(n_pre, n_post).clone()
    else:
        sign = torch.where(w >= 0, 1.0, -1.0)
    candidates = allowed.flatten().nonzero().squeeze(1)
    n_active = max(1, round(connectivity * len(candidates)))
    chosen = candidates[torch.randperm(len(candidates), generator=gen)[:n_active]]
    active = torch.zeros(n_pre * n_post, dtype=torch.bool)
    active[chosen] = True
    active = active.view(n_pre, n_post)
    theta = torch.where(active, w.abs() / connectivity**0.5, torch.zeros_like(w))
    return Rewiring(sign.to(w.dtype), active, allowed), theta


def weights(theta: torch.Tensor, rw: Rewiring) -> torch.Tensor:
    """Effective weights ``s * theta`` on active connections, 0 elsewhere (differentiable in theta)."""
    return rw.sign.to(theta.device) * theta * rw.active.to(theta.device, theta.dtype)


@torch.no_grad()
def rewire(
    theta: torch.Tensor,
    rw: Rewiring,
    *,
    lr: float,
    l1: float,
    temperature: float,
    gen: torch.Generator,
    upper: float,
) -> tuple[torch.Tensor, Rewiring, torch.Tensor]:
    """One DEEP R update after a gradient step (in place on ``theta``).

    Returns ``theta``, the new rewiring state and a bool mask of the connections whose state was
    reset (newly alive), so that an optimizer can forget their history.
    """
    noise = torch.randn(theta.shape, generator=gen, dtype=theta.dtype) * (2.0 * lr * temperature) ** 0.5
    theta.sub_(lr * l1).add_(noise)
    theta.mul_(rw.active.to(theta.dtype)).clamp_(max=upper)
    died = rw.active & (theta < 0)
    active = rw.active & ~died
    n_dead = int(died.sum())
    revived = torch.zeros_like(active)
    if n_dead:
        dormant = (rw.allowed & ~active).flatten().nonzero().squeeze(1)
        pick = dormant[torch.randperm(len(dormant), generator=gen)[:n_dead]]
        revived.view(-1)[pick] = True
        active = active | revived
    theta.copy_(torch.where(revived, torch.full_like(theta, REVIVED_STRENGTH), theta.clamp(min=0.0)))
    theta.mul_(active.to(theta.dtype))
    return theta, rw._replace(active=active), revived | died
