"""Outer loops: the registry. ``OUTER_LOOPS`` maps a config's ``outer`` to an :class:`es_l2l.outer.base.OuterLoop`;
each contributes its config section (``es:``, ``bptt:``, ``hybrid:``, ``guided:``) to the root config."""

from __future__ import annotations

from es_l2l.outer.base import OuterLoop
from es_l2l.outer.bptt import BPTT
from es_l2l.outer.es import ES
from es_l2l.outer.guided import Guided
from es_l2l.outer.hybrid import Hybrid

OUTER_LOOPS: dict[str, OuterLoop] = {"es": ES(), "bptt": BPTT(), "hybrid": Hybrid(), "guided": Guided()}
