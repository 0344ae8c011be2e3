"""The parameter space: named blocks, bounds, transforms, batched encode/decode.

A *genome* is a flat search-space vector. ``decode`` splits a (P, D) population into named
search-space blocks ("genes", each (P, *shape)) and ``encode`` concatenates them back: a pure
reshape, so the round trip is exact. Frozen blocks come from the genome's base values.
``to_model`` then applies each block's transform and bounds (log space for time constants and
the baseline threshold, clipping for weights, thresholding for connectivity logits) and returns
the population's :class:`~es_l2l.snn.LSNNParams`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from typing import TYPE_CHECKING

from es_l2l.families import family_of
from es_l2l.seeds import STREAM_INIT, generator
from es_l2l.snn import LSNNParams, decay

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig


@dataclass(frozen=True)
class Block:
    name: str
    shape: tuple[int, ...]  # per member
    transform: str  # "identity" | "log" | "logit"
    low: float  # model-space bounds
    high: float

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def bounds_search(self) -> tuple[float, float]:
        if self.transform == "log":
            return math.log(self.low), math.log(self.high)
        return self.low, self.high


@dataclass(frozen=True)
class Genome:
    """Block layout plus base (initial and frozen) values, all in search space."""

    blocks: tuple[Block, ...]
    searched: tuple[str, ...]
    base: dict[str, torch.Tensor]  # name -> (*shape) search-space values
    n_in: int
    n_out: int
    n_lif: int
    n_alif: int
    tau_a_lif: float
    tau_out: float
    dt: float
    mirror: tuple[torch.Tensor, torch.Tensor] | None = None  # (perm_in, perm_out) of a mirror symmetry

    def block_perms(self) -> dict[str, tuple[torch.Tensor, ...]]:
        """Per block, the index map of each per-member axis under the mirror (``mirror`` set).

        Hidden neurons pair up by reversal within each group (LIF ``i <-> n_lif - 1 - i``, ALIF
        likewise), inputs and readout follow the task's maps.
        """
        assert self.mirror is not None
        perm_in, perm_out = self.mirror
        alif = torch.arange(self.n_alif).flip(0)
        hidden = torch.cat([torch.arange(self.n_lif).flip(0), self.n_lif + alif])
        return {
            "w_in": (perm_in, hidden),
            "w_rec": (hidden, hidden),
            "w_out": (hidden, perm_out),
            "b_out": (perm_out,),
            "tau_m": (hidden,),
            "tau_a": (alif,),
            "b0": (hidden,),
            "beta": (alif,),
            "mask_in": (perm_in, hidden),
            "mask_rec": (hidden, hidden),
        }

    def symmetrize(self, genes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Project every block (P, *shape) onto the mirror-invariant ones: ``(g + g o mirror) / 2``.

        A projection (applying it twice changes nothing) and linear, so gradients pass through.
        With it the network commutes with the mirror: mirrored input spikes give mirrored
        spikes and a readout with left and right swapped. Identity without ``mirror``.
        """
        if self.mirror is None:
            return genes
        perms = self.block_perms()
        return {name: (g + _permute(g, perms[name])) / 2 for name, g in genes.items()}

    @property
    def block_map(self) -> dict[str, Block]:
        return {b.name: b for b in self.blocks}

    @property
    def dim(self) -> int:
        bm = self.block_map
        return sum(bm[n].size for n in self.searched)

    def slices(self) -> dict[str, slice]:
        bm, out, start = self.block_map, {}, 0
        for name in self.searched:
            out[name] = slice(start, start + bm[name].size)
            start += bm[name].size
        return out

    def initial_vector(self) -> torch.Tensor:
        """The base values of the searched blocks as one (D,) vector."""
        return self.encode({n: v.unsqueeze(0) for n, v in self.base.items()})[0]

    def encode(self, genes: dict[str, torch.Tensor]) -> torch.Tensor:
        """Searched blocks (P, *shape) -> (P, D)."""
        parts = [genes[n].reshape(genes[n].shape[0], -1) for n in self.searched]
        return torch.cat(parts, dim=1)

    def decode(self, vectors: torch.Tensor) -> dict[str, torch.Tensor]:
        """(P, D) -> every block (P, *shape); frozen blocks broadcast from the base values."""
        if vectors.dim() != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected genomes of shape (P, {self.dim}), got {tuple(vectors.shape)}")
        pop, sl, bm = vectors.shape[0], self.slices(), self.block_map
        genes = {}
        for block in self.blocks:
            if block.name in sl:
                genes[block.name] = vectors[:, sl[block.name]].reshape(pop, *block.shape)
            else:
                base = self.base[block.name].to(vectors.device, vectors.dtype)
                genes[block.name] = base.expand(pop, *bm[block.name].shape)
        return genes

    def search_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-coordinate (D,) lower and upper bounds in search space."""
        bm, lows, highs = self.block_map, [], []
        for name in self.searched:
            lo, hi = bm[name].bounds_search()
            lows.append(torch.full((bm[name].size,), lo))
            highs.append(torch.full((bm[name].size,), hi))
        return torch.cat(lows), torch.cat(highs)

    def to_model(self, genes: dict[str, torch.Tensor]) -> LSNNParams:
        """Search-space blocks -> model parameters of the whole population (pure, differentiable)."""
        bm, genes = self.block_map, self.symmetrize(genes)

        def value(name: str) -> torch.Tensor:
            block, g = bm[name], genes[name]
            lo, hi = block.bounds_search()
            g = g.clamp(lo, hi)
            return torch.exp(g) if block.transform == "log" else g

        w_in, w_rec = value("w_in"), value("w_rec")
        pop, n = w_rec.shape[0], w_rec.shape[-1]
        mask_in = (genes["mask_in"] > 0).to(w_in.dtype)
        no_autapse = 1.0 - torch.eye(n, dtype=w_rec.dtype, device=w_rec.device)
        mask_rec = (genes["mask_rec"] > 0).to(w_rec.dtype) * no_autapse
        like = lambda fill, k: torch.full((pop, k), fill, dtype=w_rec.dtype, device=w_rec.device)  # noqa: E731
        tau_a = torch.cat([like(self.tau_a_lif, self.n_lif), value("tau_a")], dim=1)
        beta = torch.cat([like(0.0, self.n_lif), value("beta")], dim=1)
        return LSNNParams(
            w_in=w_in * mask_in,
            w_rec=w_rec * mask_rec,
            w_out=value("w_out"),
            b_out=value("b_out"),
            alpha=decay(value("tau_m"), self.dt),
            rho=decay(tau_a, self.dt),
            b0=value("b0"),
            beta=beta,
            kappa=like(math.exp(-self.dt / self.tau_out), 1),
        )

    def params(self, vectors: torch.Tensor) -> LSNNParams:
        """(P, D) genomes -> model parameters."""
        return self.to_model(self.decode(vectors))


def _permute(g: torch.Tensor, perms: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``g`` (P, *shape) with each per-member axis re-indexed by its map."""
    for axis, perm in enumerate(perms, start=1):
        g = g.index_select(axis, perm.to(g.device))
    return g


