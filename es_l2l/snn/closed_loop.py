"""The closed-loop stepper: ``P`` networks on ``B`` tasks advanced a few steps at a time, for an agent
whose next inputs depend on its outputs (the other entry point besides ``lsnn.rollout``).

Without gradients it runs the C kernel where it applies (CPU, float32, built); otherwise the
differentiable step graph of :func:`es_l2l.snn.lsnn.lsnn_step`. Both give the same numbers.
"""

from __future__ import annotations

import torch

from es_l2l.snn.lsnn import input_current, lsnn_step, zero_state
from es_l2l.snn.types import LSNNParams, SimOptions, no_autapses, readout


class Stepper:
    """Owns the state of one closed-loop simulation; :meth:`advance` runs the steps of an input chunk."""

    def __init__(self, params: LSNNParams, batch: int, options: SimOptions):
        self.params, self.options = no_autapses(params), options
        pop, _, n = params.w_in.shape
        self.loop = None
        if not (torch.is_grad_enabled() and any(t.requires_grad for t in params)):
            from es_l2l.snn.fast import KernelLoop, fused_mode

            if fused_mode(self.params, self.params.w_in, None)[0] == "kernel":
                self.loop = KernelLoop(self.params, batch, n_ref=options.n_ref, dt=options.dt)
        if self.loop is None:
            dtype, device = params.w_in.dtype, params.w_in.device
            self.state = zero_state(pop, batch, n, dtype=dtype, device=device)
            self.count = torch.zeros(pop, batch, n, dtype=dtype, device=device)

    @property
    def zf(self) -> torch.Tensor:
        """(P, B, N) readout trace after the last step."""
        return self.loop.zf if self.loop is not None else self.state.zf

    def readout(self) -> torch.Tensor:
        """(P, B, n_out): the readout ``W_out zf + b_out`` after the last step."""
        return readout(self.zf.unsqueeze(2), self.params).squeeze(2)

    @property
    def spike_count(self) -> torch.Tensor:
        """(P, B, N) spikes per neuron so far."""
        return self.loop.spike_count if self.loop is not None else self.count

    def advance(self, x: torch.Tensor, record_spikes: bool = False) -> torch.Tensor | None:
        """Run the steps of ``x`` ((B, c, n_in) or (P, B, c, n_in)); returns their spikes
        (P, B, c, N) when ``record_spikes``, else None."""
        if self.loop is not None:
            return self.loop.advance(x, record_spikes=record_spikes)[1]
        o, spikes = self.options, []
        for i_in in input_current(x, self.params.w_in).unbind(2):
            z, self.state = lsnn_step(i_in, self.state, self.params, n_ref=o.n_ref, gamma=o.gamma, dt=o.dt)
            self.count = self.count + z
            if record_spikes:
                spikes.append(z)
        return torch.stack(spikes, dim=2) if record_spikes else None
