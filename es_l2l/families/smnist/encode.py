"""The reference threshold-crossing spike code of sequential MNIST, vectorised over a batch.

``n_thresholds`` (40) grey levels ``theta_k = k / (n_thresholds - 1)`` over [0, 1]. With the
grey-level sequence ``y`` (each pixel repeated ``ms_per_pixel`` times):

* for each threshold below 1 (``k = 0 .. n_thresholds - 2``) an *up* neuron ``2k`` fires where
  ``y`` crosses ``theta_k`` upward (``y[t-1] < theta_k <= y[t]``) and a *down* neuron ``2k + 1``
  where it crosses downward (``y[t-1] >= theta_k > y[t]``);
* neuron ``2 (n_thresholds - 1)`` fires at every step where ``y[t] == 1`` (the reference's
  special case for the top threshold, which a grey level can touch but never cross);
* the last neuron, ``2 n_thresholds - 1``, is the cue: it fires at every step of the
  ``cue_window`` steps appended after the pixels, where all other inputs are silent.

So 40 thresholds give 79 crossing neurons + 1 cue = 80 inputs, in the reference's order
(up/down interleaved per threshold). ``theta_0 = 0`` is never crossed by grey levels in [0, 1],
so neurons 0 and 1 are always silent, as in the reference.

A crossing between pixels t-1 and t spikes at step t (``crossing_step="current"``, causal) or at
t-1 (``"previous"``, what the reference's ``find_onset_offset`` does).
"""

from __future__ import annotations

import torch

from es_l2l.families.smnist.config import SMNISTTaskConfig


def thresholds(n_thresholds: int) -> torch.Tensor:
    """``linspace(0, 1, n)`` in float64 (comparisons are made in float64, as numpy's were)."""
    return torch.linspace(0.0, 1.0, n_thresholds, dtype=torch.float64)


def crossing_spikes(y: torch.Tensor, n_thresholds: int = 40, crossing_step: str = "current") -> torch.Tensor:
    """Threshold-crossing spikes of grey-level sequences: (B, L) in [0, 1] -> (B, L, 2 n - 1) float32."""
    if crossing_step not in ("current", "previous"):
        raise ValueError(f"crossing_step must be 'current' or 'previous', got {crossing_step!r}")
    y = y.to(torch.float64)
    batch, length = y.shape
    below = y.unsqueeze(-1) < thresholds(n_thresholds)[:-1]  # (B, L, n-1)
    up = below[:, :-1] & ~below[:, 1:]  # crossing between t-1 and t, indexed t-1: (B, L-1, n-1)
    down = ~below[:, :-1] & below[:, 1:]
    pair = torch.stack([up, down], dim=-1).flatten(2)  # (B, L-1, 2(n-1)): up_0, down_0, up_1, ...
    out = torch.zeros(batch, length, 2 * n_thresholds - 1, dtype=torch.float32)
    rows = slice(1, None) if crossing_step == "current" else slice(0, length - 1)
    out[:, rows, :-1] = pair.to(torch.float32)
    out[:, :, -1] = (y == 1.0).to(torch.float32)
    return out


def encode(task: SMNISTTaskConfig, pixels: torch.Tensor) -> torch.Tensor:
    """Input spikes of a batch of digits: pixels (B, L) grey levels in [0, 1] (float or a numpy
    array) -> (B, L * ms_per_pixel + cue_window, 2 * n_thresholds) float32."""
    pixels = torch.as_tensor(pixels)
    y = pixels.repeat_interleave(task.ms_per_pixel, dim=1)
    crossings = crossing_spikes(y, task.n_thresholds, task.crossing_step)  # (B, L*m, n_in - 1)
    batch, steps, n_cross = crossings.shape
    x = torch.zeros(batch, steps + task.cue_window, n_cross + 1, dtype=torch.float32)
    x[:, :steps, :n_cross] = crossings
    x[:, steps:, n_cross] = 1.0
    return x


def readout_steps(task: SMNISTTaskConfig, n_pixels: int) -> torch.Tensor:
    """The last ``readout_window`` steps of the sequence: (W,) long."""
    total = task.n_steps(n_pixels)
    return torch.arange(total - task.readout_window, total)


__all__ = ["crossing_spikes", "encode", "readout_steps", "thresholds"]
