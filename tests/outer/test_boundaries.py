"""The outer-loop boundary, checked on the source: no module outside es_l2l/outer/ branches on an
outer loop's name, and outside es_l2l/outer/evo/ no module touches evotorch's private attributes."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

from es_l2l.outer import OUTER_LOOPS

PACKAGE = Path(__file__).resolve().parents[2] / "es_l2l"
# Benchmarks measure named loops (their sections are called es, bptt, guided), as tests do.
NOT_SHELL = (PACKAGE / "outer", PACKAGE / "bench")


def _literals(node: ast.AST) -> list[str]:
    """String constants of ``node``, or of the tuple, list or set it is."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [n.value for n in items if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def loop_name_branches(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) where a registered loop's name is compared (``==``, ``in (...)``) or used as a dict key."""
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            names = [v for side in (node.left, *node.comparators) for v in _literals(side)]
        elif isinstance(node, ast.Dict):
            names = [k.value for k in node.keys if isinstance(k, ast.Constant)]
        elif isinstance(node, ast.match_case):
            names = _literals(node.pattern.value) if isinstance(node.pattern, ast.MatchValue) else []
        else:
            continue
        hits += [(node.lineno if hasattr(node, "lineno") else 0, n) for n in names if n in OUTER_LOOPS]
    return hits


def test_no_module_outside_the_outer_folder_branches_on_an_outer_loop_name():
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if any(folder in path.parents for folder in NOT_SHELL):
            continue
        hits += [f"{path.relative_to(PACKAGE.parent)}:{line}: '{name}'" for line, name in loop_name_branches(ast.parse(path.read_text()))]
    assert hits == []


def test_the_scan_sees_the_branches_it_bans():
    """The scan itself: each kind of branch it must catch, caught (else the test above proves nothing)."""
    source = 'if cfg.outer == "bptt": pass\nx = cfg.outer in ("es", "guided")\ny = {"hybrid": 1}.get(cfg.outer)\nz = "sgd" == cfg.outer\n'
    assert [n for _, n in loop_name_branches(ast.parse(source))] == ["bptt", "es", "guided", "hybrid"]


def evotorch_private_names() -> set[str]:
    """Every ``self._name`` evotorch's own classes set or read (its private attributes)."""
    root = Path(importlib.util.find_spec("evotorch").origin).parent
    names = set()
    for path in root.rglob("*.py"):
        names |= set(re.findall(r"\bself\.(_[A-Za-z]\w*)", path.read_text(errors="replace")))
    return {n for n in names if not n.startswith("__")}


def test_only_the_evo_folder_touches_evotorch_private_attributes():
    private = evotorch_private_names()
    assert {"_distribution", "_popsize", "_optimizer", "_population", "_generator"} <= private  # the scan sees them
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if PACKAGE / "outer" / "evo" in path.parents:
            continue
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            attr = node.attr if isinstance(node, ast.Attribute) else None
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("getattr", "setattr", "hasattr") and len(node.args) > 1:
                attr = node.args[1].value if isinstance(node.args[1], ast.Constant) else None
                target = node.args[0]
            else:
                target = getattr(node, "value", None)
            if attr in private and not (isinstance(target, ast.Name) and target.id in ("self", "cls")):
                hits.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: .{attr}")
    assert hits == []
