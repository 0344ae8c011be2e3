"""Population-batched LSNN dynamics (Bellec et al. 2018, "Long short-term memory and
learning-to-learn in networks of spiking neurons", NeurIPS; arXiv:1803.09574).

Every parameter carries a leading population axis ``P``: one call advances ``P`` networks on
``B`` tasks each. One step, with ``dt = 1`` ms, in the reference cell's order
(the equations in the project's own words: ``docs/model.md``):

1. adaptation   ``b <- rho * b + (1 - rho) * z_prev``,  ``rho = exp(-dt / tau_a)``
2. threshold    ``A = b0 + beta * b``          (``beta = 0``: a plain LIF neuron)
3. spike        ``z = H((v - A) / A)`` from the membrane *before* this step's update, forced
                to 0 while the neuron spiked within the last ``n_ref`` steps
4. current      ``I = W_in x_t + W_rec z_prev``
5. membrane     ``v <- alpha * v + (1 - alpha) * I - A * z_prev * dt``, ``alpha = exp(-dt/tau_m)``

then the readout trace ``zf <- kappa * zf + (1 - kappa) * z`` feeds a linear readout.
All states start at zero.
"""

from __future__ import annotations

import torch

from es_l2l.snn.fast import RECURRENT_MODES, fast_rollout, recurrent_current
from es_l2l.snn.spike import spike
from es_l2l.snn.types import BACKENDS, LSNNParams, LSNNState, Rollout, SimOptions, no_autapses, readout, readout_keep


def zero_state(pop: int, batch: int, n: int, *, dtype=torch.float32, device=None) -> LSNNState:
    zeros = lambda: torch.zeros(pop, batch, n, dtype=dtype, device=device)  # noqa: E731
    return LSNNState(zeros(), zeros(), zeros(), zeros(), zeros())


def lsnn_step(
    i_in: torch.Tensor,
    state: LSNNState,
    params: LSNNParams,
    *,
    n_ref: int,
    gamma: float = 0.3,
    dt: float = 1.0,
    recurrent: str = "dense",
    current=None,
) -> tuple[torch.Tensor, LSNNState]:
    """Advance all ``P x B`` networks one step. ``i_in``: (P, B, N) input current ``W_in x_t``.

    Returns this step's spikes ``z`` (P, B, N) and the new state. The step uses ``params.w_rec``
    as given: the simulators that call it remove autapses once, before the first step
    (:func:`es_l2l.snn.types.no_autapses`). ``recurrent="event"`` computes
    ``W_rec z_prev`` from the spikes only (:class:`es_l2l.snn.fast.EventRecurrent`, same
    gradients); the default ``"dense"`` is one ``baddbmm``. ``current(i_in, z_prev)``, where
    given, computes ``I`` instead (the low-rank forward's shared centre plus corrections,
    :mod:`es_l2l.snn.lowrank`); ``params.w_rec`` is then not read.
    """
    v, z_prev, b, r, zf = state
    rho = params.rho.unsqueeze(1)  # (P, 1, N)
    alpha = params.alpha.unsqueeze(1)
    b = rho * b + (1.0 - rho) * z_prev  # 1. adaptation
    thr = params.b0.unsqueeze(1) + params.beta.unsqueeze(1) * b  # 2. threshold A
    z = spike((v - thr) / thr, gamma)  # 3. spike from the pre-update membrane
    if n_ref > 0:
        z = z * (r <= 0)
        r = torch.where(z > 0, torch.full_like(r, float(n_ref)), (r - 1.0).clamp_(min=0.0))
    if current is None:
        i_total = recurrent_current(i_in, z_prev, params.w_rec, recurrent)  # 4. I = W_in x + W_rec z_prev
    else:
        i_total = current(i_in, z_prev)
    v = alpha * v + (1.0 - alpha) * i_total - thr * z_prev * dt  # 5. membrane, reset by A
    kappa = params.kappa.unsqueeze(1)  # (P, 1, 1)
    zf = kappa * zf + (1.0 - kappa) * z
    return z, LSNNState(v, z, b, r, zf)


