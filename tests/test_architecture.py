"""The house's rules, checked: the shell names no task family and no outer loop, families do no I/O, es_l2l
has no import cycle (not even through type-only imports), and no plug-in takes the root config."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

from es_l2l.families import FAMILIES
from es_l2l.outer import OUTER_LOOPS

PACKAGE = Path(__file__).resolve().parents[1] / "es_l2l"
# every registered family's name (so a family added to the registry is banned outside families/ too)
FAMILY_WORDS = re.compile("|".join(re.escape(name) for name in sorted(FAMILIES, key=len, reverse=True)) + "|family ==")

# Lines allowed to name a family or an outer loop outside their folder, as (file, the line stripped):
# none; a new one needs a reason written beside it.
ALLOWED_FAMILY_LINES: set[tuple[str, str]] = set()  # none left
ALLOWED_OUTER_LINES: set[tuple[str, str]] = set()  # none left: every outer-loop fact is a member of the loop
# The benchmarks time each outer loop by name on purpose: their sections are labels, not branches of a run.
OUTER_NAMES_AS_LABELS = (PACKAGE / "bench",)


def test_nothing_outside_the_families_folder_names_a_family():
    """The grep of the redesign: only es_l2l/families/ may say which families exist."""
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "families") in path.parents:
            continue
        where = str(path.relative_to(PACKAGE.parent))
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FAMILY_WORDS.search(line) and (where, line.strip().lstrip("# ")) not in ALLOWED_FAMILY_LINES:
                hits.append(f"{where}:{number}: {line.strip()}")
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


def outer_name_literals(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of every string literal in ``path`` that is an outer loop's name (docstrings aside)."""
    text = path.read_text()
    tree = ast.parse(text)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    lines = text.splitlines()
    return sorted({(node.lineno, lines[node.lineno - 1].strip()) for node in ast.walk(tree)
                   if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in OUTER_LOOPS
                   and id(node) not in docstrings})


def test_nothing_outside_the_outer_folder_branches_on_an_outer_loop_name():
    """A string that is an outer loop's name (``cfg.outer == "bptt"``, ``{"es": ...}.get(cfg.outer)``) only
    in es_l2l/outer/: a new outer loop must not mean editing the shell."""
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "outer") in path.parents or any(folder in path.parents for folder in OUTER_NAMES_AS_LABELS):
            continue
        where = str(path.relative_to(PACKAGE.parent))
        hits += [f"{where}:{number}: {line}" for number, line in outer_name_literals(path) if (where, line) not in ALLOWED_OUTER_LINES]
    assert hits == []


def test_the_name_checks_catch_every_registered_name(tmp_path):
    """The banned words come from the registries: each family's and each outer loop's name is caught."""
    for name in FAMILIES:
        assert FAMILY_WORDS.search(f"if task.family_name == '{name}':")
    assert {"store_recall", "smnist"} <= set(FAMILIES)
    probe = tmp_path / "probe.py"
    probe.write_text('"""es"""\n' + "\n".join(f"x = cfg.outer == {name!r}" for name in OUTER_LOOPS))  # a docstring is no branch
    assert [line for _, line in outer_name_literals(probe)] == [f"x = cfg.outer == {name!r}" for name in OUTER_LOOPS]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@functools.lru_cache(maxsize=2)
def _import_graph(type_checking: bool) -> dict[str, frozenset[str]]:
    return {k: frozenset(v) for k, v in import_graph(type_checking).items()}


