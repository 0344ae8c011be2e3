"""The evolution-strategy outer loop: evotorch's search over the flat genome, one status dict a generation.

Each generation the searcher samples a population around its centre, the evaluator (Ray actors
or the driver itself) scores every member on the same fresh tasks, and the searcher updates.
Resumable: every ``run.checkpoint_every`` generations the status dict carries the whole search
state, from which :meth:`ES.run` continues to exactly the numbers of an uninterrupted run.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from es_l2l.outer.base import OuterLoop, RunResult, Subscriber
from es_l2l.outer.driver import Driver
from es_l2l.schema import BLOCKS, Strict
from es_l2l.seeds import STREAM_SEARCH, STREAM_TRAIN, derive_seed

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig
    from es_l2l.genome import Genome
    from es_l2l.traffic import Evaluator


ALGORITHMS = ("pgpe", "snes", "cem", "cmaes")


class ESConfig(Strict):
    """Evolution strategy (evotorch). ``None`` means the algorithm's own default."""

    algorithm: Literal[ALGORITHMS] = "pgpe"  # type: ignore[valid-type]
    popsize: int = Field(64, ge=4, description="population size P (even for antithetic PGPE)")
    stdev_init: float = Field(0.05, gt=0, description="initial search stdev (search space)")
    stdev_blocks: dict[Literal[BLOCKS], float] = Field(  # type: ignore[valid-type]
        default_factory=dict,
        description="initial stdev of chosen genome blocks, overriding stdev_init there, e.g. {w_out: 0.3, b_out: 0.3}: "
        "wider search on the readout varies behaviour without upsetting the recurrent memory (pgpe, snes, cem)",
    )
    center_lr: float | None = Field(0.1, gt=0, description="PGPE/SNES center learning rate (None: SNES default)")
    stdev_lr: float | None = Field(None, gt=0, description="PGPE/SNES stdev learning rate")
    optimizer: Literal["clipup", "adam", "sgd"] = Field("clipup", description="PGPE center optimizer")
    max_speed: float | None = Field(None, gt=0, description="ClipUp max speed (default 2 * center_lr)")
    stdev_max_change: float = Field(0.2, gt=0, description="PGPE: max relative stdev change per step")
    parenthood_ratio: float = Field(0.25, gt=0, lt=1, description="CEM elite fraction")
    separable: bool = Field(True, description="CMA-ES: separable (diagonal) covariance")
    nan_policy: Literal["error", "worst"] = Field(
        "error", description="a NaN fitness stops the run (error) or ranks last (worst)"
    )
    traffic: Literal["seeds", "vectors"] | None = Field(
        None,
        description="what Ray workers receive: the distribution and the sampler's RNG state, from which they "
        "regenerate their members (seeds: O(P + D) bytes a generation), or the members themselves (vectors: "
        "O(P x D)); None: seeds for pgpe, snes and cem, vectors for cmaes",
    )
    perturbation: Literal["full", "lowrank"] = Field(
        "full",
        description="full: Gaussian noise on every coordinate (evotorch); lowrank: each searched matrix block "
        "(w_in, w_rec, w_out) of member i moves by stdev * A_i B_i^T / sqrt(rank) (EGGROLL, Sarkar et al. 2025), "
        "vector blocks by full Gaussian noise, antithetic pairs, a fixed stdev, the centre optimizer of "
        "es.optimizer (pgpe only)",
    )
    rank: int = Field(1, ge=1, description="es.perturbation=lowrank: rank r of each matrix perturbation A_i B_i^T")
    lowrank_forward: Literal["shared", "explicit"] = Field(
        "explicit",
        description="es.perturbation=lowrank: simulate the population as P explicit matrices (explicit: the full-rank "
        "C kernel) or as the centre's matrices applied once plus rank-r corrections (shared: 1.0-2.4x faster at "
        "N >= 220 with rank <= 4, docs/benchmarks.md; where the members' matrices are exactly that: dense "
        "connectivity, weights inside their bounds, no mirror; a family whose members share their inputs; needs "
        "seed traffic with Ray workers)",
    )

    @model_validator(mode="after")
    def _even(self):
        if self.algorithm == "pgpe" and self.popsize % 2:
            raise ValueError(f"es.popsize must be even for pgpe (antithetic pairs), got {self.popsize}")
        bad = {k: v for k, v in self.stdev_blocks.items() if not v > 0}
        if bad:
            raise ValueError(f"es.stdev_blocks must be positive, got {bad}")
        if self.algorithm == "cmaes" and self.stdev_blocks:
            raise ValueError("es.stdev_blocks needs a per-coordinate stdev (pgpe, snes, cem); CMA-ES takes one scalar stdev_init")
        if self.perturbation == "lowrank" and self.algorithm != "pgpe":
            raise ValueError(f"es.perturbation=lowrank needs es.algorithm=pgpe (antithetic pairs and a centre optimizer), "
                             f"got {self.algorithm}; set es.algorithm=pgpe or es.perturbation=full")
        if self.perturbation == "lowrank" and self.lowrank_forward == "shared" and self.traffic == "vectors":
            raise ValueError("es.lowrank_forward=shared needs es.traffic=seeds (workers build the members' factors "
                             "from the seeds); set es.traffic=seeds or es.lowrank_forward=explicit")
        if self.algorithm == "cmaes" and self.traffic == "seeds":
            raise ValueError("es.traffic=seeds needs a Gaussian search distribution (pgpe, snes, cem); set es.traffic=vectors for cmaes")
        return self

    @property
    def seed_traffic(self) -> bool:
        """Whether Ray workers regenerate their members from the sampler's state."""
        return self.traffic == "seeds" or (self.traffic is None and self.algorithm != "cmaes")