def input_current(x: torch.Tensor, w_in: torch.Tensor) -> torch.Tensor:
    """``W_in x`` for a chunk of steps. ``x``: (B, T, n_in) shared or (P, B, T, n_in); -> (P, B, T, N)."""
    pop, n_in, n = w_in.shape
    if x.dim() == 3:
        batch, steps, _ = x.shape
        return torch.matmul(x.reshape(batch * steps, n_in), w_in).view(pop, batch, steps, n)
    _, batch, steps, _ = x.shape
    return torch.bmm(x.reshape(pop, batch * steps, n_in), w_in).view(pop, batch, steps, n)


def rollout(
    params: LSNNParams,
    x: torch.Tensor,
    options: SimOptions | None = None,
    *,
    n_ref: int | None = None,
    gamma: float = 0.3,
    dt: float = 1.0,
    backend: str = "auto",
    readout_steps: torch.Tensor | None = None,
    record_spikes: bool = False,
    chunk_bytes: int = 1 << 28,
    recurrent: str = "auto",
    fused: str | None = None,
    event_threshold: float | None = None,
) -> Rollout:
    """Simulate ``P`` networks on ``B`` input sequences for ``T`` steps from the zero state.

    ``x``: (B, T, n_in), shared by the whole population, or (P, B, T, n_in).
    ``readout_steps``: (K,) sorted step indices at which the readout ``W_out zf + b_out`` is
    returned (all ``T`` steps when None). A nonzero diagonal of ``w_rec`` is ignored (no autapses).

    Without gradients (no parameter or input requires grad, or grad mode is off) the forward runs
    in :func:`es_l2l.snn.fast.fast_rollout`: the C kernel, else preallocated state and an in-place
    update, and, with ``recurrent="auto"``, an event-driven
    ``W_rec z`` while at most ``event_threshold`` of the units spike (default: 20% with the C
    kernel, 3% otherwise; dense on CUDA, where a spike count would synchronise the device). Spikes equal the graph path's; floats
    differ by rounding only where the event path summed in another order. With gradients the
    step is :func:`lsnn_step`'s graph, ``"auto"`` meaning dense and ``"event"`` the
    differentiable event-driven product, unless ``backend`` (``options.backend``) picks the fused
    C backward (:mod:`es_l2l.snn.fused_grad`: ``"kernel"``, or ``"auto"`` where it applies: CPU,
    float32 or float64, no gradient for ``x``, no recorded spikes), which gives the same gradients
    without a graph of ``T`` steps.
    """
    if options is not None:
        n_ref, gamma, dt, backend = options
    if n_ref is None:
        raise TypeError("rollout needs n_ref, or options=SimOptions(...)")
    if recurrent not in RECURRENT_MODES:
        raise ValueError(f"recurrent must be one of {RECURRENT_MODES}, got {recurrent!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    # no autapses: each simulator below applies the rule (es_l2l.snn.types.no_autapses)
    graph = torch.is_grad_enabled() and (x.requires_grad or any(t.requires_grad for t in params))
    if not graph:
        mode = "dense" if recurrent == "auto" and params.w_in.device.type == "cuda" else recurrent
        return fast_rollout(params, x, n_ref=n_ref, dt=dt, readout_steps=readout_steps, record_spikes=record_spikes,
                            chunk_bytes=chunk_bytes, recurrent=mode, event_threshold=event_threshold, fused=fused)
    if fused is not None:
        raise ValueError("fused= applies to the no-grad forward only; leave it None when gradients are recorded")
    if backend != "autograd" and not record_spikes and recurrent != "event":
        from es_l2l.snn.fused_grad import fused_rollout, why_unsupported

        why = why_unsupported(params, x)
        if why is None:  # exact BPTT in two C calls (same gradients as the step graph)
            return fused_rollout(params, x, n_ref=n_ref, gamma=gamma, dt=dt, readout_steps=readout_steps)
        if backend == "kernel":
            raise ValueError(f"bptt.backend=kernel does not apply here ({why}); set bptt.backend=auto or autograd")
    return step_rollout(params, x, n_ref=n_ref, gamma=gamma, dt=dt, readout_steps=readout_steps,
                        record_spikes=record_spikes, chunk_bytes=chunk_bytes,
                        recurrent="event" if recurrent == "event" else "dense")


def step_rollout(
    params: LSNNParams,
    x: torch.Tensor,
    *,
    n_ref: int,
    gamma: float = 0.3,
    dt: float = 1.0,
    readout_steps: torch.Tensor | None = None,
    record_spikes: bool = False,
    chunk_bytes: int = 1 << 28,
    recurrent: str = "dense",
) -> Rollout:
    """:func:`rollout` as a plain loop over :func:`lsnn_step` (the graph autograd records; also
    the benchmark's plain-torch reference step). ``recurrent``: ``"dense"`` or ``"event"``. A
    nonzero diagonal of ``w_rec`` is ignored (no autapses)."""
    params = no_autapses(params)
    pop, _, n = params.w_in.shape
    batch, steps = x.shape[-3], x.shape[-2]
    state = zero_state(pop, batch, n, dtype=params.w_in.dtype, device=params.w_in.device)
    keep = readout_keep(readout_steps, steps)
    # W_in x for many steps in one matmul, in chunks that bound memory.
    chunk = max(1, min(steps, chunk_bytes // max(1, pop * batch * n * x.element_size())))
    traces, spikes, count = [], [], torch.zeros_like(state.v)
    for t0 in range(0, steps, chunk):
        currents = input_current(x[..., t0 : t0 + chunk, :], params.w_in)  # (P, B, c, N)
        # unbind, not currents[:, :, k]: its backward stacks the step gradients once instead of
        # filling a zero tensor of the whole chunk for every step (quadratic in the chunk length).
        for k, i_in in enumerate(currents.unbind(2)):
            z, state = lsnn_step(i_in, state, params, n_ref=n_ref, gamma=gamma, dt=dt, recurrent=recurrent)
            count = count + z
            if record_spikes:
                spikes.append(z)
            if keep[t0 + k]:
                traces.append(state.zf)
    return Rollout(
        y=readout(torch.stack(traces, dim=2), params),  # (P, B, K, n_out)
        spike_count=count,
        spikes=torch.stack(spikes, dim=2) if record_spikes else None,
        n_steps=steps,
    )


def firing_rate_hz(spike_count: torch.Tensor, n_steps: int, dt: float = 1.0) -> torch.Tensor:
    """Mean rate per neuron in Hz, (P, B, N) -> (P, N) averaged over the batch."""
    return spike_count.mean(dim=1) / (n_steps * dt * 1e-3)


def rate_regulariser(rate_hz: torch.Tensor, target_hz: float = 10.0) -> torch.Tensor:
    """``sum_j (rate_j - f0)^2`` per member, rates in kHz as in the reference: (P, N) -> (P,)."""
    return ((rate_hz - target_hz) * 1e-3).pow(2).sum(dim=-1)


def threshold_trace(params: LSNNParams, spikes: torch.Tensor, member: int = 0) -> torch.Tensor:
    """The firing thresholds ``A_t = b0 + beta * b_t`` of one network over a recorded run, from its
    spikes (T, N) (``b`` integrates the previous step's spikes, as in :func:`lsnn_step`): (T, N)."""
    rho, b0, beta = params.rho[member], params.b0[member], params.beta[member]
    b = torch.zeros_like(rho)
    z_prev = torch.zeros_like(rho)
    out = []
    for z in spikes.to(rho.dtype).unbind(0):
        b = rho * b + (1.0 - rho) * z_prev
        out.append(b0 + beta * b)
        z_prev = z
    return torch.stack(out)


def decay(tau: torch.Tensor, dt: float = 1.0) -> torch.Tensor:
    """``exp(-dt / tau)``."""
    return torch.exp(-dt / tau)


__all__ = [
    "LSNNParams",
    "LSNNState",
    "Rollout",
    "decay",
    "firing_rate_hz",
    "input_current",
    "lsnn_step",
    "rate_regulariser",
    "rollout",
    "step_rollout",
    "threshold_trace",
    "zero_state",
]
