"""Exact BPTT through the LSNN in two C calls: a recording forward and a fused backward
(:mod:`es_l2l.snn.grad_kernel`), wrapped as a ``torch.autograd.Function``.

:func:`fused_rollout` returns what :func:`es_l2l.snn.lsnn.step_rollout` returns (``y`` at the
readout steps, ``spike_count``; no recorded spikes) with the gradients autograd would give through
``step_rollout`` (same equations, same order, pseudo-derivative ``gamma * max(0, 1 - |v_scaled|)``,
refractory steps without gradient) for every parameter of :class:`LSNNParams`: ``w_in``,
``w_rec`` (the full dense gradient, diagonal and masked entries included, exactly as autograd
gives through ``step_rollout`` for the ``w_rec`` tensor it is handed; a mask applied upstream zeroes
them, as does a nonzero diagonal, which both paths remove: no autapses), ``w_out``,
``b_out`` (through a torch readout), ``alpha``, ``rho``, ``b0``, ``beta`` and ``kappa``. Any loss
built on ``y`` and ``spike_count`` by autograd (MSE at some steps, cross-entropy at the last,
A2C on the readouts) composes.

Memory: the forward keeps ``v`` per neuron-step, the spikes as bits and the adaptation ``b``
every 16 steps (recomputed exactly in between), ``sizeof(real) * (1 + ceil(T / 16) / T) + 8 *
ceil(N / 64) / N`` bytes per neuron-step (4.40 for float32 at N=220, T=784;
:func:`es_l2l.snn.grad_kernel.bytes_per_neuron_step`), about a fifth of the 20 that autograd
keeps when only the weights are trained (more when alpha, rho, b0, beta are).

Where it does not apply (:func:`why_unsupported` returns the reason, :func:`supports` the bool),
the caller falls back to ``step_rollout`` under autograd:

- tensors not on the CPU, or not float32 / float64 (all parameters in one dtype);
- ``x`` requiring a gradient (the kernel gives none for the inputs);
- the kernel cannot be built or loaded (no compiler, refused cache; see ``grad_kernel.why_not``).
"""

from __future__ import annotations

import ctypes
import sys

import torch

from es_l2l.snn import grad_kernel
from es_l2l.snn.types import LSNNParams, Rollout, no_autapses

_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_SUFFIX_STATE: dict = {}


def why_unsupported(params: LSNNParams, x: torch.Tensor) -> str | None:
    """``None`` where :func:`fused_rollout` applies, else one sentence saying why not."""
    dtypes = {t.dtype for t in params}
    if any(t.device.type != "cpu" for t in params) or x.device.type != "cpu":
        return "the fused BPTT kernel is for CPU tensors"
    if len(dtypes) != 1 or next(iter(dtypes)) not in _SUFFIX:
        return f"the fused BPTT kernel needs all parameters in float32 or float64 (got {sorted(map(str, dtypes))})"
    if x.requires_grad:
        return "the fused BPTT kernel gives no gradient for the inputs x"
    if grad_kernel.load() is None:
        return grad_kernel.why_not()
    return None


def supports(params: LSNNParams, x: torch.Tensor) -> bool:
    """Whether :func:`fused_rollout` can compute this rollout's gradients (see :func:`why_unsupported`)."""
    return why_unsupported(params, x) is None


_HUGE = 2 << 20


def _libc():
    if "libc" not in _SUFFIX_STATE:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            _SUFFIX_STATE["libc"] = libc
        except (OSError, AttributeError):
            _SUFFIX_STATE["libc"] = None
    return _SUFFIX_STATE["libc"]


