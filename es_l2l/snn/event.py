"""The recurrent input ``W_rec z`` computed from the spikes only, and when to do so.

Recurrent input modes (``recurrent=``):

- ``dense``: ``I = baddbmm(W_in x, z_prev, W_rec)``, ``2 P B N^2`` FLOPs whatever the rate;
- ``event``: for each spike ``(p, b, j)`` of the previous step add row ``W_rec[p, j, :]`` to
  ``I[p, b, :]``: ``nnz x N`` additions; at 1% firing about 100 times fewer than dense;
- ``auto``: ``event`` while the fraction of spiking units is at most ``event_threshold``, else
  ``dense`` (random networks fire ~0.1% a step, trained ones ~1%): decided per step for the
  whole population on the tensor path (default threshold 3%), per member and step inside the C
  kernel (default KERNEL_EVENT_THRESHOLD).

:class:`EventRecurrent` is the differentiable version (the step graph's ``recurrent="event"``).
"""

from __future__ import annotations

import torch

RECURRENT_MODES = ("auto", "dense", "event")
# auto's crossover, measured by the benchmark (es-l2l bench --only sim): the tensor path's
# event-driven step (index ops) beats a dense bmm up to ~2-5% spiking; inside the C kernel the
# event-driven sum was still 2.1x faster than its dense tiles end to end at 8.3% (the busiest
# regime the benchmark runs), so the kernel switches at 20%.
EVENT_THRESHOLD = 0.03
KERNEL_EVENT_THRESHOLD = 0.2



def choose_recurrent(n_spikes: int, numel: int, threshold: float = EVENT_THRESHOLD) -> str:
    """``event`` when at most ``threshold`` of the ``numel`` units spiked, else ``dense``."""
    return "event" if n_spikes <= threshold * numel else "dense"


def _spike_rows(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes of ``z`` (P, B, N) as (target row ``p*B + b`` of the (P*B, N) current, source row
    ``p*N + j`` of the (P*N, N) weights), in row-major order."""
    pop, batch, n = z.shape
    flat = z.reshape(-1).nonzero().squeeze(1)  # (nnz,)
    target = torch.div(flat, n, rounding_mode="floor")
    j = flat - target * n
    source = torch.div(target, batch, rounding_mode="floor") * n + j
    return target, source


def event_recurrent_(current: torch.Tensor, z: torch.Tensor, w_rec: torch.Tensor) -> torch.Tensor:
    """``current += W_rec z`` in place, adding only the rows ``W_rec[p, j, :]`` of spikes ``z[p, b, j]``.

    ``current``: (P, B, N) contiguous; ``z``: (P, B, N) of 0/1; ``w_rec``: (P, N, N) contiguous.
    """
    pop, batch, n = z.shape
    target, source = _spike_rows(z)
    if target.numel():
        rows = w_rec.reshape(pop * n, n).index_select(0, source)  # (nnz, N)
        # scatter_add_ is one kernel over nnz x N elements (index_add_ on CPU is a tensor op per index)
        current.view(pop * batch, n).scatter_add_(0, target.unsqueeze(1).expand(-1, n), rows)
    return current


class EventRecurrent(torch.autograd.Function):
    """``W_rec z`` computed from the spikes only, with the dense product's gradients.

    Forward adds rows of ``W_rec`` per spike; backward: ``dL/dz = g W_rec^T`` (dense: the
    pseudo-derivative needs it at every neuron) and ``dL/dW_rec[p, j] = sum_b z[p, b, j] g[p, b]``
    (event-driven again: only rows of neurons that spiked get a gradient).
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, w_rec: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z, w_rec)
        out = torch.zeros_like(z)
        return event_recurrent_(out, z, w_rec.contiguous())

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, w_rec = ctx.saved_tensors
        grad_z = torch.bmm(grad, w_rec.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            pop, batch, n = z.shape
            target, source = _spike_rows(z)
            grad_w = torch.zeros(pop * n, n, dtype=grad.dtype, device=grad.device)
            rows = grad.reshape(pop * batch, n).index_select(0, target)
            grad_w.scatter_add_(0, source.unsqueeze(1).expand(-1, n), rows)
            grad_w = grad_w.view(pop, n, n)
        return grad_z, grad_w


def recurrent_current(i_in: torch.Tensor, z_prev: torch.Tensor, w_rec: torch.Tensor, mode: str) -> torch.Tensor:
    """``I = W_in x + W_rec z_prev`` (differentiable), the recurrent term dense or event-driven."""
    if mode == "dense":
        return torch.baddbmm(i_in, z_prev, w_rec)
    return i_in + EventRecurrent.apply(z_prev, w_rec)
