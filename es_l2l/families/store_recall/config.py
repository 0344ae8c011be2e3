"""Configuration of the store-recall family (pydantic, strict: unknown keys are errors).

Time is counted in *symbols* (frames of ``symbol_ms`` steps, 1 step = 1 ms). A delay is the
number of symbols from a STORE frame to its RECALL frame (``recall - store``), so it lasts
``delay * symbol_ms`` ms from the STORE onset to the RECALL onset. Reference (the LSNN tutorial
of Bellec et al.): 12 symbols of 200 ms, expected delay 6 symbols (1.2 s), 100 input neurons
at 50 Hz.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from es_l2l.schema import TaskSection


class StoreRecallTaskConfig(TaskSection):
    """Store-recall sequences: remember the bit shown with STORE, say it at RECALL."""

    family: Literal["store_recall"] = "store_recall"
    n_symbols: int = Field(12, ge=2, le=10_000, description="symbols (frames) per sequence")
    symbol_ms: int = Field(200, ge=1, le=10_000, description="steps (ms) per symbol")
    min_delay: int = Field(1, ge=1, description="shortest store-to-recall delay, in symbols")
    max_delay: int = Field(11, ge=1, description="longest store-to-recall delay, in symbols (uniform in between)")
    n_stores: int = Field(
        1,
        ge=1,
        le=1000,
        description="store-recall pairs per sequence, one after the other (each RECALL asks for the bit of the "
        "STORE just before it; pairs never overlap)",
    )
    distractors: bool = Field(
        True, description="every frame that is neither STORE nor RECALL shows a random bit (False: silent)"
    )
    n_in: int = Field(
        100, ge=4, le=100_000, description="input neurons, split into 4 groups: bit 0, bit 1, store, recall"
    )
    rate_hz: float = Field(50.0, gt=0, le=1000, description="Poisson rate of an active input neuron")
    readout_ms: int | None = Field(
        None, ge=1, description="last steps of each RECALL frame whose readout is averaged (None: the whole frame)"
    )
    batch_size: int = Field(128, ge=1, description="sequences per batch")
    test_sequences: int = Field(1000, ge=1, description="fixed held-out sequences of the test report")

    @model_validator(mode="after")
    def _consistent(self):
        if self.min_delay > self.max_delay:
            raise ValueError(f"min_delay ({self.min_delay}) must be at most max_delay ({self.max_delay})")
        need = self.n_stores * (self.max_delay + 1)
        if self.n_symbols < need:
            raise ValueError(
                f"n_symbols ({self.n_symbols}) must be at least n_stores * (max_delay + 1) = {need} "
                "so that every store-recall pair fits"
            )
        if self.readout_ms is not None and self.readout_ms > self.symbol_ms:
            raise ValueError(f"readout_ms ({self.readout_ms}) must be at most symbol_ms ({self.symbol_ms})")
        return self

    @property
    def n_steps(self) -> int:
        return self.n_symbols * self.symbol_ms

    @property
    def window_ms(self) -> int:
        """Steps per recall window."""
        return self.symbol_ms if self.readout_ms is None else self.readout_ms

    @property
    def expected_delay_ms(self) -> float:
        return 0.5 * (self.min_delay + self.max_delay) * self.symbol_ms

    @property
    def n_inputs(self) -> int:
        return self.n_in

    @property
    def n_outputs(self) -> int:
        return 2
