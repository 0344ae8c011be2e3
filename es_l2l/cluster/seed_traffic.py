"""What travels between the driver and the evaluation workers, and how little of it.

Two kinds of traffic (``es.traffic``). *vectors*: each worker receives its members, O(P x D)
bytes a generation. *seeds* (Salimans et al. 2017, "Evolution Strategies as a Scalable
Alternative to Reinforcement Learning", section 2.1): the driver sends the search distribution
(centre and stdev, O(D)) and the state of the generator the search is about to sample from (O(1));
each worker regenerates the same (P, D) sample with the same evotorch code, keeps its rows, and
sends back per-member scalars, O(P). A per-member checksum of the regenerated rows comes back
too, so a worker whose torch or evotorch version draws differently is an error, never a silently
wrong update. Results travel as plain numpy arrays (:func:`pack`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from es_l2l.families.base import Evaluation


class Evaluator(Protocol):
    def __call__(self, vectors: torch.Tensor, seed_keys: tuple[int, ...]) -> Evaluation: ...

    def close(self) -> None: ...


class SampleRecipe(NamedTuple):
    """What regenerates the population evotorch sampled this generation, without the population."""

    distribution: Any  # evotorch Distribution (parameters: O(D)), or its lean() form for the trip
    rng_state: Any  # CPU generator state before sampling (ByteTensor, or numpy in the lean form; O(1))
    popsize: int


INLINE_BYTES = 100_000  # Ray inlines smaller task arguments; a bigger recipe goes to the object store once


def lean(recipe):
    """The recipe with its distribution as (class, parameters as numpy arrays, dtype name) and
    the generator state as numpy: pickled in microseconds (an evotorch distribution with
    torch tensors takes about a millisecond each way)."""
    if hasattr(recipe, "lean"):  # a recipe of its own kind (es_l2l.outer.lowrank)
        return recipe.lean()
    dist = recipe.distribution
    params = {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in dist.parameters.items()}
    return SampleRecipe((type(dist), params, str(dist.dtype).removeprefix("torch.")), recipe.rng_state.numpy(), recipe.popsize)


def _tensor(a: Any) -> Any:
    """numpy arrays as tensors (Ray hands back read-only arrays: those are copied), anything else as is."""
    if not isinstance(a, np.ndarray):
        return a
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _distribution(spec: Any) -> Any:
    if not isinstance(spec, tuple):
        return spec
    cls, params, dtype = spec
    tensors = {k: _tensor(v) for k, v in params.items()}
    return cls(parameters=tensors, dtype=getattr(torch, dtype), device="cpu")


def regenerate(recipe: SampleRecipe) -> torch.Tensor:
    """The (P, D) sample evotorch drew from ``recipe.distribution`` with a generator in ``rng_state``."""
    gen = torch.Generator()
    gen.set_state(_tensor(recipe.rng_state))
    dist = _distribution(recipe.distribution)
    out = dist.make_empty(num_solutions=recipe.popsize)
    dist.sample(out=out, generator=gen)
    return out


def recipe_bytes(recipe) -> int:
    """The bytes of a :func:`lean` recipe's arrays (whether Ray should get it through the object store)."""
    if hasattr(recipe, "nbytes"):
        return recipe.nbytes
    return sum(a.nbytes for a in recipe.distribution[1].values() if isinstance(a, np.ndarray))


def rows(recipe, lo: int, hi: int) -> torch.Tensor:
    """Members ``lo:hi`` of the population a recipe regenerates (a low-rank recipe draws only those)."""
    if hasattr(recipe, "rows"):
        return recipe.rows(lo, hi)
    return regenerate(recipe)[lo:hi]


def checksums(vectors: torch.Tensor) -> torch.Tensor:
    """(P,) float64 row sums: equal rows give equal sums, bit for bit."""
    return vectors.detach().cpu().double().sum(dim=1)


def pack(e: Evaluation) -> tuple:
    """An evaluation as its class and plain numpy arrays for the trip back to the driver (pickling
    a numpy array costs microseconds, a torch tensor about a hundred)."""
    return type(e), [t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t for t in e]


def unpack(packed: tuple) -> Evaluation:
    kind, fields = packed
    return kind(*[_tensor(f) for f in fields])
