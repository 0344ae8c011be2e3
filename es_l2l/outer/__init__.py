"""Outer loops: the registry. The only place that names them.

``OUTER_LOOPS`` maps a config's ``outer`` to an :class:`es_l2l.outer.base.OuterLoop`; each contributes
its config section (``es:``, ``bptt:``, ``hybrid:``, ``guided:``) to the root config. A loop that
lives outside this package is named by its import path instead, ``outer: package.module:attribute``,
and needs no entry here (Ray workers import it by the same path).
"""

from __future__ import annotations

import importlib

from es_l2l.outer.base import OuterLoop
from es_l2l.outer.bptt import BPTT
from es_l2l.outer.es import ES
from es_l2l.outer.guided import Guided
from es_l2l.outer.hybrid import Hybrid

OUTER_LOOPS: dict[str, OuterLoop] = {"es": ES(), "bptt": BPTT(), "hybrid": Hybrid(), "guided": Guided()}


def default_loop() -> str:
    """The outer loop of a config that names none: the registry's first (ES)."""
    return next(iter(OUTER_LOOPS))


def get_loop(name: str) -> OuterLoop:
    """The loop registered as ``name``, or importable as ``module:attribute``; ValueError otherwise."""
    if name in OUTER_LOOPS:
        return OUTER_LOOPS[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            loop = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"outer loop '{name}' cannot be imported ({type(exc).__name__}: {exc}); check the module path") from None
        if isinstance(loop, type) and issubclass(loop, OuterLoop):
            loop = loop()
        if not isinstance(loop, OuterLoop):
            raise ValueError(f"'{name}' is not an OuterLoop (es_l2l.outer.base); point outer at an outer-loop object")
        if loop.section and loop.section not in {registered.section for registered in OUTER_LOOPS.values()}:
            raise ValueError(f"outer loop '{name}' declares its own section '{loop.section}'; a loop plugged in by path reads "
                             f"registered sections only ({', '.join(l.section for l in OUTER_LOOPS.values() if l.section)})")
        return loop
    raise ValueError(f"unknown outer loop '{name}'; allowed: {', '.join(OUTER_LOOPS)}, or package.module:attribute")
