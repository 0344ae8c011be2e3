"""benchmarks/teacher_bayes.py over several seeds: each with / without pair scored on its own run's
held-out tasks, and the spread across pairs is the Student-t interval of the pairs' means."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from es_l2l.reporting.stats import t_interval

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = [sys.executable, str(ROOT / "benchmarks" / "teacher_bayes.py")]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def train(tmp: Path, name: str, *sets: str) -> str:
    """A 2-step run of configs/smoke_bayes.yaml in its own store; its checkpoint's path."""
    where = tmp / name
    where.mkdir()
    args = ["run", str(ROOT / "configs" / "smoke_bayes.yaml"), "--set", "run.generations=2", "--set", "run.validate_every=1",
            "--set", f"tracking.uri=sqlite:///{where / 'mlflow.db'}", "--set", f"tracking.artifact_root={where / 'mlruns'}"]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run([sys.executable, "-m", "es_l2l.cli", *args], capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (ckpt,) = [p for p in (where / "mlruns").rglob("checkpoint.pt") if p.parent.name == "artifacts" and p.parent.parent.name != "model"]
    return str(ckpt)


@pytest.mark.slow
def test_pairs_are_scored_on_their_own_seed_and_summarised_across_seeds(tmp_path):
    with_ = [train(tmp_path, f"with{s}", f"run.seed={s}") for s in (0, 1)]
    without = [train(tmp_path, f"ctl{s}", f"run.seed={s}", "task.frequent_share=0") for s in (0, 1)]

    one = tmp_path / "one"
    proc = subprocess.run([*SCRIPT, "--with", with_[1], "--without", without[1], "--episodes", "8", "--out", str(one)],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr
    single = json.loads((one / "teacher_bayes.json").read_text())

    both = tmp_path / "both"
    proc = subprocess.run([*SCRIPT, "--with", *with_, "--without", *without, "--episodes", "8", "--out", str(both)],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((both / "teacher_bayes.json").read_text())
    pairs = result["pairs"]
    assert [p["seed"] for p in pairs] == [0, 1] and result["across_pairs"]["n"] == 2
    # the second pair is exactly the one scored alone: its own seed's held-out tasks
    assert pairs[1]["prior_effect"] == single["prior_effect"] and pairs[1]["scores"] == single["scores"]
    assert pairs[0]["prior_effect"] != pairs[1]["prior_effect"]
    for key, parts in result["across_pairs"]["prior_effect"].items():
        for part, got in parts.items():
            assert got == t_interval([p["prior_effect"][key][part]["mean"] for p in pairs]).as_dict()
    assert sorted(q.name for q in both.glob("*.png")) == ["teacher_bayes_mse_per_trial_0.png", "teacher_bayes_mse_per_trial_1.png"]

    proc = subprocess.run([*SCRIPT, "--with", *with_, "--without", without[0], "--out", str(tmp_path / "bad")],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == (
        "--with has 2 checkpoints and --without 1: pass one control per run")
