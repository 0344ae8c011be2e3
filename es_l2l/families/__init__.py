"""Task families: the registry. The only place that names them.

``FAMILIES`` maps a config's ``task.family`` to a :class:`es_l2l.families.base.TaskFamily`. The first
entry is the default family (a config without ``task.family``). A family that lives outside this
package is named by its import path instead, ``task.family: package.module:attribute``, and needs
no entry here (Ray workers import it by the same path).
"""

from __future__ import annotations

import importlib

from es_l2l.families.base import TaskFamily
from es_l2l.families.maze import FAMILY as _MAZE
from es_l2l.families.smnist import FAMILY as _SMNIST
from es_l2l.families.store_recall import FAMILY as _STORE_RECALL
from es_l2l.families.teacher import FAMILY as _TEACHER

FAMILIES: dict[str, TaskFamily] = {"teacher": _TEACHER, "maze": _MAZE, "store_recall": _STORE_RECALL, "smnist": _SMNIST}


def default_family() -> str:
    return next(iter(FAMILIES))


def get_family(name: str) -> TaskFamily:
    """The family registered as ``name``, or importable as ``module:attribute``; ValueError otherwise."""
    if name in FAMILIES:
        return FAMILIES[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            family = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"task family '{name}' cannot be imported ({type(exc).__name__}: {exc}); check the module path") from None
        if not isinstance(family, TaskFamily):
            raise ValueError(f"'{name}' is not a TaskFamily (es_l2l.families.base); point task.family at a family object")
        return family
    raise ValueError(f"unknown task family '{name}'; allowed: {', '.join(FAMILIES)}, or package.module:attribute")


def family_of(task) -> TaskFamily:
    """The family of a validated ``task`` section."""
    return get_family(task.family)
