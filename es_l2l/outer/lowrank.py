"""Low-rank evolution strategies (EGGROLL: Sarkar, Fellows, Duque et al. 2025, "Evolution Strategies
at the Hyperscale", arXiv 2511.16652): ``es.perturbation: lowrank``.

Member ``2j`` moves each searched matrix block ``M`` (``w_in``, ``w_rec``, ``w_out``) to
``M + sigma A_j B_j^T / sqrt(r)`` and member ``2j + 1`` to ``M - sigma A_j B_j^T / sqrt(r)``
(antithetic pairs), with ``A_j`` (m, r) and ``B_j`` (n, r) standard normal; vector blocks (time
constants, thresholds, biases, mask logits) move by full-rank Gaussian noise ``sigma eps_j``. The
noise of pair ``j`` comes from a generator seeded by (search seed, generation, j), so a worker
regenerates exactly its own members from a :class:`LowRankRecipe` (the centre and a few numbers:
O(P + D) bytes a generation) and no random state has to be carried between generations.

The update is PGPE's centre update (evotorch's symmetric Gaussian, ``divide by the number of
directions``) with these perturbations: centred-rank utilities ``u``,
``g = sum_j (u_2j - u_2j+1) / 2 * delta_j / (P / 2)``, a sum of P/2 rank-r matrices (of high rank),
handed to the centre optimizer of ``es.optimizer`` (evotorch's ClipUp, Adam or SGD) for its step.
``sigma`` stays fixed (``es.stdev_init``, ``es.stdev_blocks``). The members themselves are built
as explicit vectors and go through the genome's usual decode (bounds, connectivity masks, mirror
tying apply exactly as for full-rank ES).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from es_l2l.seeds import SeedKey, derive_seed, generator

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig
    from es_l2l.genome import Genome
    from es_l2l.outer.base import LoopSetting
    from es_l2l.outer.es_config import ESConfig

MATRIX_BLOCKS = ("w_in", "w_rec", "w_out")
FORMAT = 1


def check_lowrank(es: ESConfig, setting: LoopSetting) -> None:
    """Raise ValueError (one sentence naming the key) where ``es.perturbation=lowrank`` cannot apply."""
    search = setting.genome.search
    blocks = {b.name: b for b in setting.model_blocks()}
    matrices = [n for n in MATRIX_BLOCKS if n in search and n in blocks and len(blocks[n].shape) == 2]
    if not matrices:
        raise ValueError(
            f"es.perturbation=lowrank perturbs matrix blocks ({', '.join(MATRIX_BLOCKS)}) but genome.search "
            f"({', '.join(search)}) has none; add one to genome.search or set es.perturbation=full"
        )
    for name in matrices:
        if es.rank > min(blocks[name].shape):
            raise ValueError(
                f"es.rank={es.rank} is larger than the smaller side of {name} {tuple(blocks[name].shape)}; "
                f"set es.rank to at most {min(blocks[name].shape)}"
            )


class Piece(NamedTuple):
    """One searched block's place in the genome vector and how it is perturbed."""

    name: str
    start: int
    stop: int
    shape: tuple[int, ...]
    sigma: float
    matrix: bool  # low-rank (matrix block) or full-rank Gaussian (vector block)


def layout(cfg: ESConfig, genome: Genome) -> tuple[Piece, ...]:
    """The genome's searched blocks in vector order, each with its stdev and kind."""
    bm = genome.block_map
    return tuple(
        Piece(name, where.start, where.stop, tuple(bm[name].shape), float(cfg.stdev_blocks.get(name, cfg.stdev_init)),
              name in MATRIX_BLOCKS and len(bm[name].shape) == 2)
        for name, where in genome.slices().items()
    )


def pair_noise(pieces: tuple[Piece, ...], rank: int, seed: int, generation: int, pair: int) -> list[tuple[torch.Tensor, ...]]:
    """Pair ``pair``'s standard-normal draws, per piece: ``(A (m, r), B (n, r))`` or ``(eps (size,),)``."""
    gen = generator(seed, generation, pair)
    out = []
    for p in pieces:
        if p.matrix:
            m, n = p.shape
            out.append((torch.randn(m, rank, generator=gen), torch.randn(n, rank, generator=gen)))
        else:
            out.append((torch.randn(p.stop - p.start, generator=gen),))
    return out


