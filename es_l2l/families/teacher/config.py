"""The teacher family's config section (``task:`` with ``family: teacher``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from es_l2l.schema import TaskSection


class TeacherConfig(TaskSection):
    """Learning from a teacher: targets are random 2-layer sigmoid networks G(x1, x2)."""

    family: Literal["teacher"] = "teacher"
    n_trials: int = Field(30, ge=2, le=1000, description="trials per episode")
    trial_ms: int = Field(20, ge=2, le=1000, description="steps per trial")
    readout_ms: int = Field(10, ge=1, description="last steps of a trial averaged into the prediction")
    hidden_units: int = Field(8, ge=1, le=1000, description="hidden sigmoid units of G")
    weight_range: float = Field(1.0, gt=0, description="G's weights and biases ~ U[-r, r]")
    input_range: float = Field(6.0, gt=0, description="inputs x1, x2 ~ U[-r, r]")
    output_scale: float = Field(0.5, gt=0, description="G is multiplied by this")
    target_range: float = Field(2.0, gt=0, description="targets are population coded over [-r, r]")
    neurons_per_variable: int = Field(10, ge=2, le=1000, description="input neurons per coded variable")
    max_rate_hz: float = Field(200.0, gt=0, le=1000, description="peak Poisson rate of an input neuron")
    batch_size: int = Field(16, ge=1, description="tasks per generation (same for every member)")
    show_previous_input: bool = Field(
        False,
        description="also present the previous trial's input (x1', x2') beside its target, so that the pair (x', G(x')) "
        "arrives together (two more coded variables; silent in the first trial); the information is what the network "
        "was shown a trial earlier",
    )
    encoding: Literal["poisson", "regular", "analog"] = Field(
        "poisson",
        description="input code of each neuron's tuning-curve rate: poisson (spikes drawn at that rate), regular "
        "(deterministic, evenly spaced spikes at that rate within each trial), or analog (no spikes: the spike "
        "probability per step itself fed as an input current)",
    )
    shape_curriculum: int = Field(
        0, ge=0, description="training steps (generations), counted from 1, whose tasks have each episode's own mean "
        "target removed (offset-free functions: only the shape is left to learn); validation and test tasks never",
    )
    late_weight: float = Field(
        1.0, gt=0, description="training loss: weight of the second half's trials relative to the first half's "
        "(the reported MSE stays unweighted)"
    )
    frequent_targets: int = Field(
        0, ge=0, le=1000, description="the Bayesian-prior experiment: K fixed target networks G that recur in "
        "training (each in frequent_share / K of the training episodes); the held-out report then also scores "
        "test episodes on the K networks beside the fresh ones. 0: off (every episode has a fresh G, as without it)",
    )
    frequent_share: float = Field(
        0.4, ge=0.0, lt=1.0, description="with frequent_targets K > 0: the probability that a training episode's G is "
        "one of the K fixed networks (which one uniform); the rest are fresh. Validation and fresh test episodes never "
        "use them. 0 with K > 0 is the control: trained without them, tested on them",
    )
    frequent_seed: int = Field(
        0, ge=0, description="seed of the K fixed networks; deliberately not the run seed, so that runs with other "
        "run.seed values (replicates) and controls (frequent_share: 0) meet the same K networks",
    )

    @field_validator("encoding", mode="before")
    @classmethod
    def _renamed_encoding(cls, value):
        if value == "rate":
            raise ValueError("task.encoding 'rate' is now called 'analog' (the spike probability fed as an analog "
                             "input current, no spikes); write task.encoding: analog, or poisson / regular for spikes")
        return value

    @model_validator(mode="after")
    def _readout_fits(self):
        if self.readout_ms > self.trial_ms:
            raise ValueError(f"task.readout_ms ({self.readout_ms}) must be at most task.trial_ms ({self.trial_ms})")
        return self
