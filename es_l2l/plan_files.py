"""The ``compare`` and ``tune`` files as typed models: the same strict sections, bounded YAML loader and
one-line errors (naming the key) as run configs, with one :class:`Budget` both share.

``read_compare_file`` / ``read_tune_file`` return the validated model; every problem raises
:class:`ConfigError` naming the file and the dotted key, before anything (Ray, MLflow) starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from es_l2l.config import _describe, read_yaml
from es_l2l.schema import ConfigError, Strict

FLAGS = {"budget_seconds": "--budget-seconds", "budget_neuron_steps": "--budget-neuron-steps"}


class Budget(Strict):
    """What every arm (compare) or trial (tune) gets: seconds of training or simulated neuron-steps."""

    budget_seconds: float | None = Field(None, gt=0, description="training wall time each arm or trial gets (s)")
    budget_neuron_steps: float | None = Field(None, gt=0, description="simulated neuron-steps each arm or trial gets")

    @model_validator(mode="after")
    def _one(self):
        if self.budget_seconds is not None and self.budget_neuron_steps is not None:
            raise ValueError("give one budget, 'budget_seconds' or 'budget_neuron_steps', not both")
        return self

    def resolve(self, seconds: float | None, neuron_steps: float | None, what: str) -> tuple[str, float]:
        """``("seconds" | "neuron_steps", amount)``: the command line's budget when given (checked like the
        file's), else the file's; ConfigError naming the flag or key when there is none or it is not positive."""
        for key, value in (("budget_seconds", seconds), ("budget_neuron_steps", neuron_steps)):
            if value is not None and not 0 < value < float("inf"):
                raise ConfigError(f"{FLAGS[key]} must be a positive number, got {value:g}")
        if seconds is not None and neuron_steps is not None:
            raise ConfigError("give one budget, --budget-seconds or --budget-neuron-steps, not both")
        if seconds is None and neuron_steps is None:
            seconds, neuron_steps = self.budget_seconds, self.budget_neuron_steps
        if seconds is None and neuron_steps is None:
            raise ConfigError(f"{what} needs a budget: pass --budget-seconds S or --budget-neuron-steps N, or set 'budget_seconds' or "
                              "'budget_neuron_steps' in its file")
        return ("seconds", float(seconds)) if seconds is not None else ("neuron_steps", float(neuron_steps))


class CompareFile(Budget):
    """A comparison file (``configs/compare_*.yaml``)."""

    configs: list[str] = Field(min_length=1, max_length=64, description="experiment YAMLs, relative to this file")
    target: float | None = Field(None, description="validation target for the time/compute-to-target columns")
    set: list[str] = Field(default_factory=list, description="dotted.key=value overrides for every config")  # noqa: A003
    seeds: list[int] | None = Field(None, min_length=1, max_length=1000, description="run every config with each seed")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, tree: Any) -> Any:
        if isinstance(tree, dict) and "target_mse" in tree:
            raise PydanticCustomError("moved_key", "'target_mse' is now 'target' (in the validation objective's own units); rename it")
        return tree

    @model_validator(mode="after")
    def _seeds(self):
        if self.seeds is not None and (len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0):
            raise ValueError(f"seeds must be distinct non-negative integers, got {self.seeds}")
        return self


class TuneFile(Budget):
    """A tuning file (``configs/tune_*.yaml``)."""

    config: str = Field(min_length=1, max_length=4096, description="the experiment YAML, relative to this file")
    space: dict[str, Any] = Field(min_length=1, max_length=1000, description="dotted config key -> {kind: [arguments]}")
    trials: int = Field(16, ge=1, le=100_000, description="number of trials")
    searcher: Literal["optuna", "random"] = Field("optuna", description="Optuna's TPE through Tune, or Tune's random search")
    scheduler: Literal["asha", "none", "fifo"] | None = Field("asha", description="asha stops poor trials early; none runs all")
    grace_period: int = Field(1, ge=1, description="validation rounds before ASHA may stop a trial")
    reduction_factor: float = Field(3.0, gt=1, description="ASHA's reduction factor")
    concurrent_trials: int = Field(1, ge=1, le=4096, description="trials that run at once")
    seed: int = Field(0, ge=0, description="the searcher's seed")
    include_config: bool = Field(True, description="the best config's YAML as an artifact of the parent run")
    set: list[str] = Field(default_factory=list, description="dotted.key=value overrides of the tuned config")  # noqa: A003


def _validate(model: type[Strict], tree: dict[str, Any], where: str) -> Any:
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        message = _describe(exc.errors()[0], model).replace("invalid config value for", "invalid value for").replace("invalid config:", "invalid:")
        message = message.replace("unknown config key", "unknown key")
        raise ConfigError(f"{where}: {message}") from None


def read_compare_file(path: str | Path, tree: dict[str, Any] | None = None) -> CompareFile:
    """``path``'s comparison file (``tree``: its YAML when already read)."""
    tree = read_yaml(path, "a comparison file from configs/") if tree is None else tree
    return _validate(CompareFile, tree, f"comparison file '{path}'")


def read_tune_file(path: str | Path) -> TuneFile:
    tree = read_yaml(path, "a tuning file such as configs/tune_*.yaml")
    if "config" not in tree or "space" not in tree:
        raise ConfigError(f"'{path}' is not a tuning file: it needs 'config' (an experiment YAML) and 'space' (see configs/tune_*.yaml)")
    return _validate(TuneFile, tree, f"tuning file '{path}'")
