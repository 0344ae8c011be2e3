"""The ``es:`` config section (ES's own settings), apart from the loop so that the evotorch
adapter (es_l2l.outer.evo) can name its type without importing the loop."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from es_l2l.schema import BLOCKS, Strict

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
