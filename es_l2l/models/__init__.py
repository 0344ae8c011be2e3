"""Model kinds: the registry, and the one dispatch task families simulate through.

``MODELS`` maps a config's ``model.kind`` to a :class:`es_l2l.models.base.ModelKind`: ``lsnn``
(LIF + ALIF neurons, :mod:`es_l2l.snn`; ``n_alif: 0`` is a LIF-only network) and ``lstm``
(:mod:`es_l2l.models.lstm`). The genome asks the kind for its blocks and parameters
(:func:`es_l2l.genome.build_genome`); a family runs any kind with :func:`simulate`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from es_l2l.models.base import Block, ModelKind
from es_l2l.models.lsnn import MODEL as _LSNN
from es_l2l.models.lstm import MODEL as _LSTM
from es_l2l.snn import firing_rate_hz, rate_regulariser

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig
    from es_l2l.snn import Rollout

MODELS: dict[str, ModelKind] = {"lsnn": _LSNN, "lstm": _LSTM}


def get_model(name: str) -> ModelKind:
    if name not in MODELS:
        raise ValueError(f"unknown model kind '{name}'; allowed: {', '.join(MODELS)}")
    return MODELS[name]


def model_of(cfg: ExperimentConfig) -> ModelKind:
    return get_model(cfg.model.kind)


def simulate(cfg: ExperimentConfig, params, x: torch.Tensor, readout_steps: torch.Tensor | None = None,
             record_spikes: bool = False) -> Rollout:
    """Run the population ``params`` of the config's model kind on ``x`` (B, T, n_in) from rest:
    a :class:`es_l2l.snn.Rollout` (``y`` (P, B, K, n_out) at ``readout_steps``; an LSTM's spike
    count is zero). Differentiable where the parameters require grad."""
    return model_of(cfg).simulate(cfg, params, x, readout_steps, record_spikes)


def rate_terms(cfg: ExperimentConfig, out: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean firing rate (P,) in Hz and the rate regulariser's term (P,) (``model.rate_reg`` times
    :func:`es_l2l.snn.rate_regulariser`; zero for a model kind without spikes)."""
    rate = firing_rate_hz(out.spike_count, out.n_steps, cfg.model.dt)  # (P, N)
    if not model_of(cfg).spiking or cfg.model.rate_reg == 0:
        return rate.mean(dim=1), rate.new_zeros(rate.shape[0])
    return rate.mean(dim=1), cfg.model.rate_reg * rate_regulariser(rate, cfg.model.rate_target_hz)


__all__ = ["MODELS", "Block", "ModelKind", "get_model", "model_of", "rate_terms", "simulate"]
