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

import time
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field

from es_l2l.outer.base import OuterLoop, RunResult, Subscriber
from es_l2l.outer.bptt import GradientTrainer, check_gradient_blocks
from es_l2l.outer.driver import Driver
from es_l2l.schema import BLOCKS, Strict
from es_l2l.seeds import STREAM_SEARCH, STREAM_TRAIN, derive_seed

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig
    from es_l2l.genome import Genome
    from es_l2l.traffic import Evaluator


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


class HybridStep:
    """Owns the ES searcher (over ``es_blocks``) and the gradient trainer (over ``bptt.train``)."""

    def __init__(self, cfg: ExperimentConfig, genome: Genome, evaluator: Evaluator):
        from es_l2l.outer.evo import MetaProblem, make_searcher  # evotorch: imported when used

        self.cfg, self.genome = cfg, genome
        self.trainer = GradientTrainer(cfg, genome, genome.initial_vector(), cfg.bptt.train)
        self.index = block_indices(genome, cfg.hybrid.es_blocks)
        self.expand = _Expand(evaluator, self.index, self.trainer.vector)
        seed = derive_seed(cfg.run.seed, STREAM_SEARCH) % (2**31)
        self.problem = MetaProblem(len(self.index), self.expand, seed=seed, nan_policy=cfg.es.nan_policy)
        self.searcher = make_searcher(cfg.es, self.problem, self.trainer.vector[self.index].clone())

    @property
    def vector(self) -> torch.Tensor:
        return self.trainer.vector.clone()

    def es_step(self, gen: int) -> dict:
        """One ES step on ``es_blocks``; the full genome takes the new centre."""
        from es_l2l.outer.evo import center_of, stdev_of

        self.expand.full = self.trainer.vector
        self.problem.start_generation((self.cfg.run.seed, STREAM_TRAIN, gen))
        self.searcher.step()
        full = self.trainer.vector.clone()
        full[self.index] = center_of(self.searcher).to(full.dtype)
        self.trainer.set_vector(full)
        ev = self.problem.last_eval
        return {
            "fitness_mean": float(ev.fitness.mean()),
            "fitness_best": float(ev.fitness.max()),
            "fitness_std": float(ev.fitness.std()),
            **ev.summary(),
            "stdev": stdev_of(self.searcher),
            "neuron_steps": ev.neuron_steps,
        }

    def gradient_steps(self, gen: int) -> dict:
        """``hybrid.bptt_steps`` Adam steps on ``bptt.train`` at the current ES centre."""
        k, steps, out = self.cfg.hybrid.bptt_steps, 0, {}
        for j in range(k):
            m = self.trainer.step((self.cfg.run.seed, STREAM_TRAIN, gen, j + 1), self.cfg.run.generations * k)
            steps += m.pop("neuron_steps")
            out = m
        # the gradient steps' own training scalars, e.g. train_mse_mean -> bptt_train_mse
        trained = {f"bptt_{k.removesuffix('_mean')}": v for k, v in out.items() if k.startswith("train_")}
        return {**trained, "grad_norm": out["grad_norm"], "lr": out["lr"], "neuron_steps": steps}


def run_hybrid(cfg: ExperimentConfig, genome: Genome, evaluator: Evaluator, subscribers: list[Subscriber] = ()) -> RunResult:
    hybrid = HybridStep(cfg, genome, evaluator)
    driver = Driver(cfg, genome, hybrid.vector, subscribers)
    for gen in range(1, cfg.run.generations + 1):
        t0 = time.perf_counter()
        es = hybrid.es_step(gen)
        grad = hybrid.gradient_steps(gen)
        seconds = time.perf_counter() - t0
        steps = es.pop("neuron_steps") + grad.pop("neuron_steps")
        if driver.record(gen, seconds, steps, es | grad, lambda: hybrid.vector):
            break
    return driver.result(hybrid.vector)


class Hybrid(OuterLoop):
    name = section = "hybrid"
    config = HybridConfig
    uses_evaluator = True
    driver_gpu = True
    sections = ("hybrid", "es", "bptt")

    def check(self, cfg: ExperimentConfig) -> None:
        check_gradient_blocks(cfg)
        if cfg.es.perturbation != "full":
            raise ValueError("es.perturbation=lowrank applies to outer=es only (the hybrid samples full-rank); "
                             "set es.perturbation=full or outer=es")
        for block in cfg.hybrid.es_blocks:
            if block not in cfg.genome.search:
                raise ValueError(f"hybrid.es_blocks lists '{block}' but genome.search does not; add it to genome.search")
        both = sorted(set(cfg.hybrid.es_blocks) & set(cfg.bptt.train))
        if both:
            raise ValueError(f"hybrid.es_blocks and bptt.train both list {', '.join(both)}; give each block to one side")
        if not cfg.hybrid.es_blocks:
            raise ValueError("hybrid.es_blocks is empty; list the blocks ES searches, e.g. [tau_m, tau_a, b0, beta]")

    def describe(self, cfg: ExperimentConfig, family) -> str:
        return (
            f"hybrid: {cfg.es.algorithm.upper()} P={cfg.es.popsize} on {', '.join(cfg.hybrid.es_blocks)}, "
            f"{cfg.hybrid.bptt_steps} BPTT steps on the {family.gradient_loss_name} loss on {', '.join(cfg.bptt.train)}"
        )

    def run(self, cfg, genome, evaluator, subscribers=(), resume=None) -> RunResult:
        return run_hybrid(cfg, genome, evaluator, subscribers)
