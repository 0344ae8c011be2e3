"""Model kinds: the registry.

``MODELS`` maps a config's ``model.kind`` to a :class:`es_l2l.models.base.ModelKind`: ``lsnn``
(LIF + ALIF neurons, :mod:`es_l2l.snn`; ``n_alif: 0`` is a LIF-only network) and ``lstm``
(:mod:`es_l2l.models.lstm`). Each kind brings its ``model:`` section (``config``); the root config's
``model`` is their union, discriminated by ``kind``. The genome asks the kind for its blocks and
parameters (:func:`es_l2l.genome.build_genome`); a family runs any kind through the run context
(:meth:`es_l2l.context.RunContext.simulate`).
"""

from __future__ import annotations

from es_l2l.models.base import Block, ModelKind
from es_l2l.models.lsnn import MODEL as _LSNN
from es_l2l.models.lstm import MODEL as _LSTM

MODELS: dict[str, ModelKind] = {"lsnn": _LSNN, "lstm": _LSTM}


def default_model() -> str:
    return next(iter(MODELS))


def get_model(name: str) -> ModelKind:
    if name not in MODELS:
        raise ValueError(f"unknown model kind '{name}'; allowed: {', '.join(MODELS)}")
    return MODELS[name]


__all__ = ["MODELS", "Block", "ModelKind", "default_model", "get_model"]
