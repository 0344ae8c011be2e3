"""Spike nonlinearity with the LSNN pseudo-derivative (Bellec et al. 2018, Methods).

Forward: ``z = H(v_scaled)`` with ``v_scaled = (v - A) / A``.
Backward: ``dz/dv_scaled = gamma * max(0, 1 - |v_scaled|)`` (``gamma = 0.3`` in the paper).
"""

from __future__ import annotations

import torch


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward, triangular pseudo-derivative backward."""

    @staticmethod
    def forward(ctx, v_scaled: torch.Tensor, gamma: float) -> torch.Tensor:
        ctx.save_for_backward(v_scaled)
        ctx.gamma = gamma
        return (v_scaled > 0).to(v_scaled.dtype)

    @staticmethod
    def backward(ctx, grad_z: torch.Tensor):
        (v_scaled,) = ctx.saved_tensors
        return grad_z * pseudo_derivative(v_scaled, ctx.gamma), None


def pseudo_derivative(v_scaled: torch.Tensor, gamma: float) -> torch.Tensor:
    """``gamma * max(0, 1 - |v_scaled|)``: the surrogate gradient of the spike."""
    return gamma * torch.clamp(1.0 - v_scaled.abs(), min=0.0)


def spike(v_scaled: torch.Tensor, gamma: float = 0.3) -> torch.Tensor:
    """Spike with pseudo-derivative when gradients are recorded, a plain comparison otherwise."""
    if torch.is_grad_enabled() and v_scaled.requires_grad:
        return SpikeFunction.apply(v_scaled, gamma)
    return (v_scaled > 0).to(v_scaled.dtype)
