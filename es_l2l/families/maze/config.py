"""The maze family's config section (``task:`` with ``family: maze``), its A2C loss settings included."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from es_l2l.schema import Strict, TaskSection


class A2CConfig(Strict):
    """Advantage actor-critic through the spiking dynamics (the maze family's gradient outer loop).

    Per episode: returns ``R_t = sum_k discount^k r_{t+k}``, advantage ``A_t = R_t - V_t``, loss
    ``mean_t[-log pi(a_t) A_t + value_weight (R_t - V_t)^2 - entropy_weight H(pi_t)]``; the
    optimiser, learning rate, clipping and trained blocks come from ``bptt``.
    """

    discount: float = Field(0.9, ge=0, le=1, description="reward discount per environment step")
    value_weight: float = Field(0.5, ge=0, description="weight of the value (critic) loss")
    entropy_weight: float = Field(0.01, ge=0, description="weight of the policy-entropy bonus")
    normalize_advantages: bool = Field(True, description="scale advantages to unit variance over the batch")


class MazeConfig(TaskSection):
    """Learning from rewards: grid mazes with the goal in an unknown corner (meta-RL navigation)."""

    training_only: ClassVar[tuple[str, ...]] = ("batch_size", "a2c")  # the A2C loss: tuned per outer loop

    family: Literal["maze"] = "maze"
    rows: int = Field(4, ge=2, le=100, description="grid rows")
    cols: int = Field(5, ge=2, le=100, description="grid columns")
    n_steps: int = Field(100, ge=1, le=10000, description="environment steps (moves) per episode")
    neurons_per_channel: int = Field(4, ge=1, le=1000, description="input neurons per one-hot channel")
    position_code: Literal["cell", "rowcol", "both"] = Field(
        "cell",
        description="how the current position is spike coded: one channel per cell (rows * cols), one per row "
        "plus one per column (rows + cols, two active), or both",
    )
    rate_hz: float = Field(200.0, gt=0, le=1000, description="Poisson rate of an active input neuron")
    ms_per_step: int = Field(10, ge=1, le=1000, description="simulation steps (ms) per environment step")
    batch_size: int = Field(16, ge=1, description="mazes per generation (same for every member)")
    balanced_goals: bool = Field(
        True, description="every batch of mazes holds each corner equally often (each maze's goal is still uniform)"
    )
    policy: Literal["sample", "greedy"] = Field(
        "sample",
        description="how the agent acts on its softmax policy when evaluated (ES fitness, validation, test): "
        "sample an action (shared uniforms, the same for every member) or take the most probable one; "
        "A2C training always samples",
    )
    temperature: float = Field(
        1.0, gt=0, description="softmax temperature of the policy: logits are divided by it (small: nearly greedy)"
    )
    search_curriculum: int = Field(
        0,
        ge=0,
        description="training curriculum: for the first N generations (ES) or steps (A2C, hybrid) the training mazes' goal "
        "moves to a random corner after every find, which rewards searching all four corners; validation and test "
        "always play the task family itself",
    )
    a2c: A2CConfig = Field(default_factory=lambda: A2CConfig(), description="the A2C loss of gradient outer loops (BPTT, hybrid)")
