"""evotorch, at one seam: the search problem, the searcher factory and what we read of a searcher.

The flat genome vector is the only currency between the search algorithm and the simulation.
Fitness is minus the loss on a fresh task batch each generation, the same tasks for every
member; PGPE uses antithetic sampling and centered-rank fitness shaping.

Where evotorch has public API we use it (``searcher.status["center"]``, ``["stdev"]``,
``searcher.problem``). Seed traffic needs two things it does not publish: the population size a
step is about to sample and the search distribution it samples from. :func:`sampling_state` is the
one place that reads them (``searcher._popsize``, ``searcher._distribution``, present in every
Gaussian searcher of evotorch 0.6); ``tests/outer/test_evo.py`` pins them for the installed
version, and where they are missing seed traffic falls back to sending the members themselves.
"""

from __future__ import annotations

import time

import logging
import warnings
from typing import TYPE_CHECKING, Any

import torch

with warnings.catch_warnings():  # evotorch calls torch.jit.script at import time
    warnings.simplefilter("ignore", DeprecationWarning)
    from evotorch import Problem, SolutionBatch
    from evotorch.algorithms import CEM, CMAES, PGPE, SNES
    from evotorch.algorithms.searchalgorithm import SearchAlgorithm

from es_l2l.outer.base import NonFiniteFitness
from es_l2l.cluster.seed_traffic import Evaluator, SampleRecipe, checksums

if TYPE_CHECKING:
    from es_l2l.families.base import Evaluation
    from es_l2l.outer.es_config import ESConfig


logging.getLogger("evotorch").setLevel(logging.WARNING)  # it logs INFO for every problem it builds


def sampling_state(searcher: SearchAlgorithm | None) -> tuple[int | None, Any]:
    """(population size, search distribution) of the searcher's next sample; ``(None, None)``
    where evotorch does not expose them (CMA-ES, or another evotorch version)."""
    return getattr(searcher, "_popsize", None), getattr(searcher, "_distribution", None)


class MetaProblem(Problem):
    """Maximise fitness of genomes; evaluation is delegated to an :class:`Evaluator`.

    ``seed_keys`` names the task batch of the current generation; the driver calls
    :meth:`start_generation` before each step, and ``last_eval`` keeps the step's full evaluation
    for the status dict. With seed traffic, the evaluation ships a :class:`SampleRecipe` (the
    searcher's distribution and the generator state recorded before sampling) instead of the
    population. Pickling drops the evaluator (it owns Ray actors): :meth:`attach` a new one.
    """

    def __init__(self, dim: int, evaluator: Evaluator, seed: int, nan_policy: str = "error", **problem_kwargs):
        super().__init__(
            "max", solution_length=dim, initial_bounds=(-1.0, 1.0), dtype=torch.float32, seed=seed, **problem_kwargs
        )
        self._evaluator = evaluator
        self._nan_policy = nan_policy
        self.seed_keys: tuple[int, ...] = ()
        self.last_eval: Evaluation | None = None
        self.searcher: SearchAlgorithm | None = None  # set by make_searcher: whose distribution samples
        self._rng_state: torch.Tensor | None = None
        self._pending: tuple | None = None  # (recipe, result references) sent before evotorch sampled
        self._armed = False  # send the recipe when evotorch next asks for the generator

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_evaluator=None, last_eval=None, _pending=None, _armed=False)
        return state

    def attach(self, evaluator: Evaluator) -> None:
        self._evaluator = evaluator

    def start_generation(self, seed_keys: tuple[int, ...]) -> None:
        """Name this generation's tasks and record the sampler's state before evotorch samples.

        With seed traffic and an evaluator that can :meth:`submit_recipe`, the work is sent the
        moment evotorch asks this problem for its generator to sample (its distribution is
        updated by then, at the start of ``step``): the workers regenerate and evaluate while
        evotorch samples the same population on the driver, which takes the driver's sampling
        off the generation's critical path. The checksums in :meth:`_evaluate_batch` prove both
        drew the same members.
        """
        self.seed_keys = seed_keys
        self._rng_state = self._generator.get_state()
        self._pending = None
        self._armed = hasattr(self._evaluator, "submit_recipe") and getattr(self._evaluator, "seed_traffic", False)

    @property
    def generator(self) -> torch.Generator | None:
        if getattr(self, "_armed", False):  # evotorch is about to sample this generation: send the recipe
            self._armed = False
            popsize, _ = sampling_state(self.searcher)
            self._rng_state = self._generator.get_state()
            recipe = self._recipe(int(popsize)) if popsize else None
            if recipe is not None:
                self._pending = (recipe, self._evaluator.submit_recipe(recipe, self.seed_keys))
        return self._generator

    def _recipe(self, popsize: int) -> SampleRecipe | None:
        _, dist = sampling_state(self.searcher)
        if self._rng_state is None or dist is None or not getattr(self._evaluator, "seed_traffic", False):
            return None
        recipe, self._rng_state = SampleRecipe(dist, self._rng_state, popsize), None  # valid for one sample only
        return recipe

    def _evaluate_batch(self, batch: SolutionBatch) -> None:
        self.handed_over = time.perf_counter()  # evotorch has sampled the population (what a benchmark times)
        values = batch.values.detach().clone()
        pending, self._pending = getattr(self, "_pending", None), None  # valid for one sample only
        if pending is not None and pending[0].popsize == len(values):
            ev = self._evaluator.collect(pending[1], expected=checksums(values))
        elif (recipe := self._recipe(len(values))) is not None:
            ev = self._evaluator.evaluate_recipe(recipe, values, self.seed_keys)
        else:
            ev = self._evaluator(values, self.seed_keys)
        fit = finite_fitness(ev.fitness, self._nan_policy, self.seed_keys)
        batch.set_evals(fit)
        self.last_eval = ev._replace(fitness=fit)


