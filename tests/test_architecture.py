"""The house's rules, checked: the shell names no task family, families do no I/O, and es_l2l has no import cycle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "es_l2l"
FAMILY_WORDS = re.compile(r"maze|teacher|family ==")


def test_nothing_outside_the_families_folder_names_a_family():
    """The grep of the redesign: only es_l2l/families/ may say which families exist."""
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "families") in path.parents:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FAMILY_WORDS.search(line):
                hits.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert hits == []


IO_WORDS = re.compile(r"import mlflow|from mlflow|tracker|log_artifact|log_metrics|log_text|set_tags|console|\bprint\(")


def test_families_do_no_io():
    """A family's report and comparison are data; the shell (es_l2l.reporting) prints and logs them."""
    hits = []
    for path in sorted((PACKAGE / "families").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if IO_WORDS.search(line):
                hits.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert hits == []


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph() -> dict[str, set[str]]:
    """Module -> es_l2l modules it imports, at module level or inside functions (lazy imports count:
    they run, and a cycle through them is still a cycle); ``if TYPE_CHECKING:`` blocks do not run."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node) for n in ast.walk(node)}
        edges = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                # "from pkg import sub" needs pkg/__init__ only as sub's parent (added below); any other
                # name comes from pkg/__init__ itself
                targets = subs + ([node.module] if len(subs) < len(node.names) else [])
            for target in targets:
                if target in modules and target != name:
                    edges.add(target)
        graph[name] = edges
    # importing a.b.c runs a/__init__ and a/b/__init__ first
    for name in list(graph):
        for edge in list(graph[name]):
            parts = edge.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in graph and parent != name and not name.startswith(parent + "."):
                    graph[name].add(parent)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
