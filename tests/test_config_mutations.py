"""Every shipped file under configs/ (run, compare and tune files), broken in a few systematic ways:
each break is refused with one line naming the key, exit 2, before anything starts.

In-process for speed (hundreds of cases in seconds): run configs through the CLI's own entry
function (`es_l2l.cli.main(["run", FILE, "--print-config"])`, which prints and exits 0 if a break
were accepted, so nothing ever trains); compare and tune files through `resolve_plan` /
`resolve_tune`, the functions `es-l2l compare` / `es-l2l tune` call before anything starts, with
`main`'s own ConfigError -> exit 2 contract. `tests/test_hostile_input.py` checks the same lines
through the real command.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from annotated_types import Ge, Gt

from es_l2l import cli
from es_l2l.compare import resolve_plan
from es_l2l.config import ConfigError, load_config
from es_l2l.plan_files import CompareFile, TuneFile
from es_l2l.tune import resolve_tune

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
WRONG = {"x": [1]}  # a mapping where a number, string, list or flag belongs


def kind_of(tree: dict) -> str:
    return "compare" if "configs" in tree else "tune" if "space" in tree else "run"


def must_be_positive(model, key: str) -> bool:
    field = getattr(model, "model_fields", {}).get(key)
    return field is not None and any(isinstance(m, (Ge, Gt)) and getattr(m, "ge", getattr(m, "gt", -1)) >= 0 for m in field.metadata)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def mutations(path: Path, seen: set) -> list[tuple[str, dict, str]]:
    """(label, broken tree, the key the error must name) for one shipped file; a field of a section's
    model already broken in an earlier file (``seen``) is not broken again, which keeps this fast."""
    tree = yaml.safe_load(path.read_text())
    kind = kind_of(tree)
    out = [("unknown top-level key", {**tree, "bogus_key": 1}, "bogus_key")]
    for key, value in tree.items():
        wrong = "many" if isinstance(value, dict) or is_number(value) else WRONG
        out.append((f"wrong type {key}", {**tree, key: wrong}, key))
    if kind == "run":
        cfg = load_config(path)
        for section, body in tree.items():
            if not isinstance(body, dict):
                continue
            out.append((f"unknown key in {section}", {**tree, section: {**body, "bogus_key": 1}}, f"{section}.bogus_key"))
            model = type(getattr(cfg, section))
            for key, value in body.items():
                if key == "family" or (model, key) in seen:
                    continue  # family names the section's own model: a wrong one is an unknown-family line (test_config)
                seen.add((model, key))
                wrong = "many" if is_number(value) or isinstance(value, dict) else WRONG
                out.append((f"wrong type {section}.{key}", {**tree, section: {**body, key: wrong}}, f"{section}.{key}"))
                if is_number(value) and must_be_positive(model, key):
                    out.append((f"negative {section}.{key}", {**tree, section: {**body, key: -1}}, f"{section}.{key}"))
    else:
        model = CompareFile if kind == "compare" else TuneFile
        for key in ("budget_seconds", "budget_neuron_steps"):
            others = {k: v for k, v in tree.items() if not k.startswith("budget_")}
            out.append((f"non-numeric {key}", {**others, key: "many"}, key))
            out.append((f"negative {key}", {**others, key: -1}, key))
            out.append((f"zero {key}", {**others, key: 0}, key))
        for key, value in tree.items():
            if is_number(value) and must_be_positive(model, key) and not key.startswith("budget_"):
                out.append((f"negative {key}", {**tree, key: -1}, key))
        out.append(("both budgets", {**tree, "budget_seconds": 1, "budget_neuron_steps": 1}, "budget_neuron_steps"))
    return out


def absolute(tree: dict, kind: str) -> dict:
    """The broken file lives in a temporary folder: its configs are named by their absolute paths."""
    tree = copy.deepcopy(tree)
    if kind == "compare" and isinstance(tree.get("configs"), list):
        tree["configs"] = [str(ROOT / "configs" / c) if isinstance(c, str) else c for c in tree["configs"]]
    if kind == "tune" and isinstance(tree.get("config"), str):
        tree["config"] = str(ROOT / "configs" / tree["config"])
    return tree


def exit_code_and_stderr(kind: str, path: Path, capsys) -> tuple[int, str]:
    if kind == "run":
        code = cli.main(["run", str(path), "--print-config"])
        return code, capsys.readouterr().err
    try:
        resolve_plan([str(path)], [], None, None, None) if kind == "compare" else resolve_tune(str(path), [])
    except ConfigError as exc:  # what cli.main does with it
        return cli.EXIT_CONFIG, f"config error: {exc}\n"
    return 0, ""


def test_every_shipped_config_broken_in_every_way_is_one_line_naming_the_key(tmp_path, capsys):
    failures, count, kinds, seen = [], 0, {"run": 0, "compare": 0, "tune": 0}, set()
    for src in CONFIGS:
        kind = kind_of(yaml.safe_load(src.read_text()))
        for label, tree, key in mutations(src, seen):
            path = tmp_path / src.name
            path.write_text(yaml.safe_dump(absolute(tree, kind), sort_keys=False))
            code, err = exit_code_and_stderr(kind, path, capsys)
            lines = err.strip().splitlines()
            count, kinds[kind] = count + 1, kinds[kind] + 1
            named = f"'{key}'" in err or f"'{key.split('.')[0]}'" in err and key.endswith("bogus_key") and "bogus_key" in err
            if code != cli.EXIT_CONFIG or len(lines) != 1 or not named:
                failures.append(f"{src.name}: {label}: exit {code}: {err.strip()[:300]}")
    assert count > 500 and min(kinds.values()) > 50, kinds  # every kind of file was broken many times
    assert not failures, f"{len(failures)} of {count} not refused in one line naming the key:\n" + "\n".join(failures)
