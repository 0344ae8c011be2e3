"""Seeds and generators: every random draw derives from (run seed, stream, generation, member, ...)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


def derive_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys, e.g. (run seed, stream, generation, member)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def generator(*keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded from ``derive_seed(*keys)``."""
    return torch.Generator(device=device).manual_seed(derive_seed(*keys))


# Stream identifiers keep the random draws of different purposes independent.
STREAM_INIT = 1
STREAM_TRAIN = 2
STREAM_VALIDATION = 3
STREAM_SEARCH = 4
STREAM_FAMILY_STATS = 5
STREAM_TEST = 6
STREAM_REWIRE = 7
STREAM_BASELINE = 8
STREAM_FREQUENT = 9  # fixed tasks that recur in training (keyed by their own seed, not the run seed)


class SeedKey(NamedTuple):
    """Names the random draws of one evaluation: the run seed, the stream (``STREAM_*``), and where
    they apply, the generation and the member. Read by field name, never by position."""

    seed: int
    stream: int
    generation: int | None = None
    member: int | None = None

    def keys(self) -> tuple[int, ...]:
        """The integer keys :func:`derive_seed` takes (the fields that are set, in order)."""
        return tuple(k for k in self if k is not None)
