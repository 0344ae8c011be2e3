"""The evolution-strategy outer loop: evotorch's search over the flat genome, one status dict a generation.

Each generation the searcher samples a population around its centre, the evaluator (Ray actors
or the driver itself) scores every member on the same fresh tasks, and the searcher updates.
Resumable: every ``run.checkpoint_every`` generations the status dict carries the whole search
state, from which :meth:`EvotorchSearch.restore` continues to exactly the numbers of an uninterrupted run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, model_validator

from es_l2l.outer.base import FLOAT, LoopInputs, LoopSetting, OuterLoop, Search, centre_problem, population_memory
from es_l2l.schema import BLOCKS, Strict
from es_l2l.seeds import STREAM_SEARCH, STREAM_TRAIN, derive_seed

if TYPE_CHECKING:
    from es_l2l.context import RunContext


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


class EvotorchSearch(Search):
    """An evotorch searcher over the flat genome; its state is plain data (es_l2l.outer.evo.state)."""

    def __init__(self, es: ESConfig, ctx: RunContext, inputs: LoopInputs):
        from es_l2l.outer.evo import MetaProblem, initial_stdev, make_searcher  # evotorch: imported when used

        genome = inputs.genome
        self.seed = ctx.seed
        search_seed = derive_seed(ctx.seed, STREAM_SEARCH) % (2**31)
        self.problem = MetaProblem(genome.dim, inputs.evaluator, seed=search_seed, nan_policy=es.nan_policy)
        self.searcher = make_searcher(es, self.problem, genome.initial_vector(), initial_stdev(es, genome))

    def step(self, generation: int) -> dict:
        from es_l2l.outer.evo import stdev_of

        self.problem.start_generation((self.seed, STREAM_TRAIN, generation))  # with seed traffic, this sends the work
        self.searcher.step()
        ev = self.problem.last_eval
        return {
            "fitness_mean": float(ev.fitness.mean()),
            "fitness_best": float(ev.fitness.max()),
            "fitness_std": float(ev.fitness.std()),
            **ev.summary(),
            "stdev": stdev_of(self.searcher),
            "neuron_steps": ev.neuron_steps,
        }

    def centre(self) -> torch.Tensor:
        from es_l2l.outer.evo import center_of

        return center_of(self.searcher)

    def state(self) -> dict:
        from es_l2l.outer.evo.state import searcher_state

        return searcher_state(self.searcher)  # tensors and numbers

    def restore(self, state: dict) -> None:
        from es_l2l.outer.evo.state import restore_searcher

        restore_searcher(self.searcher, state)  # the fresh searcher takes the saved state: plain data, no pickle


class LowRankES(Search):
    """ES with low-rank perturbations (``es.perturbation=lowrank``, es_l2l.outer.lowrank).

    With seed traffic each worker regenerates its members from the generation's recipe; the
    checksums prove they drew the driver's members.
    """

    def __init__(self, es: ESConfig, ctx: RunContext, inputs: LoopInputs):
        from es_l2l.outer.lowrank import LowRankSearch

        self.es, self.seed, self.evaluator = es, ctx.seed, inputs.evaluator
        self.search = LowRankSearch.for_run(es, ctx.seed, inputs.genome)
        self.seeds = hasattr(self.evaluator, "submit_recipe") and getattr(self.evaluator, "seed_traffic", False)

    def step(self, generation: int) -> dict:
        from es_l2l.outer.evo import finite_fitness
        from es_l2l.traffic import checksums

        evaluator, search = self.evaluator, self.search
        keys = (self.seed, STREAM_TRAIN, generation)
        recipe = search.ask(generation)
        if self.seeds:
            refs = evaluator.submit_recipe(recipe, keys)  # the workers draw while the driver does
            ev = evaluator.collect(refs, expected=checksums(recipe.rows()))
        elif hasattr(evaluator, "evaluate_lowrank"):  # in this process
            ev = evaluator.evaluate_lowrank(recipe, keys)
        else:
            ev = evaluator(recipe.rows(), keys)
        fit = finite_fitness(ev.fitness, self.es.nan_policy, keys)
        ev = ev._replace(fitness=fit)
        search.tell(recipe, fit)
        return {
            "fitness_mean": float(fit.mean()),
            "fitness_best": float(fit.max()),
            "fitness_std": float(fit.std()),
            **ev.summary(),
            "stdev": search.stdev,
            "neuron_steps": ev.neuron_steps,
        }

    def centre(self) -> torch.Tensor:
        return self.search.center.clone()

    def state(self) -> dict:
        return self.search.state()

    def restore(self, state: dict) -> None:
        self.search.restore(state)


class ES(OuterLoop):
    """Evolution strategies (evotorch's PGPE, SNES, CEM, CMA-ES; or low-rank PGPE). Resumable: every
    ``run.checkpoint_every`` generations the status dict carries the whole search state (distribution,
    optimizer state, sampler RNG state, as plain data), from which a resumed run continues to exactly
    the numbers of an uninterrupted one (each generation's tasks are a pure function of (seed, generation))."""

    name = section = "es"
    config = ESConfig
    uses_evaluator = True
    popsize_key = "es.popsize"
    resumable = True

    def check(self, setting: LoopSetting) -> None:
        es = self.own(setting)
        for block in es.stdev_blocks:
            if block not in setting.genome.search:
                raise ValueError(f"es.stdev_blocks lists '{block}' but genome.search does not; add it to genome.search")
        if es.perturbation == "lowrank":
            from es_l2l.outer.lowrank import check_lowrank

            check_lowrank(es, setting)

    def describe(self, setting: LoopSetting) -> str:
        es = self.own(setting)
        if es.perturbation == "lowrank":
            return f"{es.algorithm.upper()} rank-{es.rank} P={es.popsize}"
        return f"{es.algorithm.upper()} P={es.popsize}"

    def popsize(self, setting: LoopSetting) -> int:
        return self.own(setting).popsize

    def memory(self, setting: LoopSetting, dim: int) -> dict[str, int]:
        return es_memory(self.own(setting), dim, setting)

    def seed_traffic(self, setting: LoopSetting) -> bool:
        return self.own(setting).seed_traffic

    def state_problem(self, setting: LoopSetting, state: dict, dim: int) -> str | None:
        if state.get("class") == "LowRankSearch":  # the project's own search: a centre
            return centre_problem(state, dim, "center")
        from es_l2l.outer.evo.state import state_problem

        return state_problem(state, dim, self.own(setting).popsize)

    def start(self, section: ESConfig, ctx: RunContext, inputs: LoopInputs) -> Search:
        return (LowRankES if section.perturbation == "lowrank" else EvotorchSearch)(section, ctx, inputs)


def es_memory(es: ESConfig, dim: int, setting: LoopSetting) -> dict[str, int]:
    """An ES population's largest allocations (the hybrid's ES side too)."""
    out = population_memory(es.popsize, dim, setting)
    if es.algorithm == "cmaes" and not es.separable:
        out = {**dict(list(out.items())[:1]), "CMA-ES covariance (D x D x 4 bytes x 3)": 3 * dim * dim * FLOAT, **dict(list(out.items())[1:])}
    return out
