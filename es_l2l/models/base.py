"""The model-kind contract: what the genome and the task families ask of a network model.

A model kind (``model.kind`` in YAML: ``lsnn``, ``lstm``; registry :data:`es_l2l.models.MODELS`)
owns its config section (``config``, the pydantic model of ``model:`` for that kind: the root
config's ``model`` is a union of them discriminated by ``kind``), says which parameter blocks its
genome has and their initial values, how a population's decoded blocks become its model
parameters (a pure, differentiable function, so BPTT goes through it and ES searches the same
vector), and how those parameters run on input sequences (:meth:`ModelKind.simulate` ->
:class:`es_l2l.snn.Rollout`) or step by step in a closed loop (:meth:`ModelKind.stepper`).
Every method takes the kind's own section (``model``), never the root config; families simulate
through the run context (:meth:`es_l2l.context.RunContext.simulate`) and so run with any kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:  # type names only
    from es_l2l.context import RunContext
    from es_l2l.snn import Rollout, SimOptions


class Layout(Protocol):
    """What :meth:`ModelKind.to_params` reads of the genome (an :class:`es_l2l.genome.Genome`): the
    fixed values the kind declared in :meth:`ModelKind.constants`."""

    n_lif: int
    n_alif: int
    tau_a_lif: float
    tau_out: float
    dt: float


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
    """Base class of a model kind; each kind overrides what it has. ``model`` is always the kind's
    own section (an instance of ``config``); ``genome`` the root config's ``genome:`` section."""

    name: str = ""
    config: type = object  # the pydantic model of its ``model:`` section (``kind`` a Literal of ``name``)
    spiking: bool = True  # whether its rollouts count spikes (the rate regulariser applies)

    def blocks(self, model, genome, n_in: int, n_out: int) -> tuple[Block, ...]:
        """The genome's blocks; ``genome`` gives the bounds (``weight_bound``, time-constant bounds)."""
        raise NotImplementedError

    def initial(self, model, n_in: int, n_out: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Search-space initial values of every block, drawn from ``gen``."""
        raise NotImplementedError

    def constants(self, model) -> dict[str, Any]:
        """The fixed values :meth:`to_params` reads from the :class:`es_l2l.genome.Genome` (``n_lif``,
        ``n_alif``, ``tau_a_lif``, ``tau_out``, ``dt``); a kind without them keeps these."""
        return {"n_lif": 0, "n_alif": 0, "tau_a_lif": 0.0, "tau_out": 0.0, "dt": 1.0}

    def sim_options(self, model) -> SimOptions:
        """The simulation constants of the section (``dt`` in one place; gradient backend "auto")."""
        from es_l2l.snn import SimOptions

        return SimOptions(n_ref=0, dt=getattr(model, "dt", 1.0))

    def to_params(self, genome: Layout, genes: dict[str, torch.Tensor], value) -> Any:
        """Model parameters of a population: ``genes`` the search-space blocks (P, *shape),
        ``value(name)`` a block's bounded model-space values (log blocks exponentiated),
        ``genome`` the layout and sizes. Pure and differentiable."""
        raise NotImplementedError

    def simulate(self, ctx: RunContext, params, x: torch.Tensor, readout_steps: torch.Tensor | None = None,
                 record_spikes: bool = False) -> Rollout:
        """Run the population ``params`` on ``x`` (B, T, n_in) or (P, B, T, n_in) from rest, with the
        context's simulation options (``ctx.sim``)."""
        raise NotImplementedError

    def stepper(self, ctx: RunContext, params, batch: int):
        """A closed-loop stepper of ``P`` networks on ``batch`` tasks from rest: ``advance(x,
        record_spikes)`` runs the steps of an input chunk (B or P, B, c, n_in) and returns their
        spikes (P, B, c, N) when recorded; ``readout()`` is the readout (P, B, n_out) after the
        last step; ``spike_count`` (P, B, N). Differentiable where ``params`` require grad."""
        raise ValueError(f"model.kind={self.name} has no closed-loop stepper; use model.kind=lsnn")

    def replay_unsupported(self, params, x: torch.Tensor) -> str | None:
        """Why :meth:`simulate` cannot replay the inputs ``x`` (P, B, T, n_in) a closed loop met as
        one open-loop rollout with gradients (None: it can, giving the closed loop's readouts)."""
        return None

    def units(self, model) -> int:
        """The network's units (neurons, hidden units): what a memory estimate multiplies."""
        raise NotImplementedError

    def size(self, model) -> str:
        """The network's size in words, e.g. "10+10 neurons"."""
        raise NotImplementedError

    def check(self, model, genome) -> None:
        """Raise ValueError (one sentence naming the keys) where the sections do not fit the model kind.
        Facts that span other sections (an outer loop's blocks, DEEP R) are checked by the shell
        (:func:`es_l2l.config` root validator) through :meth:`incompatible`."""

    def incompatible(self, *, deep_r: bool, trained: list[str] | None, es_blocks: list[str] | None) -> str | None:
        """Why the outer loop's settings do not fit this kind (one sentence), or None. ``deep_r``:
        DEEP R rewiring on; ``trained``: the blocks a gradient loop trains (None: no gradient loop);
        ``es_blocks``: the blocks the hybrid's ES searches (None: not the hybrid)."""
        return None
