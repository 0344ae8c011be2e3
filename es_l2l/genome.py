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
from dataclasses import dataclass

import torch

from es_l2l.models import Block, get_model
from es_l2l.seeds import STREAM_INIT, generator


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
    kind: str = "lsnn"  # the model kind (es_l2l.models.MODELS) whose blocks these are

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

    def to_model(self, genes: dict[str, torch.Tensor]):
        """Search-space blocks -> model parameters of the whole population (pure, differentiable):
        :class:`~es_l2l.snn.LSNNParams` for an LSNN, the model kind's own for others."""
        bm, genes = self.block_map, self.symmetrize(genes)

        def value(name: str) -> torch.Tensor:
            block, g = bm[name], genes[name]
            lo, hi = block.bounds_search()
            g = g.clamp(lo, hi)
            return torch.exp(g) if block.transform == "log" else g

        return get_model(self.kind).to_params(self, genes, value)

    def params(self, vectors: torch.Tensor):
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


def build_genome(cfg, n_in: int | None = None, n_out: int | None = None) -> Genome:
    """Blocks and initial values of the config's model kind (:data:`es_l2l.models.MODELS`; for the
    LSNN the reference values, weights ``N(0, 1) / sqrt(n_pre)``). ``cfg`` is the root config
    (:class:`es_l2l.config.ExperimentConfig`, not imported: the outer loops import this module and
    the root config imports them); its ``task``, ``model``, ``genome`` and ``run.seed`` are read.

    ``n_in`` and ``n_out`` default to the task family's (:meth:`TaskFamily.io_sizes`).

    The initial weights are drawn from a generator derived from the run seed, so the same config
    and seed always start from the same network.
    """
    from es_l2l.families import family_of

    family = family_of(cfg.task)
    family_in, family_out = family.io_sizes(cfg.task)
    n_in = family_in if n_in is None else n_in
    n_out = family_out if n_out is None else n_out
    model = get_model(cfg.model.kind)
    blocks = model.blocks(cfg.model, cfg.genome, n_in, n_out)
    base = model.initial(cfg.model, n_in, n_out, generator(cfg.run.seed, STREAM_INIT))
    g = cfg.genome
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
        **model.constants(cfg.model),
        mirror=mirror,
        kind=model.name,
    )
    if mirror is None:
        return genome
    perms = genome.block_perms()
    return dataclasses.replace(genome, base={k: _mirror_base(v, perms[k]) for k, v in base.items()})
