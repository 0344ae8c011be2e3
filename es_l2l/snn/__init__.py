"""LSNN dynamics: pure, population-batched functions."""

from es_l2l.snn.lsnn import (
    LSNNParams,
    LSNNState,
    Rollout,
    decay,
    firing_rate_hz,
    input_current,
    lsnn_step,
    rate_regulariser,
    rollout,
    zero_state,
)
from es_l2l.snn.spike import SpikeFunction, pseudo_derivative, spike

__all__ = [
    "LSNNParams",
    "LSNNState",
    "Rollout",
    "SpikeFunction",
    "decay",
    "firing_rate_hz",
    "input_current",
    "lsnn_step",
    "pseudo_derivative",
    "rate_regulariser",
    "rollout",
    "spike",
    "zero_state",
]
