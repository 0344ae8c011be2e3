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

import torch

from es_l2l.config import ExperimentConfig
from es_l2l.distributed import Evaluator
from es_l2l.genome import Genome
from es_l2l.outer.bptt import GradientTrainer
from es_l2l.outer.es import MetaProblem, center_of, make_searcher, stdev_of
from es_l2l.outer.loop import Driver, RunResult, Subscriber
from es_l2l.tasks.base import STREAM_SEARCH, STREAM_TRAIN, derive_seed


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
            "train_mse_mean": float(ev.mse.mean()),
            "rate_hz": float(ev.rate_hz.mean()),
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
        return {"bptt_train_mse": out["train_mse_mean"], "grad_norm": out["grad_norm"], "lr": out["lr"], "neuron_steps": steps}


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
