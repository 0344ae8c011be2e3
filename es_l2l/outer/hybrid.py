"""Hybrid outer loop, interleaved: ES steps on some blocks, gradient steps on the others.

Each generation first takes one ES step over ``hybrid.es_blocks`` (by default the time
constants, thresholds and adaptation strengths, which BPTT handles badly: they enter the dynamics
through exponentials and thresholds, and their useful range spans orders of magnitude), with the
gradient-trained blocks held at their current values for every member; then ``hybrid.bptt_steps``
Adam steps on ``bptt.train`` (by default the weights) at the new ES centre. Both sides work on one
genome vector with ES's layout, so the run's checkpoints and report are those of any other run.

evotorch updates the search distribution at the start of a step from the population it evaluated
in the previous step, so the ES update at generation ``g`` uses fitness measured with the weights
of generation ``g - 1``: one generation stale, like any interleaved scheme.

We built the interleaved variant rather than "BPTT inside every ES member": the inner variant
costs ``popsize x bptt_steps`` backward passes a generation, about ``popsize`` times more compute
for the weights than BPTT alone, which loses any comparison at equal budget before it starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field

from es_l2l.outer.base import LoopInputs, LoopSetting, OuterLoop, Search, centre_problem
from es_l2l.outer.bptt import GradientTrainer, check_gradient_blocks, graph_memory
from es_l2l.outer.es import es_memory, searcher_metrics
from es_l2l.schema import BLOCKS, Strict
from es_l2l.seeds import STREAM_SEARCH, STREAM_TRAIN, derive_seed

if TYPE_CHECKING:
    from es_l2l.context import RunContext
    from es_l2l.genome import Genome
    from es_l2l.cluster.seed_traffic import Evaluator


class HybridConfig(Strict):
    """Interleaved hybrid: one ES step on ``es_blocks``, then ``bptt_steps`` gradient steps on ``bptt.train``."""

    es_blocks: list[Literal[BLOCKS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["tau_m", "tau_a", "b0", "beta"],
        description="blocks ES searches; bptt.train lists the blocks gradient steps train",
    )
    bptt_steps: int = Field(2, ge=1, le=1000, description="gradient steps after each ES step")


def block_indices(genome: Genome, names: list[str] | tuple[str, ...]) -> torch.Tensor:
    """Positions of the named blocks' coordinates in the (D,) genome vector."""
    sl = genome.slices()
    return torch.cat([torch.arange(sl[n].start, sl[n].stop) for n in names])


class _Expand:
    """Evaluator over ES sub-vectors: fills in the other blocks from the current full genome."""

    def __init__(self, evaluator: Evaluator, index: torch.Tensor, full: torch.Tensor):
        self.evaluator, self.index, self.full = evaluator, index, full

    def __call__(self, sub: torch.Tensor, seed_keys: tuple[int, ...]):
        vectors = self.full.expand(sub.shape[0], -1).clone()
        vectors[:, self.index] = sub.to(vectors.dtype)
        return self.evaluator(vectors, seed_keys)

    def close(self) -> None:
        self.evaluator.close()


class HybridStep(Search):
    """Owns the ES searcher (over ``es_blocks``) and the gradient trainer (over ``bptt.train``)."""

    def __init__(self, hybrid: HybridConfig, ctx: RunContext, inputs: LoopInputs):
        from es_l2l.outer.evo import MetaProblem, make_searcher  # evotorch: imported when used

        es, bptt, genome = inputs.sections["es"], inputs.sections["bptt"], inputs.genome
        self.hybrid, self.seed, self.generations = hybrid, ctx.seed, inputs.generations
        batch = bptt.batch_size or inputs.batch_size
        self.trainer = GradientTrainer(bptt, ctx, genome, inputs.gradient_loss, batch, genome.initial_vector(), bptt.train)
        self.index = block_indices(genome, hybrid.es_blocks)
        self.expand = _Expand(inputs.evaluator, self.index, self.trainer.vector)
        seed = derive_seed(ctx.seed, STREAM_SEARCH) % (2**31)
        self.problem = MetaProblem(len(self.index), self.expand, seed=seed, nan_policy=es.nan_policy)
        self.searcher = make_searcher(es, self.problem, self.trainer.vector[self.index].clone())

    @property
    def vector(self) -> torch.Tensor:
        return self.trainer.vector.clone()

    def centre(self) -> torch.Tensor:
        return self.trainer.vector.clone()

    def state(self) -> dict:
        """Both sides' state as plain data: the gradient trainer's and the ES searcher's."""
        from es_l2l.outer.evo.state import searcher_state

        return {"format": 1, "class": "HybridStep", "trainer": self.trainer.state(), "es": searcher_state(self.searcher)}

    def restore(self, state: dict) -> None:
        from es_l2l.outer.evo.state import restore_searcher

        if not (isinstance(state, dict) and state.get("class") == "HybridStep" and state.get("format") == 1):
            raise ValueError("resume state does not fit this run: it was not saved by the hybrid")
        self.trainer.restore(state["trainer"])
        restore_searcher(self.searcher, state["es"])

    def step(self, generation: int) -> dict:
        """One ES step, then the gradient steps; both sides' metrics, the neuron-steps summed."""
        es = self.es_step(generation)
        grad = self.gradient_steps(generation)
        steps = es.pop("neuron_steps") + grad.pop("neuron_steps")
        return es | grad | {"neuron_steps": steps}

    def es_step(self, gen: int) -> dict:
        """One ES step on ``es_blocks``; the full genome takes the new centre."""
        from es_l2l.outer.evo import center_of, stdev_of

        self.expand.full = self.trainer.vector
        self.problem.start_generation((self.seed, STREAM_TRAIN, gen))
        self.searcher.step()
        full = self.trainer.vector.clone()
        full[self.index] = center_of(self.searcher).to(full.dtype)
        self.trainer.set_vector(full)
        return searcher_metrics(self.problem.last_eval, stdev_of(self.searcher))

    def gradient_steps(self, gen: int) -> dict:
        """``hybrid.bptt_steps`` Adam steps on ``bptt.train`` at the current ES centre."""
        k, steps, out = self.hybrid.bptt_steps, 0, {}
        for j in range(k):
            m = self.trainer.step((self.seed, STREAM_TRAIN, gen, j + 1), self.generations * k)
            steps += m.pop("neuron_steps")
            out = m
        # the gradient steps' own training scalars, e.g. train_mse_mean -> bptt_train_mse
        trained = {f"bptt_{k.removesuffix('_mean')}": v for k, v in out.items() if k.startswith("train_")}
        return {**trained, "grad_norm": out["grad_norm"], "lr": out["lr"], "neuron_steps": steps}


