"""Fast LSNN simulation: state in preallocated buffers, an in-place neuron update, and an
event-driven recurrent input ``W_rec z`` that adds only the rows of spiking neurons.

The equations are :func:`es_l2l.snn.lsnn.lsnn_step`'s (Bellec et al. 2018; the order in docs/model.md);
this file re-applies the same floating-point operations in the same order, in place, so the
dense path gives the reference's numbers bit for bit and the event path differs only in the
summation order of ``W_rec z`` (floats to rounding; spikes identical in the tests). It is a
no-grad forward (ES fitness); gradients go through ``lsnn.rollout``'s graph path, where
:class:`EventRecurrent` is the differentiable event-driven term.

Recurrent input modes (``recurrent=``):

- ``dense``: ``I = baddbmm(W_in x, z_prev, W_rec)``, ``2 P B N^2`` FLOPs whatever the rate;
- ``event``: for each spike ``(p, b, j)`` of the previous step add row ``W_rec[p, j, :]`` to
  ``I[p, b, :]``: ``nnz x N`` additions; at 1% firing about 100 times fewer than dense;
- ``auto``: ``event`` while the fraction of spiking units is at most ``event_threshold``, else
  ``dense`` (random networks fire ~0.1% a step, trained ones ~1%): decided per step for the
  whole population on the tensor path (default threshold 3%), per member and step inside the C
  kernel (default KERNEL_EVENT_THRESHOLD).

The C kernel (:mod:`es_l2l.snn.kernel`, the default on CPU) runs the whole time loop in one call,
member after member with the member's state and ``W_rec`` in cache; there the dense product and
the event-driven sum give the same floats (spikes are 0 or 1), so ``recurrent`` only sets speed.

``fused="compile"`` runs the elementwise update as one ``torch.compile``-d kernel (compile cost
once per shape, stated by the benchmark); ``cuda_graph=True`` on CUDA captures chunks of the
time loop (dense recurrent input) in a CUDA graph so that a step costs no kernel launches.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from es_l2l.snn.types import Rollout, readout

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


class _Buffers(NamedTuple):
    """Preallocated state of the fast rollout, each (P, B, N) unless noted."""

    v: torch.Tensor
    z: torch.Tensor  # this step's spikes (float 0/1)
    z_prev: torch.Tensor
    b: torch.Tensor
    r: torch.Tensor
    zf: torch.Tensor
    thr: torch.Tensor
    tmp: torch.Tensor
    spike: torch.Tensor  # bool
    refr: torch.Tensor  # bool
    count: torch.Tensor


class _Coeffs(NamedTuple):
    """Per-neuron constants, (P, 1, N) (kappa: (P, 1, 1)), computed once per rollout."""

    rho: torch.Tensor
    one_m_rho: torch.Tensor
    alpha: torch.Tensor
    one_m_alpha: torch.Tensor
    b0: torch.Tensor
    beta: torch.Tensor
    kappa: torch.Tensor
    one_m_kappa: torch.Tensor
    positive_threshold: bool  # b0 > 0 and beta >= 0: then (v - A) / A > 0 iff v > A, one pass fewer


def _coeffs(params) -> _Coeffs:
    rho, alpha = params.rho.unsqueeze(1), params.alpha.unsqueeze(1)
    b0, beta = params.b0.unsqueeze(1), params.beta.unsqueeze(1)
    kappa = params.kappa.unsqueeze(1)
    # (v - A) / A > 0 equals v > A for a threshold A in [1e-30, 1e30]: A = b0 + beta b with b in
    # [0, 1] stays in [b0, b0 + beta]; the division neither underflows nor flips a sign there.
    positive = bool(((b0 >= 1e-30) & (beta >= 0) & (b0 + beta <= 1e30)).all())
    return _Coeffs(rho, 1.0 - rho, alpha, 1.0 - alpha, b0, beta, kappa, 1.0 - kappa, positive)


def _buffers(pop: int, batch: int, n: int, dtype, device) -> _Buffers:
    f = lambda: torch.zeros(pop, batch, n, dtype=dtype, device=device)  # noqa: E731
    b = lambda: torch.zeros(pop, batch, n, dtype=torch.bool, device=device)  # noqa: E731
    return _Buffers(f(), f(), f(), f(), f(), f(), f(), f(), b(), b(), f())


def _update_inplace(s: _Buffers, c: _Coeffs, current: torch.Tensor, n_ref: int, dt: float) -> None:
    """Steps 1-3 and 5 of ``lsnn_step`` in place, given step 4's ``current``; ``s.z_prev`` holds
    the previous spikes on entry, ``s.z`` this step's on exit. Every float op is the reference's,
    in its order (no fused multiply-add where the reference rounds twice)."""
    # 1. b <- rho b + (1 - rho) z_prev   ((1 - rho) z_prev is exact: z_prev is 0 or 1)
    s.b.mul_(c.rho).addcmul_(s.z_prev, c.one_m_rho)
    # 2. A = b0 + beta b
    torch.mul(c.beta, s.b, out=s.thr).add_(c.b0)
    # 3. z = H((v - A) / A), zero while refractory
    if c.positive_threshold:
        torch.gt(s.v, s.thr, out=s.spike)
    else:
        torch.sub(s.v, s.thr, out=s.tmp).div_(s.thr)
        torch.gt(s.tmp, 0.0, out=s.spike)
    if n_ref > 0:
        torch.gt(s.r, 0.0, out=s.refr)
        s.spike.logical_and_(s.refr.logical_not_())
        s.r.sub_(1.0).clamp_(min=0.0).masked_fill_(s.spike, float(n_ref))
    s.z.copy_(s.spike)
    # 5. v <- alpha v + (1 - alpha) I - A z_prev dt
    s.v.mul_(c.alpha).add_(current.mul_(c.one_m_alpha))
    s.thr.mul_(s.z_prev)
    if dt != 1.0:
        s.thr.mul_(dt)
    s.v.sub_(s.thr)
    # readout trace zf <- kappa zf + (1 - kappa) z   ((1 - kappa) z is exact)
    s.zf.mul_(c.kappa).addcmul_(s.z, c.one_m_kappa)
    s.count.add_(s.z)


def _update_pure(v, b, r, zf, z_prev, current, rho, one_m_rho, alpha, one_m_alpha, b0, beta, kappa, one_m_kappa, count, n_ref: int, dt: float):
    """The same update as one pure function, for ``torch.compile`` to fuse into a single kernel."""
    b = rho * b + one_m_rho * z_prev
    thr = b0 + beta * b
    spike = (v - thr) / thr > 0
    if n_ref > 0:
        spike = spike & (r <= 0)
        r = torch.where(spike, torch.full_like(r, float(n_ref)), (r - 1.0).clamp(min=0.0))
    z = spike.to(v.dtype)
    v = alpha * v + one_m_alpha * current - thr * z_prev * dt
    zf = kappa * zf + one_m_kappa * z
    return v, z, b, r, zf, count + z


_COMPILED: dict = {}


def compiled_update():
    """``_update_pure`` under ``torch.compile`` (one compiled function per process; shapes it
    sees for the first time cost a compile, about 10-20 s on 2 CPU cores)."""
    if "fn" not in _COMPILED:
        _COMPILED["fn"] = torch.compile(_update_pure, dynamic=False, fullgraph=True)
    return _COMPILED["fn"]


def step_currents(x: torch.Tensor, w_in: torch.Tensor) -> torch.Tensor:
    """``W_in x`` laid out time-major, (c, P, B, N), so that each step's slice is contiguous.
    ``x``: (B, c, n_in) shared or (P, B, c, n_in)."""
    if x.dim() == 3:
        xt = x.transpose(0, 1).unsqueeze(1)  # (c, 1, B, n_in)
    else:
        xt = x.permute(2, 0, 1, 3)  # (c, P, B, n_in)
    return torch.matmul(xt, w_in.unsqueeze(0)).contiguous()  # (c, P, B, N)


FUSED_MODES = ("kernel", "inplace", "compile")


def fused_mode(params, x: torch.Tensor, fused: str | None) -> tuple[str, str | None]:
    """The neuron-update implementation ``fast_rollout`` will use, and why not the kernel if not.

    ``None`` means: the C kernel (:mod:`es_l2l.snn.kernel`) where it applies (CPU, float32,
    built), else the in-place tensor update.
    """
    if fused is not None and fused not in FUSED_MODES:
        raise ValueError(f"fused must be None or one of {FUSED_MODES}, got {fused!r}")
    if fused in ("inplace", "compile"):
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
    ``"inplace"`` (preallocated tensors, in-place ops) or ``"compile"`` (``torch.compile``).
    ``matmul_dtype``: e.g. ``torch.bfloat16`` computes the dense ``W_rec z`` in that precision
    (``z`` is exact in it, ``W_rec`` is rounded): faster on bf16 hardware, not equal to fp32.
    ``cuda_graph``: on CUDA, replay the time loop from a captured graph (dense recurrent input).
    ``stats``: a dict that receives the implementation used and the number of dense and event steps.
    """

    if recurrent not in RECURRENT_MODES:
        raise ValueError(f"recurrent must be one of {RECURRENT_MODES}, got {recurrent!r}")
    mode, why = fused_mode(params, x, fused)
    if mode == "kernel" and matmul_dtype is not None:
        if fused == "kernel":
            raise RuntimeError(f"fused='kernel' computes W_rec z in float32; drop matmul_dtype={matmul_dtype} or use fused='inplace'")
        mode, why = "inplace", f"the C kernel computes W_rec z in float32, not {matmul_dtype}"
    if event_threshold is None:
        event_threshold = KERNEL_EVENT_THRESHOLD if mode == "kernel" else EVENT_THRESHOLD
    pop, _, n = params.w_in.shape
    batch, steps = x.shape[-3], x.shape[-2]
    dtype, device = params.w_in.dtype, params.w_in.device
    if readout_steps is None:
        readout_steps = torch.arange(steps)
    keep = torch.zeros(steps, dtype=torch.bool)
    keep[readout_steps.cpu()] = True
    keep = keep.tolist()
    if cuda_graph and device.type == "cuda":
        if stats is not None:
            stats.update(fused="inplace", cuda_graph=True, dense_steps=steps, event_steps=0)
        return _cuda_graph_rollout(params, x, n_ref=n_ref, dt=dt, keep=keep, record_spikes=record_spikes,
                                   chunk_bytes=chunk_bytes, matmul_dtype=matmul_dtype)
    if mode == "kernel":
        return _kernel_rollout(params, x, n_ref=n_ref, dt=dt, keep=keep, record_spikes=record_spikes,
                               recurrent=recurrent, event_threshold=event_threshold, stats=stats)
    c = _coeffs(params)
    s = _buffers(pop, batch, n, dtype, device)
    w_rec = params.w_rec.contiguous()
    w_mm = w_rec if matmul_dtype is None else w_rec.to(matmul_dtype)
    numel = pop * batch * n
    use_event = True  # the zero state has no spikes: nothing to add on the first step
    n_dense = n_event = 0
    traces, spikes = [], []

    def next_is_event(n_spikes: int) -> bool:
        if recurrent == "auto":
            return choose_recurrent(n_spikes, numel, event_threshold) == "event"
        return recurrent == "event"

    step_fn = compiled_update() if mode == "compile" else None
    chunk = max(1, min(steps, chunk_bytes // max(1, numel * x.element_size())))
    for t0 in range(0, steps, chunk):
        currents = step_currents(x[..., t0 : t0 + chunk, :], params.w_in)  # (c, P, B, N)
        for k in range(currents.shape[0]):
            cur = currents[k]  # contiguous (P, B, N); overwritten in place
            if use_event:
                event_recurrent_(cur, s.z_prev, w_rec)
                n_event += 1
            elif matmul_dtype is None:
                cur.baddbmm_(s.z_prev, w_rec)
                n_dense += 1
            else:
                cur.add_(torch.bmm(s.z_prev.to(matmul_dtype), w_mm).to(dtype))
                n_dense += 1
            if step_fn is None:
                _update_inplace(s, c, cur, n_ref, dt)
                n_spikes = int(s.spike.sum()) if recurrent == "auto" else 0
            else:
                v, z, b, r, zf, count = step_fn(s.v, s.b, s.r, s.zf, s.z_prev, cur, c.rho, c.one_m_rho, c.alpha,
                                                c.one_m_alpha, c.b0, c.beta, c.kappa, c.one_m_kappa, s.count, n_ref, dt)
                s = s._replace(v=v, z=z, b=b, r=r, zf=zf, count=count)
                n_spikes = int(z.sum()) if recurrent == "auto" else 0
            if record_spikes:
                spikes.append(s.z.clone())
            if keep[t0 + k]:
                traces.append(s.zf.clone())
            use_event = next_is_event(n_spikes)
            s = s._replace(z=s.z_prev, z_prev=s.z)
    if stats is not None:
        stats.update(fused=mode, kernel_unavailable=why, dense_steps=n_dense, event_steps=n_event)
    zf = torch.stack(traces, dim=2)  # (P, B, K, N)
    y = readout(zf, params)
    return Rollout(y=y, spike_count=s.count, spikes=torch.stack(spikes, dim=2) if record_spikes else None, n_steps=steps)


class KernelLoop:
    """The C kernel's state for ``P`` members x ``B`` tasks, advanced by any number of steps per
    call: a whole rollout in one call, or a closed loop (an agent acting in an environment) whose next inputs depend
    on this call's output. No gradients; CPU float32 (see :func:`fused_mode`)."""

    MODES = {"dense": 0, "event": 1, "auto": 2}

    def __init__(self, params, batch: int, *, n_ref: int, dt: float = 1.0, recurrent: str = "auto",
                 event_threshold: float | None = None):
        from es_l2l.snn import kernel

        self._run = kernel.load()
        if self._run is None:
            raise RuntimeError(kernel.why_not())
        pop, n_in, n = params.w_in.shape
        c = _coeffs(params)
        self.w_in = params.w_in.detach().contiguous()
        self.w_rec = kernel.padded(params.w_rec.detach())
        self.coef = [t.detach().expand(pop, 1, n).contiguous() for t in (c.rho, c.one_m_rho, c.alpha, c.one_m_alpha, c.b0, c.beta)]
        self.coef += [t.detach().reshape(pop).contiguous() for t in (c.kappa, c.one_m_kappa)]
        self.state = [torch.zeros(pop, batch, n, dtype=self.w_in.dtype) for _ in range(6)]  # v, b, r, zf, count, z
        self.shape = (pop, batch, n, n_in)
        self.n_ref, self.dt = n_ref, dt
        self.mode = self.MODES[recurrent]
        self.event_threshold = KERNEL_EVENT_THRESHOLD if event_threshold is None else event_threshold
        self.dense_steps = 0  # steps of the whole population whose recurrent input was dense
        self._out = torch.zeros(2, dtype=torch.int64)
        self._no_keep: dict[int, torch.Tensor] = {}

    @property
    def zf(self) -> torch.Tensor:
        """(P, B, N) readout trace after the last step."""
        return self.state[3]

    @property
    def spike_count(self) -> torch.Tensor:
        """(P, B, N) spikes per neuron so far."""
        return self.state[4]

    def advance(self, x: torch.Tensor, *, keep: list[bool] | None = None, record_spikes: bool = False):
        """Run the steps of ``x`` ((B, T, n_in) shared or (P, B, T, n_in), float32 0/1) from the
        current state. Returns the readout traces of the ``keep`` steps, (P, B, K, N), and the
        spikes (P, B, T, N) when recorded (else ``None``)."""
        pop, batch, n, n_in = self.shape
        xs = x.contiguous()
        steps = xs.shape[-2]
        xs_b, xs_p = steps * n_in, (0 if xs.dim() == 3 else batch * steps * n_in)
        if keep is None:
            if steps not in self._no_keep:
                self._no_keep[steps] = torch.full((steps,), -1, dtype=torch.int64)
            slots, k = self._no_keep[steps], 0
        else:
            slot, k = [], 0
            for t in range(steps):
                slot.append(k if keep[t] else -1)
                k += bool(keep[t])
            slots = torch.tensor(slot, dtype=torch.int64)
        zf_out = torch.empty(pop, batch, k, n, dtype=self.w_in.dtype)
        spikes = torch.empty(pop, batch, steps, n, dtype=self.w_in.dtype) if record_spikes else None
        ptr = lambda t: t.data_ptr()  # noqa: E731
        self._run(pop, batch, n, self.w_rec.shape[-1], n_in, self.n_ref, self.dt, torch.get_num_threads(), 0, steps, steps,
                  ptr(xs), xs_p, xs_b, ptr(self.w_in), ptr(self.w_rec), *[ptr(t) for t in self.coef],
                  *[ptr(t) for t in self.state], self.mode, float(self.event_threshold), ptr(slots), k, ptr(zf_out),
                  ptr(spikes) if record_spikes else None, ptr(self._out))
        self.dense_steps += round(int(self._out[0]) / max(1, int(self._out[1])))  # dense item-steps over items
        return zf_out, spikes


def _kernel_rollout(params, x, *, n_ref, dt, keep, record_spikes, recurrent, event_threshold, stats):
    """The C kernel path: the whole time loop in one call of ``lsnn_run_f32``, which picks the
    recurrent input per member (or group of a member's rows) and step; ``stats`` get the share."""

    loop = KernelLoop(params, x.shape[-3], n_ref=n_ref, dt=dt, recurrent=recurrent, event_threshold=event_threshold)
    zf_out, spikes = loop.advance(x, keep=keep, record_spikes=record_spikes)
    steps = x.shape[-2]
    if stats is not None:
        stats.update(fused="kernel", kernel_unavailable=None, dense_steps=loop.dense_steps, event_steps=steps - loop.dense_steps)
    y = readout(zf_out, params)
    return Rollout(y=y, spike_count=loop.spike_count, spikes=spikes, n_steps=steps)


def _cuda_graph_rollout(params, x, *, n_ref, dt, keep, record_spikes, chunk_bytes, matmul_dtype):
    """The time loop captured in CUDA graphs: one graph replays ``K`` steps (dense ``W_rec z``)
    from static buffers, so a step costs no kernel launch from Python. Not run on hardware yet."""

    pop, _, n = params.w_in.shape
    batch, steps = x.shape[-3], x.shape[-2]
    dtype, device = params.w_in.dtype, params.w_in.device
    c = _coeffs(params)
    s = _buffers(pop, batch, n, dtype, device)
    w_rec = params.w_rec.contiguous()
    w_mm = w_rec if matmul_dtype is None else w_rec.to(matmul_dtype)
    numel = pop * batch * n
    k_steps = max(2, min(64, chunk_bytes // max(1, numel * x.element_size() * 3)))
    k_steps -= k_steps % 2  # an even count: the z / z_prev buffer swap ends where it started
    inp = torch.zeros(k_steps, pop, batch, n, dtype=dtype, device=device)  # static input chunk
    zf_out = torch.zeros_like(inp)
    z_out = torch.zeros_like(inp)

    def run(k_count: int) -> None:
        nonlocal s
        for k in range(k_count):
            cur = inp[k]
            if matmul_dtype is None:
                cur.baddbmm_(s.z_prev, w_rec)
            else:
                cur.add_(torch.bmm(s.z_prev.to(matmul_dtype), w_mm).to(dtype))
            _update_inplace(s, c, cur, n_ref, dt)
            zf_out[k].copy_(s.zf)
            z_out[k].copy_(s.z)
            s = s._replace(z=s.z_prev, z_prev=s.z)

    graph = None
    if k_steps >= 2 and steps >= k_steps:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up on a side stream, as capture requires
            run(k_steps)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run(k_steps)
        for buf in s:  # warm-up advanced the state: back to the zero state
            buf.zero_()
    traces, spikes = [], []
    t = 0
    while t < steps:
        k_count = k_steps if graph is not None and steps - t >= k_steps else 1
        inp[:k_count].copy_(step_currents(x[..., t : t + k_count, :], params.w_in))
        if k_count == k_steps and graph is not None:
            graph.replay()
        else:
            run(k_count)
        for k in range(k_count):
            if record_spikes:
                spikes.append(z_out[k].clone())
            if keep[t + k]:
                traces.append(zf_out[k].clone())
        t += k_count
    zf = torch.stack(traces, dim=2)
    y = readout(zf, params)
    return Rollout(y=y, spike_count=s.count, spikes=torch.stack(spikes, dim=2) if record_spikes else None, n_steps=steps)


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
