"""The C kernel's driver (:mod:`es_l2l.snn.kernel`): a whole rollout in one call, or a closed loop
advanced a few steps at a time (an agent whose next inputs depend on its outputs). No gradients;
CPU float32."""

from __future__ import annotations

import torch

from es_l2l.snn.event import KERNEL_EVENT_THRESHOLD
from es_l2l.snn.inplace import coeffs
from es_l2l.snn.types import Rollout, no_autapses, readout


class KernelLoop:
    """The C kernel's state for ``P`` members x ``B`` tasks, advanced by any number of steps per
    call: a whole rollout in one call, or a closed loop (an agent acting in an environment) whose next inputs depend
    on this call's output. No gradients; CPU float32 (see :func:`fused_mode`). A nonzero diagonal of
    ``w_rec`` is ignored (no autapses)."""

    MODES = {"dense": 0, "event": 1, "auto": 2}

    def __init__(self, params, batch: int, *, n_ref: int, dt: float = 1.0, recurrent: str = "auto",
                 event_threshold: float | None = None):
        from es_l2l.snn import kernel

        self._run = kernel.load()
        if self._run is None:
            raise RuntimeError(kernel.why_not())
        params = no_autapses(params)
        pop, n_in, n = params.w_in.shape
        c = coeffs(params)
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


def kernel_rollout(params, x, *, n_ref, dt, keep, record_spikes, recurrent, event_threshold, stats):
    """The C kernel path: the whole time loop in one call of ``lsnn_run_f32``, which picks the
    recurrent input per member (or group of a member's rows) and step; ``stats`` get the share."""

    loop = KernelLoop(params, x.shape[-3], n_ref=n_ref, dt=dt, recurrent=recurrent, event_threshold=event_threshold)
    zf_out, spikes = loop.advance(x, keep=keep, record_spikes=record_spikes)
    steps = x.shape[-2]
    if stats is not None:
        stats.update(fused="kernel", kernel_unavailable=None, dense_steps=loop.dense_steps, event_steps=steps - loop.dense_steps)
    y = readout(zf_out, params)
    return Rollout(y=y, spike_count=loop.spike_count, spikes=spikes, n_steps=steps)