class Hybrid(OuterLoop):
    """The interleaved hybrid; resumable (its gradient trainer's and its ES searcher's state)."""

    name = section = "hybrid"
    config = HybridConfig
    uses_evaluator = True
    resumable = True
    popsize_key = "es.popsize"
    driver_gpu = True
    sections = ("hybrid", "es", "bptt")

    def check(self, setting: LoopSetting) -> None:
        hybrid, es, bptt = (setting.sections[k] for k in self.sections)
        check_gradient_blocks(bptt, setting)
        if es.perturbation != "full":
            raise ValueError("es.perturbation=lowrank applies to outer=es only (the hybrid samples full-rank); "
                             "set es.perturbation=full or outer=es")
        for block in hybrid.es_blocks:
            if block not in setting.genome.search:
                raise ValueError(f"hybrid.es_blocks lists '{block}' but genome.search does not; add it to genome.search")
        both = sorted(set(hybrid.es_blocks) & set(bptt.train))
        if both:
            raise ValueError(f"hybrid.es_blocks and bptt.train both list {', '.join(both)}; give each block to one side")
        if not hybrid.es_blocks:
            raise ValueError("hybrid.es_blocks is empty; list the blocks ES searches, e.g. [tau_m, tau_a, b0, beta]")

    def describe(self, setting: LoopSetting) -> str:
        hybrid, es, bptt = (setting.sections[k] for k in self.sections)
        return (
            f"hybrid: {es.algorithm.upper()} P={es.popsize} on {', '.join(hybrid.es_blocks)}, "
            f"{hybrid.bptt_steps} BPTT steps on the {setting.family.gradient_loss_name} loss on {', '.join(bptt.train)}"
        )

    def blocks(self, setting: LoopSetting) -> tuple[list[str], list[str]]:
        return list(setting.sections["hybrid"].es_blocks), list(setting.sections["bptt"].train)

    def popsize(self, setting: LoopSetting) -> int:
        return setting.sections["es"].popsize

    def memory(self, setting: LoopSetting, dim: int) -> dict[str, int]:
        return es_memory(setting.sections["es"], dim, setting) | graph_memory(setting.sections["bptt"], setting)

    def seed_traffic(self, setting: LoopSetting) -> bool:
        return setting.sections["es"].seed_traffic  # (its ES side sends the members themselves: they are sub-vectors)

    def state_problem(self, setting: LoopSetting, state: dict, dim: int) -> str | None:
        from es_l2l.outer.evo.state import state_problem

        if not (isinstance(state.get("trainer"), dict) and isinstance(state.get("es"), dict)):
            return "searcher is not a hybrid's state (trainer, es)"
        dist = state["es"].get("distribution") or {}
        params = dist.get("parameters") if isinstance(dist, dict) else None
        sizes = {len(v) for v in (params or {}).values() if isinstance(v, torch.Tensor) and v.ndim == 1}
        es_dim = min(sizes) if sizes else 0
        if not 0 < es_dim < dim:
            return f"searcher.es searches {es_dim} coordinates, expected between 1 and {dim - 1} (hybrid.es_blocks)"
        return centre_problem(state["trainer"], dim, "vector") or state_problem(state["es"], es_dim, setting.sections["es"].popsize)

    def start(self, section: HybridConfig, ctx: RunContext, inputs: LoopInputs) -> Search:
        return HybridStep(section, ctx, inputs)
