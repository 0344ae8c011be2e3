"""The evolution-strategy outer loop: evotorch's search over the flat genome, one status dict a generation.

Each generation the searcher samples a population around its centre, the evaluator (Ray actors
or the driver itself) scores every member on the same fresh tasks, and the searcher updates.
Resumable: every ``run.checkpoint_every`` generations the status dict carries the whole search
state, from which :meth:`EvotorchSearch.restore` continues to exactly the numbers of an uninterrupted run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from es_l2l.outer.base import FLOAT, LoopInputs, LoopSetting, OuterLoop, Search, centre_problem, population_memory
from es_l2l.seeds import STREAM_SEARCH, STREAM_TRAIN, derive_seed

if TYPE_CHECKING:
    from es_l2l.context import RunContext


from es_l2l.outer.es_config import ALGORITHMS, ESConfig  # noqa: F401  (the section, and where users import it from)


def searcher_metrics(ev, stdev) -> dict:
    """One generation's own metrics of an evotorch search: the population's fitness, the family's
    ``train_*`` summary, the search's stdev and the neuron-steps simulated."""
    return {
        "fitness_mean": float(ev.fitness.mean()),
        "fitness_best": float(ev.fitness.max()),
        "fitness_std": float(ev.fitness.std()),
        **ev.summary(),
        "stdev": stdev,
        "neuron_steps": ev.neuron_steps,
    }


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
        return searcher_metrics(self.problem.last_eval, stdev_of(self.searcher))

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
        from es_l2l.cluster.seed_traffic import checksums

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