def _empty_huge(*shape, dtype) -> torch.Tensor:
    """``torch.empty`` whose pages (not touched yet) are advised as transparent huge pages: the
    recording is written once, and first-touch faults on 4 KiB pages cost about as much as the
    forward itself. A hint only (Linux ``madvise(MADV_HUGEPAGE)``); ignored where unsupported."""
    t = torch.empty(*shape, dtype=dtype)
    libc = _libc() if sys.platform.startswith("linux") else None
    if libc is not None and t.nbytes >= 2 * _HUGE:
        start = -(-t.data_ptr() // 4096) * 4096
        end = (t.data_ptr() + t.nbytes) // 4096 * 4096
        libc.madvise(start, end - start, 14)  # MADV_HUGEPAGE
    return t


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


class _FusedLSNN(torch.autograd.Function):
    """(x, config, w_in, w_rec, alpha, rho, b0, beta, kappa) -> (zf at the readout steps, spike count)."""

    @staticmethod
    def forward(ctx, x, cfg, w_in, w_rec, alpha, rho, b0, beta, kappa):
        n_ref, gamma, dt, slots, steps_kept, stats = cfg
        fwd, _ = grad_kernel.load()[_SUFFIX[w_in.dtype]]
        pop, n_in, n = w_in.shape
        batch, steps = x.shape[-3], x.shape[-2]
        dtype = w_in.dtype
        xs = x.detach().to(dtype).contiguous()
        xs_b, xs_p = steps * n_in, (0 if xs.dim() == 3 else batch * steps * n_in)
        w_rec_p = grad_kernel.padded(w_rec.detach())
        width = w_rec_p.shape[-1]
        coef = [t.detach().expand(pop, n).contiguous() for t in (rho, 1.0 - rho, alpha, 1.0 - alpha, b0, beta)]
        kap = [t.detach().reshape(pop).contiguous() for t in (kappa, 1.0 - kappa)]
        k = len(steps_kept)
        need_kappa = ctx.needs_input_grad[8]
        zf_out = torch.empty(pop, batch, k, n, dtype=dtype)
        sk_out = torch.empty(pop, batch, k, n, dtype=dtype) if need_kappa else None
        count = torch.zeros(pop, batch, n, dtype=dtype)
        rec_v = _empty_huge(pop, steps, batch, n, dtype=dtype)
        every = grad_kernel.CHECKPOINT
        rec_b = _empty_huge(pop, grad_kernel.segments(steps, every), batch, n, dtype=dtype)
        rec_z = _empty_huge(pop, steps, batch, grad_kernel.words(n), dtype=torch.int64)
        threads = torch.get_num_threads()
        g = grad_kernel.groups(pop, batch, threads)
        fwd(pop, batch, n, width, n_in, n_ref, dt, threads, g, steps, _ptr(xs), xs_p, xs_b, _ptr(w_in.detach().contiguous()),
            _ptr(w_rec_p), *[_ptr(t) for t in coef], *[_ptr(t) for t in kap], _ptr(slots), k, _ptr(zf_out), _ptr(sk_out),
            _ptr(count), _ptr(rec_v), every, _ptr(rec_b), _ptr(rec_z))
        if stats is not None:
            stats["recorded_bytes"] = rec_v.nbytes + rec_b.nbytes + rec_z.nbytes
            stats["neuron_steps"] = pop * batch * n * steps
        ctx.cfg = cfg
        ctx.every = every
        ctx.shape = (pop, batch, n, n_in, steps, width, xs_p, xs_b)
        ctx.save_for_backward(xs, w_in, w_rec_p, *coef, *kap, rec_v, rec_b, rec_z, sk_out if need_kappa else torch.empty(0))
        return zf_out, count

    @staticmethod
    def backward(ctx, g_zf, g_count):
        n_ref, gamma, dt, slots, steps_kept, _ = ctx.cfg
        pop, batch, n, n_in, steps, width, xs_p, xs_b = ctx.shape
        xs, w_in, w_rec_p, *rest = ctx.saved_tensors
        coef, kap, (rec_v, rec_b, rec_z, sk_out) = rest[:6], rest[6:8], rest[8:]
        dtype = w_in.dtype
        _, bwd = grad_kernel.load()[_SUFFIX[dtype]]
        k = len(steps_kept)
        if g_zf is None:
            g_zf = torch.zeros(pop, batch, k, n, dtype=dtype)
        g_zf = g_zf.contiguous()
        if g_count is not None:
            g_count = g_count.contiguous()
            t_last = steps - 1 if bool(g_count.any()) else -1
            if t_last < 0:
                g_count = None
        else:
            t_last = -1
        if t_last < 0 and k:
            live = g_zf.ne(0).flatten(0, 1).any(-1).any(0)  # (K,): readout slots with a gradient
            idx = live.nonzero()
            if idx.numel():
                t_last = steps_kept[int(idx[-1])]
        threads = torch.get_num_threads()
        g = grad_kernel.groups(pop, batch, threads)
        need = ctx.needs_input_grad
        g_w_in = torch.zeros(pop * g, n_in, n, dtype=dtype)
        g_w_rec = torch.zeros(pop * g, n, width, dtype=dtype)
        g_vec = torch.zeros(4, pop * g, n, dtype=dtype)  # alpha, rho, b0, beta
        if t_last >= 0:
            w_rec_t = grad_kernel.padded(w_rec_p[..., :n].transpose(1, 2))
            bwd(pop, batch, n, width, n_in, n_ref, dt, gamma, threads, g, steps, t_last, _ptr(xs), xs_p, xs_b,
                _ptr(w_in.detach().contiguous()), _ptr(w_rec_p), _ptr(w_rec_t), *[_ptr(t) for t in coef],
                *[_ptr(t) for t in kap], _ptr(slots), k, _ptr(g_zf), _ptr(g_count), _ptr(rec_v), ctx.every, _ptr(rec_b), _ptr(rec_z),
                int(bool(need[4])), _ptr(g_w_in), _ptr(g_w_rec), *[_ptr(t) for t in g_vec])

        def fold(t):  # (P*G, ...) item slices -> (P, ...)
            return t.view(pop, g, *t.shape[1:]).sum(1) if g > 1 else t

        g_w_in, g_w_rec = fold(g_w_in), fold(g_w_rec)[..., :n]
        g_alpha, g_rho, g_b0, g_beta = (fold(t) for t in g_vec)
        g_kappa = (g_zf * sk_out).sum((1, 2, 3)).unsqueeze(1) if need[8] else None
        return (None, None, g_w_in if need[2] else None, g_w_rec.contiguous() if need[3] else None,
                g_alpha if need[4] else None, g_rho if need[5] else None, g_b0 if need[6] else None,
                g_beta if need[7] else None, g_kappa)


def fused_rollout(params: LSNNParams, x: torch.Tensor, *, n_ref: int, gamma: float = 0.3, dt: float = 1.0,
                  readout_steps: torch.Tensor | None = None, stats: dict | None = None) -> Rollout:
    """:func:`es_l2l.snn.lsnn.step_rollout` (``record_spikes=False``) with its gradients from the
    fused C backward. ``x``: (B, T, n_in) shared or (P, B, T, n_in). ``readout_steps``: (K,) step
    indices (all steps when None). Returns ``Rollout(y (P, B, K, n_out), spike_count (P, B, N),
    None, T)``. ``stats`` (a dict) receives ``recorded_bytes`` and ``neuron_steps``.
    Raises ``RuntimeError`` where :func:`why_unsupported` gives a reason: check :func:`supports`
    first and fall back to ``step_rollout``. A nonzero diagonal of ``w_rec`` is ignored (no
    autapses; its gradient is then zero, as through ``step_rollout``).
    """
    params = no_autapses(params)
    why = why_unsupported(params, x)
    if why is not None:
        raise RuntimeError(why)
    steps = x.shape[-2]
    keep = torch.zeros(steps, dtype=torch.bool)
    keep[(torch.arange(steps) if readout_steps is None else readout_steps).cpu()] = True
    steps_kept = keep.nonzero().squeeze(1).tolist()
    slots = torch.full((steps,), -1, dtype=torch.int64)
    slots[keep] = torch.arange(len(steps_kept))
    cfg = (int(n_ref), float(gamma), float(dt), slots, steps_kept, stats)
    zf, count = _FusedLSNN.apply(x, cfg, params.w_in, params.w_rec, params.alpha, params.rho, params.b0, params.beta,
                                 params.kappa)
    y = torch.matmul(zf, params.w_out.unsqueeze(1)) + params.b_out[:, None, None, :]
    return Rollout(y=y, spike_count=count, spikes=None, n_steps=steps)


__all__ = ["fused_rollout", "supports", "why_unsupported"]
