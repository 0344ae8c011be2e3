"""The shell owns presentation and I/O: every family's held-out report reaches the terminal and the
MLflow run the same way (test metrics, beats/verdict tags, held_out.json, the description).

The end-to-end cases run each registered family's first smoke config through the real CLI; the
store-recall one (about a minute) stays in the default run, the others are marked slow.
"""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from rich.console import Console

from es_l2l.families import FAMILIES
from es_l2l.families.base import HeldOut
from es_l2l.reporting.held_out import log_held_out, print_held_out
from es_l2l.reporting.held_out import log_summary_table


def load_table(client, run, name: str = "held_out.json"):
    """An MLflow table artifact as a DataFrame (what ``MlflowClient.load_table`` reads, which searches
    runs through the global tracking URI), after checking the tag that declares it a table."""
    import json

    import pandas as pd

    assert {"path": name, "type": "table"} in json.loads(run.data.tags["mlflow.loggedArtifacts"])
    with open(client.download_artifacts(run.info.run_id, name)) as f:
        split = json.load(f)
    return pd.DataFrame(split["data"], columns=split["columns"])

ROOT = Path(__file__).resolve().parents[1]
FAST = "store_recall"  # a family whose run logged no held_out.json before the shell logged it


def smoke_config(family: str) -> Path:
    """The first shipped smoke config (configs/smoke*.yaml) of a family."""
    for path in sorted((ROOT / "configs").glob("smoke*.yaml")):
        if (yaml.safe_load(path.read_text()).get("task") or {}).get("family", "teacher") == family:
            return path
    raise AssertionError(f"no smoke config for the {family} family")


def held(verdict: str = "beats chance") -> HeldOut:
    return HeldOut(
        rows={"trained": {"error": 0.25, "error_long": 0.5}, "chance": {"error": 0.5, "error_long": 0.5}},
        score=0.25, verdict=verdict, beats={"chance": True}, metrics={"withheld/model/error": 0.25, "withheld/chance/error": 0.5},
        tags={"exploits": "false"}, artifacts={"by_delay.csv": "delay,error\n1,0.25\n"},
        figures={"curve.png": lambda path, history: Path(path).write_bytes(b"png " + str(len(history)).encode())},
        printed=["TABLE"], notes=["a note"], closing=lambda result: None if result is None else f"{len(result.history)} validations",
    )


class Result:
    history = [{"generation": 0}, {"generation": 1}]
    generations = 1


def test_the_shell_logs_a_held_out_report_to_a_real_store(tmp_path, monkeypatch):
    from es_l2l.config import load_config
    from es_l2l.tracking.run import MlflowRun

    monkeypatch.setenv("ES_L2L_SPOOL", str(tmp_path / "spool"))
    cfg = load_config(ROOT / "configs" / "smoke.yaml", [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                                                          f"tracking.artifact_root={tmp_path / 'mlruns'}"])
    run = MlflowRun(cfg, log_config=False)
    report = held("x" * 6000)
    log_held_out(run, report, Result())
    log_summary_table(run, report, "one-line summary")
    run.end()
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    data = client.get_run(run.run_id).data
    assert data.metrics == {"withheld/model/error": 0.25, "withheld/chance/error": 0.5}
    assert [m.step for m in client.get_metric_history(run.run_id, "withheld/model/error")] == [1]
    assert data.tags["beats.chance"] == "true" and data.tags["exploits"] == "false" and data.tags["verdict"] == "x" * 5000
    note = data.tags["mlflow.note.content"]
    assert note.startswith("**one-line summary**\n\n| predictor | error | error_long |")
    assert "| trained | 0.25 | 0.5 |" in note and note.endswith("x" * 6000)
    table = load_table(client, client.get_run(run.run_id))
    assert list(table["predictor"]) == ["trained", "chance"] and list(table["error_long"]) == [0.5, 0.5]
    folder = Path(client.download_artifacts(run.run_id, "", str(tmp_path / "got")))
    assert (folder / "curve.png").read_bytes() == b"png 2"  # drawn with the run's status history
    assert (folder / "by_delay.csv").read_text() == "delay,error\n1,0.25\n"


def test_the_shell_prints_table_verdict_notes_and_closing_line_in_order():
    out = StringIO()
    console = Console(file=out, width=200)
    print_held_out(console, held(), Result())
    assert out.getvalue().splitlines() == ["TABLE", "beats chance", "a note", "2 validations"]
    out.truncate(0), out.seek(0)
    print_held_out(console, held(), None)  # es-l2l evaluate: no training, no closing line here
    assert out.getvalue().splitlines() == ["TABLE", "beats chance", "a note"]


@pytest.mark.parametrize("family", [pytest.param(f, marks=() if f == FAST else pytest.mark.slow) for f in FAMILIES])
def test_every_family_run_logs_held_out_json_and_a_description(tmp_path, family):
    config = smoke_config(family)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    sets = ["run.threads=1", "run.generations=1", "tracking.system_metrics=false",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"tracking.artifact_root={tmp_path / 'mlruns'}"]
    proc = subprocess.run([sys.executable, "-m", "es_l2l.cli", "run", str(config), *[a for s in sets for a in ("--set", s)]],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    tags, metrics = run.data.tags, run.data.metrics
    table = load_table(client, run)
    predictors = list(table["predictor"])
    assert len(predictors) >= 3 and len(set(predictors)) == len(predictors)
    note = tags["mlflow.note.content"]
    assert f"({family} family)" in note and "| predictor |" in note and tags["verdict"] in note
    assert all(f"| {p} |" in note for p in predictors)
    assert " ".join(tags["verdict"].split()) in " ".join(proc.stdout.split())  # the verdict printed is the one logged
    assert any(k.startswith("beats.") for k in tags)
    assert {k.split("/")[1] for k in metrics if k.startswith("withheld/")} >= {"model", "untrained"}
