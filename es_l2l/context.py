"""The run context: what every plug-in (task family, model kind, outer loop) may know of a run
beyond its own config section.

The shell builds one :class:`RunContext` per run from the root config (:meth:`RunContext.of`) and
hands it down; a family receives its ``task`` section plus the context, a model kind its ``model``
section (``ctx.model_cfg``), an outer loop its own section plus the context. Below the shell no
code reads the root config.

The context is small and frozen: the run's seed, device and validation size, the model kind with
its section, the simulation options (:class:`es_l2l.snn.SimOptions`: ``dt`` lives there and only
there) and two services, :meth:`RunContext.simulate` and :meth:`RunContext.rate_terms`. A loop
that wants gradients through the spikes picks the backend with :meth:`RunContext.with_backend`.

Random draws are named by a :class:`es_l2l.seeds.SeedKey` (seed, stream, generation, member),
read by field name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type names only; the context sits below every plug-in and imports none of them
    import torch

    from es_l2l.snn import Rollout, SimOptions


@dataclass(frozen=True)
class RunContext:
    seed: int  # run seed: every random draw derives from it (es_l2l.seeds)
    device: str  # "cpu" | "cuda"
    validation_tasks: int  # fixed held-out tasks scored at each validation
    model: Any  # the model kind (an es_l2l.models.base.ModelKind)
    model_cfg: Any  # its config section (``model:``)
    sim: SimOptions  # refractory steps, pseudo-derivative dampening, dt, gradient backend
    name: str = ""  # the run's name (figure titles)
    step_label: str = "generation"  # what one outer-loop step is called on a figure's x axis

    @classmethod
    def of(cls, cfg, backend: str | None = None) -> RunContext:
        """The context of a root config (``es_l2l.config.ExperimentConfig``; the shell's one call):
        the config builds it (:meth:`es_l2l.config.ExperimentConfig.run_context`), as it alone knows
        the registries. The gradient backend is "auto" unless ``backend`` names one: a loop that takes
        gradients sets its own (:meth:`with_backend`)."""
        ctx = cfg.run_context()
        return ctx if backend is None else ctx.with_backend(backend)

    def with_backend(self, backend: str) -> RunContext:
        """The same context simulating gradients with ``backend`` ("kernel", "autograd" or "auto")."""
        return replace(self, sim=self.sim._replace(backend=backend))

    def simulate(self, params, x: torch.Tensor, readout_steps: torch.Tensor | None = None,
                 record_spikes: bool = False) -> Rollout:
        """Run the population ``params`` of this run's model kind on ``x`` (B, T, n_in) from rest."""
        return self.model.simulate(self, params, x, readout_steps, record_spikes)

    def rate_terms(self, out: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean firing rate (P,) in Hz and the rate regulariser's term (P,) (zero without spikes)."""
        from es_l2l.snn import firing_rate_hz, rate_regulariser

        m = self.model_cfg
        rate = firing_rate_hz(out.spike_count, out.n_steps, self.sim.dt)  # (P, N)
        if not self.model.spiking or m.rate_reg == 0:
            return rate.mean(dim=1), rate.new_zeros(rate.shape[0])
        return rate.mean(dim=1), m.rate_reg * rate_regulariser(rate, m.rate_target_hz)
