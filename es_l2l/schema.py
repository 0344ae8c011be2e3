"""The pieces every config section is made of: the strict base model and the one error type.

Kept apart from :mod:`es_l2l.config` (the root schema, which composes the sections that task
families and outer loops contribute) so that a family's or an outer loop's own section can be
declared beside its code without importing the root.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration problem, described in one actionable sentence."""


class Strict(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    # allow_inf_nan=False: every float field in every section refuses inf and nan, in one place
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class TaskSection(Strict):
    """What every family's ``task:`` section has (the family's own model adds the rest)."""

    # Fields that shape training only, never the validation or test tasks: runs compared by
    # ``es-l2l compare`` may differ in them (a family adds e.g. its gradient loss's weights).
    training_only: ClassVar[tuple[str, ...]] = ("batch_size",)

    family: str
    batch_size: int


def allowed_keys(section: Any) -> str:
    return ", ".join(section.model_fields) if isinstance(section, type) and issubclass(section, BaseModel) else "?"


# The genome's parameter blocks (es_l2l.genome), by name: what config sections may list.
BLOCKS = ("w_in", "w_rec", "w_out", "b_out", "tau_m", "tau_a", "b0", "beta", "mask_in", "mask_rec")
DIFFERENTIABLE = ("w_in", "w_rec", "w_out", "b_out", "tau_m", "tau_a", "b0", "beta")  # what gradients can train