def _mirror_base(value: torch.Tensor, perms: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A mirror-invariant copy of an initial block: each pair of mirror images takes the draw of
    its lower-indexed member, so every entry keeps the draw's distribution (no averaging)."""
    index = torch.arange(value.numel()).reshape(1, *value.shape)
    image = _permute(index, perms)
    return torch.where(index <= image, value.unsqueeze(0), _permute(value.unsqueeze(0), perms))[0]


def build_genome(cfg: ExperimentConfig, n_in: int | None = None, n_out: int | None = None) -> Genome:
    """Blocks and reference initial values (weights ``N(0, 1) / sqrt(n_pre)``) from the config.

    ``n_in`` and ``n_out`` default to the task family's (:meth:`TaskFamily.io_sizes`).

    The initial weights are drawn from a generator derived from the run seed, so the same config
    and seed always start from the same network.
    """
    family = family_of(cfg)
    family_in, family_out = family.io_sizes(cfg.task)
    n_in = family_in if n_in is None else n_in
    n_out = family_out if n_out is None else n_out
    m, g = cfg.model, cfg.genome
    n = m.n_lif + m.n_alif
    wb = g.weight_bound
    blocks = (
        Block("w_in", (n_in, n), "identity", -wb, wb),
        Block("w_rec", (n, n), "identity", -wb, wb),
        Block("w_out", (n, n_out), "identity", -wb, wb),
        Block("b_out", (n_out,), "identity", -wb, wb),
        Block("tau_m", (n,), "log", *g.tau_m_bounds),
        Block("tau_a", (m.n_alif,), "log", *g.tau_a_bounds),
        Block("b0", (n,), "log", *g.b0_bounds),
        Block("beta", (m.n_alif,), "identity", *g.beta_bounds),
        Block("mask_in", (n_in, n), "logit", -1.0, 1.0),
        Block("mask_rec", (n, n), "logit", -1.0, 1.0),
    )
    gen = generator(cfg.run.seed, STREAM_INIT)
    randn = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    rand = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    base = {
        "w_in": m.w_in_scale * randn(n_in, n) / math.sqrt(n_in),
        "w_rec": m.w_rec_scale * randn(n, n) / math.sqrt(n),
        "w_out": randn(n, n_out) / math.sqrt(n),
        "b_out": torch.zeros(n_out),
        "tau_m": torch.full((n,), math.log(m.tau_m)),
        "tau_a": torch.full((m.n_alif,), math.log(m.tau_a)),
        "b0": torch.full((n,), math.log(m.b0)),
        "beta": torch.full((m.n_alif,), m.beta),
        # A connection exists where its logit is positive: p - U(0, 1) > 0 with probability p.
        "mask_in": m.p_in - rand(n_in, n),
        "mask_rec": m.p_rec - rand(n, n),
    }
    searched = tuple(b.name for b in blocks if b.name in set(g.search))
    mirror = None
    if cfg.genome.mirror:
        mirror = family.mirror_permutations(cfg.task)
        if len(mirror[0]) != n_in or len(mirror[1]) != n_out:
            raise ValueError(f"genome.mirror needs the family's own {len(mirror[0])} inputs and {len(mirror[1])} outputs, "
                             f"got n_in={n_in}, n_out={n_out}; drop the override or set genome.mirror=false")
    genome = Genome(
        blocks=blocks,
        searched=searched,
        base=base,
        n_in=n_in,
        n_out=n_out,
        n_lif=m.n_lif,
        n_alif=m.n_alif,
        tau_a_lif=m.tau_a,
        tau_out=m.tau_out,
        dt=m.dt,
        mirror=mirror,
    )
    if mirror is None:
        return genome
    perms = genome.block_perms()
    return dataclasses.replace(genome, base={k: _mirror_base(v, perms[k]) for k, v in base.items()})
