"""The model-kind contract: what the genome and the task families ask of a network model.

A model kind (``model.kind`` in YAML: ``lsnn``, ``lstm``; registry :data:`es_l2l.models.MODELS`)
says which parameter blocks its genome has and their initial values, how a population's decoded
blocks become its model parameters (a pure, differentiable function, so BPTT goes through it and
ES searches the same vector), and how those parameters run on input sequences
(:meth:`ModelKind.simulate` -> :class:`es_l2l.snn.Rollout`). Families simulate through
:func:`es_l2l.models.simulate` and so run with any model kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # type names only
    from es_l2l.config import ExperimentConfig
    from es_l2l.genome import Genome
    from es_l2l.snn import Rollout


@dataclass(frozen=True)
class Block:
    name: str
    shape: tuple[int, ...]  # per member
    transform: str  # "identity" | "log" | "logit"
    low: float  # model-space bounds
    high: float

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def bounds_search(self) -> tuple[float, float]:
        if self.transform == "log":
            return math.log(self.low), math.log(self.high)
        return self.low, self.high


class ModelKind:
    """Base class of a model kind; each kind overrides what it has."""

    name: str = ""
    spiking: bool = True  # whether its rollouts count spikes (the rate regulariser applies)

    def blocks(self, cfg: ExperimentConfig, n_in: int, n_out: int) -> tuple[Block, ...]:
        raise NotImplementedError

    def initial(self, cfg: ExperimentConfig, n_in: int, n_out: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Search-space initial values of every block, drawn from ``gen``."""
        raise NotImplementedError

    def to_params(self, genome: Genome, genes: dict[str, torch.Tensor], value) -> Any:
        """Model parameters of a population: ``genes`` the search-space blocks (P, *shape),
        ``value(name)`` a block's bounded model-space values (log blocks exponentiated),
        ``genome`` the layout and sizes. Pure and differentiable."""
        raise NotImplementedError

    def simulate(self, cfg: ExperimentConfig, params, x: torch.Tensor, readout_steps: torch.Tensor | None = None,
                 record_spikes: bool = False) -> Rollout:
        raise NotImplementedError

    def size(self, cfg: ExperimentConfig) -> str:
        """The network's size in words, e.g. "10+10 neurons"."""
        raise NotImplementedError

    def check(self, cfg: ExperimentConfig) -> None:
        """Raise ValueError (one sentence naming the keys) where ``cfg`` does not fit the model kind."""
