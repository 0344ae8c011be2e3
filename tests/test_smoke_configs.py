"""Every shipped smoke config (configs/smoke*.yaml) with every model kind, through the real CLI, to the end.

A family that runs a kind must train it and print its held-out table (exit 0); a family that
refuses a kind must say so in one line (exit 2) before any run exists.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from es_l2l.models import MODELS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SMOKES = sorted(CONFIGS.glob("smoke*.yaml"))

# what each family's held-out report prints as its table title
TABLE = {
    "teacher": "Held-out test tasks",
    "maze": "Held-out test mazes",
    "smnist": "held-out test digits",
    "store_recall": "held-out sequences",
}
# (config stem, kind) -> the one line a refusal answers with: the hybrid's default ES blocks (time
# constants, thresholds) are an LSNN's. (The maze family runs any kind with a closed-loop stepper.)
REFUSED = {
    ("smoke_hybrid", "lstm"): "config error: invalid config: hybrid.es_blocks lists tau_m, tau_a, b0, beta, which an "
                              "LSTM does not have; set hybrid.es_blocks to some of w_in, w_rec, w_out, b_out and "
                              "bptt.train to the others for model.kind=lstm",
}
# extra runs: the refused hybrid with the ES and gradient blocks an LSTM has
EXTRA = {("smoke_hybrid", "lstm"): ["hybrid.es_blocks=[w_out,b_out]", "bptt.train=[w_in,w_rec]"]}


def family(path: Path) -> str:
    return (yaml.safe_load(path.read_text()).get("task") or {}).get("family", "teacher")


def test_every_family_and_kind_is_covered():
    assert len(SMOKES) >= 11
    assert {family(p) for p in SMOKES} == set(TABLE)
    assert set(MODELS) == {"lsnn", "lstm"}


def own_kind(config: Path) -> str:
    return ((yaml.safe_load(config.read_text()) or {}).get("model") or {}).get("kind", "lsnn")


# the cross-kind run that stays in the default run: the teacher's LSTM through BPTT (its held-out report
# once crashed there); the other families' LSTM runs are marked slow (each family's own tests run the
# family through the CLI, and the maze's LSTM agent has tests/models/test_model_kinds.py)
QUICK = {("smoke_bptt", "lstm")}


def quick(config: Path, kind: str, extra: list[str]) -> bool:
    """Whether a case stays in the default run: a refusal, or one of the cross-kind runs in ``QUICK``.
    The rest are marked slow: the whole matrix took 17 min on a loaded 2-core machine (23 CLI runs,
    6-175 s each)."""
    raw = yaml.safe_load(config.read_text())
    own = (raw.get("model") or {}).get("kind", "lsnn")
    if (config.stem, kind) in REFUSED and not extra:
        return True
    return (config.stem, kind) in QUICK


CASES = [(c, k, []) for c in SMOKES for k in sorted(MODELS)]
CASES += [(CONFIGS / f"{stem}.yaml", kind, sets) for (stem, kind), sets in EXTRA.items()]
PARAMS = [pytest.param(c, k, e, marks=() if quick(c, k, e) else pytest.mark.slow,
                       id=f"{c.stem}-{k}" + ("-" + "-".join(s.split("=")[0] for s in e) if e else "")) for c, k, e in CASES]


@pytest.mark.parametrize(("config", "kind", "extra"), PARAMS)
def test_smoke_config_runs_to_the_end(tmp_path, config, kind, extra):
    # Ray's temp folder stays the caller's (RAY_TMPDIR): one under tmp_path makes socket paths too long
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # another kind: its own section with its defaults (the config's keys are the other kind's)
    model = f"model.kind={kind}" if kind == own_kind(config) else f"model={{kind: {kind}}}"
    sets = [model, "run.threads=1", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"tracking.artifact_root={tmp_path / 'mlruns'}", *extra]
    proc = subprocess.run([sys.executable, "-m", "es_l2l.cli", "run", str(config), *[a for s in sets for a in ("--set", s)]],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    refusal = None if extra else REFUSED.get((config.stem, kind))
    if refusal is not None:
        assert proc.returncode == 2, out
        assert proc.stderr.strip() == refusal and proc.stdout.strip() == "", out
        assert not (tmp_path / "mlflow.db").exists()  # refused before any run was created
        return
    assert proc.returncode == 0, out
    words = " ".join(proc.stdout.split())  # the terminal wraps long lines
    assert TABLE[family(config)] in words, out
    assert re.search(r"^MLflow run id: [0-9a-f]{32}$", proc.stdout, re.M), out
    if kind == "lstm":
        assert "LSTM of" in words, out
    if family(config) == "teacher":  # the report names the model kind it trained
        trained = "LSTM meta-trained" if kind == "lstm" else "LSNN meta-trained"
        assert trained in words and f"the meta-trained {trained.split()[0]} beats" in words, out
        if kind == "lstm":
            assert "LSNN" not in words, out