def finite_fitness(fitness: torch.Tensor, nan_policy: str, seed_keys: tuple[int, ...]) -> torch.Tensor:
    """A copy of (P,) ``fitness`` with non-finite values ranked last (``nan_policy=worst``), or
    :class:`NonFiniteFitness` (``error``, or when no member is finite)."""
    fit = fitness.clone()
    bad = ~torch.isfinite(fit)
    if bad.any():
        if nan_policy == "error" or bad.all():
            raise NonFiniteFitness(
                f"{int(bad.sum())} of {len(fit)} members returned a non-finite fitness on tasks "
                f"{seed_keys}; lower es.stdev_init or tighten genome bounds, or set "
                "es.nan_policy=worst to rank such members last"
            )
        fit[bad] = fit[~bad].min() - 1.0
    return fit


def centered_ranks(fitness: torch.Tensor) -> torch.Tensor:
    """(P,) utilities of evotorch's ``"centered"`` ranking (PGPE's fitness shaping): ranks mapped
    linearly onto [-0.5, 0.5], the fittest highest."""
    from evotorch.tools import rank

    return rank(fitness, "centered", higher_is_better=True)


def center_optimizer(cfg: ESConfig, dim: int):
    """The centre optimizer PGPE builds for ``cfg.optimizer`` (evotorch's ClipUp, Adam or SGD),
    with the same settings (step size ``center_lr``, ClipUp's ``max_speed``)."""
    from evotorch.optimizers import get_optimizer_class

    lr = cfg.center_lr or 0.1
    config = {"max_speed": cfg.max_speed or 2 * lr} if cfg.optimizer == "clipup" else None
    return get_optimizer_class(cfg.optimizer, config)(stepsize=float(lr), dtype=torch.float32, solution_length=dim, device="cpu")


def initial_stdev(cfg: ESConfig, genome) -> float | torch.Tensor:
    """``cfg.stdev_init``, or a (D,) vector where ``cfg.stdev_blocks`` sets some blocks' own stdev."""
    if not cfg.stdev_blocks:
        return cfg.stdev_init
    stdev = torch.full((genome.dim,), cfg.stdev_init)
    for name, where in genome.slices().items():
        stdev[where] = cfg.stdev_blocks.get(name, cfg.stdev_init)
    return stdev


def make_searcher(cfg: ESConfig, problem: MetaProblem, center: torch.Tensor, stdev: float | torch.Tensor | None = None) -> SearchAlgorithm:
    """The evotorch search algorithm named by ``cfg.algorithm``, started at ``center`` with
    ``stdev`` (default ``cfg.stdev_init``; :func:`initial_stdev` gives the per-block one)."""
    stdev = cfg.stdev_init if stdev is None else stdev
    searcher = _searcher(cfg, problem, center, stdev.tolist() if isinstance(stdev, torch.Tensor) else stdev)
    problem.searcher = searcher
    return searcher


def _searcher(cfg: ESConfig, problem: MetaProblem, center: torch.Tensor, stdev: float | list[float]) -> SearchAlgorithm:
    if cfg.algorithm == "pgpe":
        lr = cfg.center_lr or 0.1
        return PGPE(
            problem,
            popsize=cfg.popsize,
            center_learning_rate=lr,
            stdev_learning_rate=cfg.stdev_lr or 0.1,
            stdev_init=stdev,
            center_init=center,
            optimizer=cfg.optimizer,
            optimizer_config={"max_speed": cfg.max_speed or 2 * lr} if cfg.optimizer == "clipup" else None,
            ranking_method="centered",
            stdev_max_change=cfg.stdev_max_change,
            symmetric=True,
        )
    if cfg.algorithm == "snes":
        return SNES(
            problem,
            popsize=cfg.popsize,
            stdev_init=stdev,
            center_init=center,
            center_learning_rate=cfg.center_lr,
            stdev_learning_rate=cfg.stdev_lr,
        )
    if cfg.algorithm == "cem":
        return CEM(
            problem,
            popsize=cfg.popsize,
            parenthood_ratio=cfg.parenthood_ratio,
            stdev_init=stdev,
            center_init=center,
            stdev_max_change=cfg.stdev_max_change,
        )
    if cfg.algorithm == "cmaes":
        return CMAES(problem, popsize=cfg.popsize, stdev_init=stdev, center_init=center, separable=cfg.separable)
    raise ValueError(f"unknown es.algorithm '{cfg.algorithm}'")  # unreachable: the config validates it


def time_update_and_ranking(searcher: SearchAlgorithm, update, ranking) -> None:
    """For benchmarks (es_l2l.bench.scaling): route the searcher's distribution update through
    ``update(fn) -> fn`` and this generation's ranking (its distribution's gradient estimate) through
    ``ranking(fn) -> fn``, e.g. timers. Call again each generation: the distribution is replaced."""
    if not getattr(searcher, "_timed_update", False):
        searcher._update_distribution = update(searcher._update_distribution)
        searcher._timed_update = True
    dist = searcher._distribution
    dist.compute_gradients = ranking(dist.compute_gradients)


def center_of(searcher: SearchAlgorithm) -> torch.Tensor:
    """The search distribution's mean: the genome ES currently proposes."""
    if isinstance(searcher, CMAES):
        return searcher.m.detach().clone()
    return searcher.status["center"].detach().clone()


def stdev_of(searcher: SearchAlgorithm) -> float:
    if isinstance(searcher, CMAES):
        return float(searcher.sigma)
    return float(searcher.status["stdev"].mean())