def import_graph(type_checking: bool = False) -> dict[str, set[str]]:
    """Module -> es_l2l modules it imports, at module level or inside functions (lazy imports count:
    they run, and a cycle through them is still a cycle); ``if TYPE_CHECKING:`` blocks do not run,
    and count only with ``type_checking`` (the modules a reader must know to read the types)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = set() if type_checking else {
            id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node) for n in ast.walk(node)}
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
    cycle = find_cycle({k: set(v) for k, v in _import_graph(False).items()})
    assert cycle is None, " -> ".join(cycle)


# The shell's side of the outer-loop boundary lives in outer/ beside the loops it serves: it builds
# what a loop receives from the root config (outer/shell.py), runs the one generation loop
# (outer/driver.py's drive), starts data-parallel BPTT's replicas, and evaluates a low-rank share in a
# Ray worker. These four take (and name the type of) the root config; no loop does.
SHELL_SIDE = ("outer/shell.py", "outer/driver.py", "outer/data_parallel.py", "outer/lowrank.py")
PENDING_OUTER_REWRITE = {(_m, "es_l2l.config") for _m in
                         ("es_l2l.outer.shell", "es_l2l.outer.driver", "es_l2l.outer.data_parallel", "es_l2l.outer.lowrank")}


def test_no_import_cycles_even_through_type_only_imports():
    """With ``if TYPE_CHECKING:`` imports counted too: a plug-in that names the root config's type
    would close a cycle (the root config imports every registry)."""
    graph = {k: set(v) for k, v in _import_graph(True).items()}
    runtime = _import_graph(False)
    for module, target in PENDING_OUTER_REWRITE:
        if target in graph.get(module, set()) and target not in runtime[module]:
            graph[module].discard(target)
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_type_only_walk_sees_type_only_imports():
    assert "es_l2l.context" not in _import_graph(False)["es_l2l.families.base"]
    assert "es_l2l.context" in _import_graph(True)["es_l2l.families.base"]


PLUG_INS = ("families", "models", "outer")


def root_config_parameters(package: Path) -> list[str]:
    """``path:line function(parameter)`` for every parameter under ``package`` that is the root
    config: annotated ``ExperimentConfig``, or named ``cfg`` without an annotation (a section
    parameter is named after its section, ``task``, ``model``, ``genome``, or typed as the section)."""
    hits = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]:
                note = ast.unparse(arg.annotation) if arg.annotation is not None else ""
                if (arg.arg == "cfg" and not note) or "ExperimentConfig" in note:
                    where = f"{path.relative_to(package.parent)}:{node.lineno}"
                    hits.append(f"{where} {getattr(node, 'name', 'lambda')}({arg.arg}{': ' + note if note else ''})")
    return hits


def test_no_plug_in_signature_takes_the_root_config():
    """Families, model kinds (and, after their rewrite, outer loops) receive their own section and
    the run context (es_l2l.context.RunContext), never the root config."""
    hits = [h for package in PLUG_INS for h in root_config_parameters(PACKAGE / package)
            if not h.split(":")[0] in SHELL_SIDE]
    assert hits == [], "\n".join(hits)


def test_no_plug_in_imports_the_root_config():
    hits = []
    for package in PLUG_INS:
        for path in sorted((PACKAGE / package).rglob("*.py")):
            if str(path.relative_to(PACKAGE)) not in SHELL_SIDE and "ExperimentConfig" in path.read_text():
                hits.append(str(path.relative_to(PACKAGE.parent)))
    assert hits == []


def test_the_signature_check_finds_the_root_config(tmp_path):
    (tmp_path / "plug.py").write_text("def a(cfg): ...\ndef b(x: 'ExperimentConfig'): ...\ndef c(task, ctx): ...\n")
    (tmp_path / "plug.py").write_text(
        "def a(cfg): ...\ndef b(x: 'ExperimentConfig'): ...\ndef c(task, ctx): ...\ndef d(cfg: 'ESConfig'): ...\n")
    assert [h.split(" ", 1)[1] for h in root_config_parameters(tmp_path)] == ["a(cfg)", "b(x: 'ExperimentConfig')"]


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_readme_layout_names_every_top_level_module_and_package():
    """The README's layout is the map a newcomer reads first: every module and package at the top
    of es_l2l/ is named there."""
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme[readme.index("## Layout"):readme.index("## ", readme.index("## Layout") + 3)]
    names = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    names += [f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()]
    assert [n for n in sorted(names) if n not in layout] == []
