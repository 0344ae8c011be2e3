"""Hostile input through the real `es-l2l` command: files built to hang, crash or flood the loader.

Each case ends in one line on stderr naming the problem and the fix, exit 2 (a file es-l2l reads
back, a checkpoint or a resume file: exit 1, as every other unreadable checkpoint), no MLflow
store created, nothing else touched. Each test is one row of docs/failures.md ("Hostile input").
"""

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def es_l2l(cwd: Path, *args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "es_l2l.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - t0


def store(tmp: Path) -> list[str]:
    return [f"--set=tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"--set=tracking.artifact_root={tmp / 'mlruns'}"]


def refused(proc, seconds: float, code: int, *words: str, tmp: Path | None = None) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code and len(lines) == 1, proc.stderr[-3000:]
    assert len(lines[0]) < 400, lines[0][:1000]  # one short line, never the hostile value itself
    for word in words:
        assert word in lines[0], lines[0]
    assert seconds < 60, seconds  # the loader never works through the expansion
    if tmp is not None:
        assert not (tmp / "mlflow.db").exists() and not (tmp / "mlruns").exists()


def billion_laughs() -> str:
    """~400 bytes that expand to 9^9 (387 million) strings."""
    lines, prev = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'], "a"
    for c in "bcdefghi":
        lines.append(f"{c}: &{c} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = c
    return "\n".join(lines) + "\nname: *i\n"


# --- YAML built to hang or crash the loader ------------------------------------------------------


@pytest.mark.parametrize("kind, words", [
    ("alias bomb", ("expands its aliases", "more than 100,000 values", "without the alias chain")),
    ("deep nesting", ("nests more than 32 levels deep", "flatten it")),
    ("deep aliases", ("expands its aliases", "levels deep")),
    ("self alias", ("alias inside its own anchor",)),
    ("long string", ("200,000-character value", "shorten it")),
    ("long name", ("'name'", "at most 200 characters")),
    ("huge file", ("characters long", "pass the right file")),
])
def test_hostile_yaml_is_refused_in_one_line_before_anything_starts(tmp_path, kind, words):
    text = {
        "alias bomb": billion_laughs(),
        "deep nesting": "name: " + "[" * 100_000 + "]" * 100_000 + "\n",
        # each anchor 20 levels deep holds the previous one: 40 levels once expanded, 20 as written
        "deep aliases": "a: &a " + "[" * 20 + "1" + "]" * 20 + "\nb: &b " + "[" * 19 + "*a" + "]" * 19 + "\n",
        "self alias": "name: &x [1, *x]\n",
        "long string": "name: " + "x" * 200_000 + "\n",
        "long name": "name: " + "x" * 5_000 + "\n",
        "huge file": "# padding\n" * 200_000,
    }[kind]
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    proc, seconds = es_l2l(tmp_path, "run", str(path), *store(tmp_path))
    refused(proc, seconds, 2, "config error:", "hostile.yaml" if kind != "long name" else "config value", *words, tmp=tmp_path)


@pytest.mark.parametrize("value, words", [
    ("&a [" + ",".join(["*a"] * 3) + "]", ("alias inside its own anchor",)),
    ("[" * 5_000 + "]" * 5_000, ("--set name", "nests more than 32 levels deep")),
    ("[1, 2", ("--set name", "not valid YAML", "quote it")),
])
def test_hostile_set_values_are_refused_in_one_line(tmp_path, value, words):
    proc, seconds = es_l2l(tmp_path, "run", str(SMOKE), *store(tmp_path), f"--set=name={value}")
    refused(proc, seconds, 2, *words, tmp=tmp_path)


def test_a_set_key_nested_fifty_thousand_levels_is_refused(tmp_path):
    proc, seconds = es_l2l(tmp_path, "run", str(SMOKE), *store(tmp_path), "--set=" + ".".join(["a"] * 50_000) + "=1")
    refused(proc, seconds, 2, "levels deep", "es.popsize", tmp=tmp_path)


@pytest.mark.parametrize("command", ["compare", "tune"])
def test_compare_and_tune_files_go_through_the_same_bounded_loader(tmp_path, command):
    path = tmp_path / "hostile.yaml"
    path.write_text(billion_laughs().replace("name: *i", "configs: *i" if command == "compare" else "config: *i"))
    proc, seconds = es_l2l(tmp_path, command, str(path))
    refused(proc, seconds, 2, "hostile.yaml", "expands its aliases", tmp=tmp_path)
