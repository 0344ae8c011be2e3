"""LSNN dynamics: pure, population-batched functions."""

from es_l2l.snn.lsnn import (
    decay,
    firing_rate_hz,
    input_current,
    lsnn_step,
    rate_regulariser,
    rollout,
    threshold_trace,
    zero_state,
)
from es_l2l.snn.spike import SpikeFunction, pseudo_derivative, spike
from es_l2l.snn.types import LSNNParams, LSNNState, Rollout, SimOptions, no_autapses, readout

__all__ = [
    "LSNNParams",
    "LSNNState",
    "Rollout",
    "SimOptions",
    "SpikeFunction",
    "decay",
    "firing_rate_hz",
    "input_current",
    "lsnn_step",
    "no_autapses",
    "pseudo_derivative",
    "rate_regulariser",
    "readout",
    "rollout",
    "spike",
    "threshold_trace",
    "zero_state",
]
