"""The no-grad forward: the fastest simulation path that applies, with ``lsnn.rollout``'s numbers.

The equations are :func:`es_l2l.snn.lsnn.lsnn_step`'s (Bellec et al. 2018; the order in
docs/model.md). :func:`fast_rollout` picks one implementation and returns ``lsnn.rollout``'s
:class:`Rollout`:

- the C kernel (:mod:`es_l2l.snn.kernel_loop`, :mod:`es_l2l.snn.kernel`; the default on CPU
  float32): the whole time loop in one call, member after member with the member's state and
  ``W_rec`` in cache; there the dense product and the event-driven sum give the same floats
  (spikes are 0 or 1), so ``recurrent`` only sets speed;
- the in-place tensor update (:mod:`es_l2l.snn.inplace`): elsewhere (CUDA, float64, no compiler),
  with the event-driven recurrent input of :mod:`es_l2l.snn.event`;
- CUDA graphs (:mod:`es_l2l.snn.cuda_graph`, ``cuda_graph=True`` on CUDA).

The dense path gives the reference's numbers bit for bit; the event path differs only in the
summation order of ``W_rec z`` (floats to rounding; spikes identical in the tests, up to
near-threshold flips in float32, see docs/model.md). Gradients go through ``lsnn.rollout``'s graph
or fused-backward paths instead.
"""

from __future__ import annotations

import torch

from es_l2l.snn.cuda_graph import cuda_graph_rollout
from es_l2l.snn.event import (  # noqa: F401  (re-exported: the simulator's public names)
    EVENT_THRESHOLD,
    KERNEL_EVENT_THRESHOLD,
    RECURRENT_MODES,
    EventRecurrent,
    choose_recurrent,
    event_recurrent_,
    recurrent_current,
)
from es_l2l.snn.inplace import inplace_rollout, step_currents  # noqa: F401
from es_l2l.snn.kernel_loop import KernelLoop, kernel_rollout
from es_l2l.snn.types import no_autapses, readout_keep


FUSED_MODES = ("kernel", "inplace")


def fused_mode(params, x: torch.Tensor, fused: str | None) -> tuple[str, str | None]:
    """The neuron-update implementation ``fast_rollout`` will use, and why not the kernel if not.

    ``None`` means: the C kernel (:mod:`es_l2l.snn.kernel`) where it applies (CPU, float32,
    built), else the in-place tensor update.
    """
    if fused is not None and fused not in FUSED_MODES:
        raise ValueError(f"fused must be None or one of {FUSED_MODES}, got {fused!r}")
    if fused == "inplace":
        return fused, None
    from es_l2l.snn import kernel

    why = None
    if params.w_in.device.type != "cpu":
        why = f"the C kernel is for CPU tensors (these are on {params.w_in.device.type})"
    elif params.w_in.dtype != torch.float32 or x.dtype != torch.float32:
        why = "the C kernel is float32 only"
    elif kernel.load() is None:
        why = kernel.why_not()
    if why is None:
        return "kernel", None
    if fused == "kernel":
        raise RuntimeError(f"fused='kernel' cannot run: {why}")
    return "inplace", why


@torch.no_grad()
def fast_rollout(
    params,
    x: torch.Tensor,
    *,
    n_ref: int,
    dt: float = 1.0,
    readout_steps: torch.Tensor | None = None,
    record_spikes: bool = False,
    chunk_bytes: int = 1 << 28,
    recurrent: str = "auto",
    event_threshold: float | None = None,
    fused: str | None = None,
    matmul_dtype: torch.dtype | None = None,
    cuda_graph: bool = False,
    stats: dict | None = None,
):
    """Forward simulation equal to ``lsnn.rollout`` (no gradients), returning its ``Rollout``.

    ``fused``: ``None`` (the C kernel where it applies, else ``"inplace"``), ``"kernel"``,
    or ``"inplace"`` (preallocated tensors, in-place ops).
    ``matmul_dtype``: e.g. ``torch.bfloat16`` computes the dense ``W_rec z`` in that precision
    (``z`` is exact in it, ``W_rec`` is rounded): faster on bf16 hardware, not equal to fp32.
    ``cuda_graph``: on CUDA, replay the time loop from a captured graph (dense recurrent input).
    ``stats``: a dict that receives the implementation used and the number of dense and event steps.
    A nonzero diagonal of ``w_rec`` is ignored (no autapses).
    """
    if recurrent not in RECURRENT_MODES:
        raise ValueError(f"recurrent must be one of {RECURRENT_MODES}, got {recurrent!r}")
    mode, why = fused_mode(params, x, fused)
    if mode == "kernel" and matmul_dtype is not None:
        if fused == "kernel":
            raise RuntimeError(f"fused='kernel' computes W_rec z in float32; drop matmul_dtype={matmul_dtype} or use fused='inplace'")
        mode, why = "inplace", f"the C kernel computes W_rec z in float32, not {matmul_dtype}"
    if mode != "kernel":  # the kernel's KernelLoop removes autapses itself: one check per rollout
        params = no_autapses(params)
    if event_threshold is None:
        event_threshold = KERNEL_EVENT_THRESHOLD if mode == "kernel" else EVENT_THRESHOLD
    steps, device = x.shape[-2], params.w_in.device
    keep = readout_keep(readout_steps, steps)
    if cuda_graph and device.type == "cuda":
        if stats is not None:
            stats.update(fused="inplace", cuda_graph=True, dense_steps=steps, event_steps=0)
        return cuda_graph_rollout(params, x, n_ref=n_ref, dt=dt, keep=keep, record_spikes=record_spikes,
                                   chunk_bytes=chunk_bytes, matmul_dtype=matmul_dtype)
    if mode == "kernel":
        return kernel_rollout(params, x, n_ref=n_ref, dt=dt, keep=keep, record_spikes=record_spikes,
                               recurrent=recurrent, event_threshold=event_threshold, stats=stats)
    out = inplace_rollout(params, x, n_ref=n_ref, dt=dt, keep=keep, record_spikes=record_spikes, chunk_bytes=chunk_bytes,
                          recurrent=recurrent, event_threshold=event_threshold, matmul_dtype=matmul_dtype, stats=stats)
    if stats is not None:
        stats.update(fused=mode, kernel_unavailable=why)
    return out


def flops_dense_recurrent(pop: int, batch: int, n: int, steps: int) -> float:
    """FLOPs of the dense ``W_rec z`` term over a rollout (multiply and add)."""
    return 2.0 * pop * batch * n * n * steps


__all__ = [
    "EVENT_THRESHOLD",
    "KERNEL_EVENT_THRESHOLD",
    "EventRecurrent",
    "RECURRENT_MODES",
    "choose_recurrent",
    "event_recurrent_",
    "FUSED_MODES",
    "KernelLoop",
    "fast_rollout",
    "flops_dense_recurrent",
    "fused_mode",
    "recurrent_current",
    "step_currents",
]