def run_es(
    cfg: ExperimentConfig,
    genome: Genome,
    evaluator: Evaluator,
    subscribers: list[Subscriber] = (),
    resume: dict | None = None,
) -> RunResult:
    """Meta-train with the configured evolution strategy; returns the initial, final and best genomes.

    Every ``run.checkpoint_every`` generations the status dict carries ``resume_state``: the whole
    search (distribution, optimizer state, sampler RNG state, as plain data: es_l2l.search_state)
    and the driver's own state (generation, best genome). ``resume=`` that dict continues
    after its generation; since each generation's tasks are a pure function of (seed, generation),
    the continued run ends exactly where an uninterrupted one does.
    """
    if cfg.es.perturbation == "lowrank":
        return run_lowrank(cfg, genome, evaluator, subscribers, resume)
    from es_l2l.outer.evo import MetaProblem, center_of, initial_stdev, make_searcher, stdev_of  # evotorch: imported when used

    from es_l2l.search_state import restore_searcher, searcher_state

    search_seed = derive_seed(cfg.run.seed, STREAM_SEARCH) % (2**31)
    problem = MetaProblem(genome.dim, evaluator, seed=search_seed, nan_policy=cfg.es.nan_policy)
    searcher = make_searcher(cfg.es, problem, genome.initial_vector(), initial_stdev(cfg.es, genome))
    if resume is not None:  # the fresh searcher takes the saved state: plain data, no pickle
        restore_searcher(searcher, resume["searcher"])
    driver = Driver(cfg, genome, genome.initial_vector(), subscribers, resume=resume)
    state = lambda: {"searcher": searcher_state(searcher)}  # noqa: E731  tensors and numbers (es_l2l.search_state)
    for gen in range(driver.first_generation, cfg.run.generations + 1):
        t0 = time.perf_counter()
        problem.start_generation((cfg.run.seed, STREAM_TRAIN, gen))  # with seed traffic, this sends the work
        searcher.step()
        seconds = time.perf_counter() - t0
        ev = problem.last_eval
        metrics = {
            "fitness_mean": float(ev.fitness.mean()),
            "fitness_best": float(ev.fitness.max()),
            "fitness_std": float(ev.fitness.std()),
            **ev.summary(),
            "stdev": stdev_of(searcher),
        }
        if driver.record(gen, seconds, ev.neuron_steps, metrics, lambda: center_of(searcher), state):
            break
    return driver.result(center_of(searcher))


def run_lowrank(
    cfg: ExperimentConfig,
    genome: Genome,
    evaluator: Evaluator,
    subscribers: list[Subscriber] = (),
    resume: dict | None = None,
) -> RunResult:
    """:func:`run_es` with low-rank perturbations (``es.perturbation=lowrank``, es_l2l.outer.lowrank).

    With seed traffic each worker regenerates its members from the generation's recipe; the
    checksums prove they drew the driver's members.
    """
    from es_l2l.outer.evo import finite_fitness
    from es_l2l.outer.lowrank import LowRankSearch
    from es_l2l.traffic import checksums

    search = LowRankSearch.for_run(cfg, genome)
    if resume is not None:
        search.restore(resume["searcher"])
    driver = Driver(cfg, genome, genome.initial_vector(), subscribers, resume=resume)
    seeds = hasattr(evaluator, "submit_recipe") and getattr(evaluator, "seed_traffic", False)
    for gen in range(driver.first_generation, cfg.run.generations + 1):
        t0 = time.perf_counter()
        keys = (cfg.run.seed, STREAM_TRAIN, gen)
        recipe = search.ask(gen)
        if seeds:
            refs = evaluator.submit_recipe(recipe, keys)  # the workers draw while the driver does
            ev = evaluator.collect(refs, expected=checksums(recipe.rows()))
        elif hasattr(evaluator, "evaluate_lowrank"):  # in this process
            ev = evaluator.evaluate_lowrank(recipe, keys)
        else:
            ev = evaluator(recipe.rows(), keys)
        fit = finite_fitness(ev.fitness, cfg.es.nan_policy, keys)
        ev = ev._replace(fitness=fit)
        search.tell(recipe, fit)
        seconds = time.perf_counter() - t0
        metrics = {
            "fitness_mean": float(fit.mean()),
            "fitness_best": float(fit.max()),
            "fitness_std": float(fit.std()),
            **ev.summary(),
            "stdev": search.stdev,
        }
        if driver.record(gen, seconds, ev.neuron_steps, metrics, lambda: search.center.clone(), lambda: {"searcher": search.state()}):
            break
    return driver.result(search.center.clone())


class ES(OuterLoop):
    name = section = "es"
    config = ESConfig
    uses_evaluator = True
    resumable = True

    def check(self, cfg: ExperimentConfig) -> None:
        for block in cfg.es.stdev_blocks:
            if block not in cfg.genome.search:
                raise ValueError(f"es.stdev_blocks lists '{block}' but genome.search does not; add it to genome.search")
        if cfg.es.perturbation == "lowrank":
            from es_l2l.outer.lowrank import check_lowrank

            check_lowrank(cfg)

    def describe(self, cfg: ExperimentConfig, family) -> str:
        if cfg.es.perturbation == "lowrank":
            return f"{cfg.es.algorithm.upper()} rank-{cfg.es.rank} P={cfg.es.popsize}"
        return f"{cfg.es.algorithm.upper()} P={cfg.es.popsize}"

    def run(self, cfg, genome, evaluator, subscribers=(), resume=None) -> RunResult:
        return run_es(cfg, genome, evaluator, subscribers, resume=resume)