def perturbation(pieces: tuple[Piece, ...], rank: int, noise: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
    """The (D,) search-space step ``delta_j`` of a pair's plus member."""
    parts = []
    for p, draw in zip(pieces, noise):
        if p.matrix:
            a, b = draw
            parts.append((p.sigma / math.sqrt(rank)) * (a @ b.T).reshape(-1))
        else:
            parts.append(p.sigma * draw[0])
    return torch.cat(parts)


class LowRankRecipe(NamedTuple):
    """What regenerates a low-rank generation's members: O(D) for the centre plus a few numbers."""

    center: torch.Tensor  # (D,) search space (numpy in the lean form)
    pieces: tuple[Piece, ...]
    rank: int
    seed: int  # the search seed; pair j's generator is keyed by (seed, generation, j)
    generation: int
    popsize: int

    def noise(self, pair: int) -> list[tuple[torch.Tensor, ...]]:
        return pair_noise(self.pieces, self.rank, self.seed, self.generation, pair)

    def deltas(self, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """(pairs, D) plus-member steps of the pairs that members ``lo:hi`` belong to."""
        hi = self.popsize if hi is None else hi
        return torch.stack([perturbation(self.pieces, self.rank, self.noise(j)) for j in range(lo // 2, (hi + 1) // 2)])

    def rows(self, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """Members ``lo:hi`` as explicit (hi - lo, D) genomes: centre plus or minus their pair's step."""
        hi = self.popsize if hi is None else hi
        center = torch.as_tensor(self.center)
        deltas = self.deltas(lo, hi)
        members = torch.arange(lo, hi)
        sign = torch.where(members % 2 == 0, 1.0, -1.0).unsqueeze(1)
        return center.unsqueeze(0) + sign * deltas[members // 2 - lo // 2]

    def evaluate(self, cfg: ExperimentConfig, genome: Genome, lo: int, hi: int, seed_keys: tuple[int, ...],
                 device: str = "cpu"):
        """Members ``lo:hi`` on the tasks of ``seed_keys``: (the family's Evaluation, their (hi - lo, D) rows).

        With ``es.lowrank_forward=shared``, on a family whose members share their inputs, on CPU,
        they are simulated as the centre plus rank-r corrections (:func:`shared_population`),
        where that is exactly what their explicit matrices are; else as explicit members.
        """
        from es_l2l.context import RunContext
        from es_l2l.families import family_of
        from es_l2l.fitness import evaluate

        members = self.rows(lo, hi)
        family = family_of(cfg.task)
        if cfg.es.lowrank_forward == "shared" and family.shared_inputs and genome.kind == "lsnn" and device == "cpu":
            population = shared_population(genome, self, lo, hi, members)
            if population is not None:
                with torch.no_grad():
                    return family.evaluate(cfg.task, RunContext.of(cfg), population, SeedKey(*seed_keys), cfg.task.batch_size), members
        return evaluate(cfg, genome, members, seed_keys, device=device), members

    def lean(self) -> LowRankRecipe:
        """For the trip to a worker: the centre as numpy (pickled in microseconds)."""
        return self._replace(center=torch.as_tensor(self.center).numpy())

    @property
    def nbytes(self) -> int:
        return int(np.asarray(self.center).nbytes)


FIELDS = {"w_in": ("w_in", "a_in", "b_in"), "w_rec": ("w_rec", "a_rec", "b_rec"), "w_out": ("w_out", "a_out", "b_out")}


def shared_population(genome: Genome, recipe: LowRankRecipe, lo: int, hi: int, members: torch.Tensor):
    """Members ``lo:hi`` as a :class:`es_l2l.snn.lowrank.LowRankPopulation` (the centre's
    matrices, each member's vectors and factors ``a = +-sigma A / sqrt(r)``, ``b = B``), or ``None``
    where their explicit matrices (``members`` decoded: bounds, connectivity masks, mirror tying)
    are not the centre's plus ``a b^T`` to float32 rounding."""
    from es_l2l.snn.lowrank import LowRankFactors, LowRankPopulation, explicit_params

    explicit = genome.params(members)  # the members' model parameters, exactly as full-rank ES builds them
    center = genome.params(torch.as_tensor(recipe.center).unsqueeze(0))
    noise = {j: recipe.noise(j) for j in range(lo // 2, (hi + 1) // 2)}
    factors, shared = {}, {}
    for k, p in enumerate(recipe.pieces):
        if not p.matrix:
            continue
        field, a_name, b_name = FIELDS[p.name]
        scale = torch.tensor([(1.0 if i % 2 == 0 else -1.0) * p.sigma / math.sqrt(recipe.rank) for i in range(lo, hi)])
        factors[a_name] = scale[:, None, None] * torch.stack([noise[i // 2][k][0] for i in range(lo, hi)])
        factors[b_name] = torch.stack([noise[i // 2][k][1] for i in range(lo, hi)])
        shared[field] = getattr(center, field)
    if not shared:
        return None
    population = LowRankPopulation(explicit._replace(**shared), LowRankFactors(**{f: factors.get(f) for f in LowRankFactors._fields}))
    rebuilt = explicit_params(population.center, population.factors)
    for field in shared:
        if not torch.allclose(getattr(rebuilt, field), getattr(explicit, field), rtol=1e-5, atol=1e-6):
            return None  # a mask, a bound or the mirror changed some member's matrix: not low-rank
    return population


def centered_utilities(fitness: torch.Tensor) -> torch.Tensor:
    """The project's fitness shaping (PGPE's ``ranking_method="centered"``): ranks mapped to [-0.5, 0.5]."""
    from es_l2l.outer.evo import centered_ranks

    return centered_ranks(fitness)


def centre_gradient(deltas: torch.Tensor, fitness: torch.Tensor) -> torch.Tensor:
    """PGPE's symmetric centre gradient ``sum_j (u_2j - u_2j+1) / 2 * delta_j / (P / 2)``: (pairs, D), (P,) -> (D,)."""
    u = centered_utilities(fitness)
    diff = (u[0::2] - u[1::2]) / 2
    return (diff.unsqueeze(1) * deltas).sum(dim=0) / len(diff)


class LowRankSearch:
    """The low-rank search's state (centre, centre optimizer) and its ask/tell steps."""

    def __init__(self, es: ESConfig, pieces: tuple[Piece, ...], seed: int, center: torch.Tensor):
        from es_l2l.outer.evo import center_optimizer

        self.pieces, self.rank, self.popsize, self.seed = pieces, es.rank, es.popsize, seed
        self.center = center.detach().clone().to(torch.float32)
        self.optimizer = center_optimizer(es, len(self.center))

    @classmethod
    def for_run(cls, es: ESConfig, seed: int, genome: Genome) -> LowRankSearch:
        """The search of a run (run seed ``seed``), started at the genome's initial vector."""
        from es_l2l.seeds import STREAM_SEARCH

        return cls(es, layout(es, genome), derive_seed(seed, STREAM_SEARCH), genome.initial_vector())

    def ask(self, generation: int) -> LowRankRecipe:
        return LowRankRecipe(self.center.clone(), self.pieces, self.rank, self.seed, generation, self.popsize)

    def tell(self, recipe: LowRankRecipe, fitness: torch.Tensor) -> None:
        """One centre step from the members' (P,) fitness (higher is better)."""
        grad = centre_gradient(recipe.deltas(), fitness)
        self.center = self.center + self.optimizer.ascent(grad)

    @property
    def stdev(self) -> float:
        """The mean per-coordinate stdev (fixed: ``es.stdev_init``, ``es.stdev_blocks``)."""
        total = sum(p.sigma * (p.stop - p.start) for p in self.pieces)
        return total / max(1, sum(p.stop - p.start for p in self.pieces))

    def state(self) -> dict:
        from es_l2l.outer.evo.state import optimizer_state

        return {"format": FORMAT, "class": "LowRankSearch", "center": self.center.clone(),
                "optimizer": optimizer_state(self.optimizer)}

    def restore(self, state: dict) -> None:
        from es_l2l.outer.evo.state import restore_optimizer

        if not (isinstance(state, dict) and state.get("class") == "LowRankSearch" and state.get("format") == FORMAT):
            raise ValueError("resume state does not fit this searcher: it was not saved by a low-rank search (es.perturbation)")
        center = state["center"]
        if not (isinstance(center, torch.Tensor) and center.shape == self.center.shape):
            raise ValueError("resume state does not fit this searcher: its centre has the wrong shape")
        self.center = center.clone().to(torch.float32)
        restore_optimizer(self.optimizer, state["optimizer"])
