"""The frequent-vs-fresh split of the held-out report: CIs on hand-made numbers, the verdict's words,
the CSV and plot, and an end-to-end ``es-l2l run`` whose group metrics are read back from MLflow."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from es_l2l.families.teacher.baselines import BACKPROP, RUNNING_MEAN
from es_l2l.families.teacher.evaluate import LSNN_TRAINED, LSNN_UNTRAINED
from es_l2l.families.teacher.groups import (
    GROUP_FREQUENT,
    GROUP_FRESH,
    LSNN_EXCESS,
    GroupSplit,
    episode_scores,
    plot_groups,
)
from es_l2l.reporting.stats import normal_band

ROOT = Path(__file__).resolve().parents[3]
HALF = 1.96 * math.sqrt(2.5) / math.sqrt(5)  # 1.96 sd / sqrt(n) of 1, 2, 3, 4, 5


def test_normal_band_and_episode_scores_by_hand():
    # 5 episodes x 6 trials: trial t of episode e has error (e + 1) * (t + 1)
    e = torch.arange(1.0, 6.0)[:, None] * torch.arange(1.0, 7.0)[None, :]
    mean, lo, hi = normal_band(e)
    assert torch.allclose(mean, 3.0 * torch.arange(1.0, 7.0, dtype=torch.float64))
    assert torch.allclose(hi - mean, HALF * torch.arange(1.0, 7.0, dtype=torch.float64))
    assert torch.allclose(mean - lo, hi - mean)
    s = episode_scores(e)
    assert torch.allclose(s["test_mse"], torch.arange(1.0, 6.0) * 3.5)
    assert torch.allclose(s["test_mse_late"], torch.arange(1.0, 6.0) * 5.0)  # trials 4, 5, 6
    assert torch.allclose(s["test_mse_first5"], torch.arange(1.0, 6.0) * 3.0)  # trials 1..5


def split_with(lsnn_frequent: float, backprop_frequent: float, n: int = 8, k: int = 4) -> GroupSplit:
    """Hand-made squared errors: every predictor 1.0 +- 0.1 per episode on fresh networks; on the
    frequent ones the LSNN and backprop at the given levels (generation 0 and the running mean as fresh)."""
    jitter = torch.tensor([0.1, -0.1] * (n // 2))[:, None].expand(n, 6)
    level = lambda v: v + jitter
    names = (LSNN_TRAINED, LSNN_UNTRAINED, BACKPROP, RUNNING_MEAN)
    fresh = {p: level(1.0) for p in names}
    frequent = {p: level(1.0) for p in names} | {LSNN_TRAINED: level(lsnn_frequent), BACKPROP: level(backprop_frequent)}
    return GroupSplit({GROUP_FRESH: fresh, GROUP_FREQUENT: frequent}, torch.arange(n) % k, k, 0.4)


def test_differences_metrics_and_verdict_when_only_the_lsnn_has_the_prior():
    split = split_with(0.5, 1.0)
    d = split.differences()
    # per episode 0.5 +- 0.1 against 1.0 +- 0.1: difference -0.5, variances (8/7 * 0.01) each over 8
    half = 1.96 * math.sqrt(2 * (0.01 * 8 / 7) / 8)
    assert d[LSNN_TRAINED]["test_mse_late"]["mean"] == pytest.approx(-0.5)
    assert d[LSNN_TRAINED]["test_mse_late"]["hi"] == pytest.approx(-0.5 + half)
    assert d[BACKPROP]["test_mse_first5"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert d[LSNN_EXCESS]["test_mse_late"]["mean"] == pytest.approx(-0.5)
    m = split.test_metrics()  # the MLflow keys, as docs/tracking.md lists them
    assert m["withheld/model/frequent_mse_late"] == pytest.approx(0.5)
    assert m["withheld/target_architecture_backprop/fresh_mse_first5.lo"] == pytest.approx(1.0 - half / math.sqrt(2))
    assert m["withheld/model/frequent_minus_fresh_mse_late.hi"] == pytest.approx(-0.5 + half)
    assert m["withheld/lsnn_minus_backprop/frequent_minus_fresh_mse_late"] == pytest.approx(-0.5)
    assert m["withheld/model/frequent_network_3_mse_late"] == pytest.approx(0.4)  # episodes 3, 7: -0.1
    assert m["withheld/groups/episodes"] == 8 and m["withheld/groups/networks"] == 4
    text = split.verdict()
    assert "The meta-trained LSNN learns the frequent networks faster" in text
    assert "Backprop, which has no prior, shows no difference" in text and "differ in difficulty" not in text


def test_verdict_when_backprop_shows_a_difference_and_the_lsnn_none():
    text = split_with(1.0, 0.5).verdict()
    assert "The meta-trained LSNN does not learn the frequent networks faster" in text
    assert "no difference distinguishable at 95%" in text
    assert "shows a difference too" in text and "differ in difficulty" in text and "task.frequent_share=0" in text


def test_csv_table_and_plot(tmp_path):
    split = split_with(0.5, 1.0)
    lines = split.to_csv().splitlines()
    assert lines[0] == "group,predictor,trial,mse,lo,hi,episodes"
    assert len(lines) == 1 + 2 * 4 * 6
    assert lines[1].startswith("fresh,LSNN meta-trained,1,1,") and lines[1].endswith(",8")
    png = plot_groups(split, tmp_path / "groups.png", "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(split.table())
    text = console.export_text()
    assert "frequent - fresh" in text and LSNN_EXCESS in text


@pytest.mark.slow  # run by .ci/run; the split's table and plot stay in the default run (test_csv_table_and_plot)
def test_run_logs_the_group_split(tmp_path):
    """``es-l2l run`` of the frequent-targets smoke config: group metrics, CSV and plot in the MLflow run."""
    proc = subprocess.run(
        [sys.executable, "-m", "es_l2l.cli", "run", str(ROOT / "configs" / "smoke_bayes.yaml"),
         f"--set=tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"--set=tracking.artifact_root={tmp_path / 'mlruns'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    metrics = run.data.metrics
    for group in ("fresh", "frequent"):  # the split's keys, grouped as withheld/<predictor>/<group>_<score>
        for p in ("model", "target_architecture_backprop", "running_mean"):
            for score in ("mse_late", "mse_first5"):
                for end in ("", ".lo", ".hi"):
                    assert f"withheld/{p}/{group}_{score}{end}" in metrics
    for p in ("model", "target_architecture_backprop", "lsnn_minus_backprop"):
        assert f"withheld/{p}/frequent_minus_fresh_mse_late.hi" in metrics
    assert metrics["withheld/groups/episodes"] == 32 and metrics["withheld/groups/networks"] == 4
    assert "withheld/model/frequent_network_3_mse_late" in metrics
    # the fresh group is the ordinary held-out test set
    assert metrics["withheld/model/fresh_mse_late"] == pytest.approx(metrics["withheld/model/mse_late"], rel=1e-5)
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"mse_per_trial_groups.png", "mse_per_trial_groups.csv", "mse_per_trial.png"} <= names
    csv = Path(client.download_artifacts(run.info.run_id, "mse_per_trial_groups.csv", str(tmp_path))).read_text()
    assert csv.count("\nfrequent,target-architecture backprop,") == 10
    assert "the frequent networks faster" in run.data.tags["verdict"]
    assert "Frequent (4 fixed networks) vs fresh" in proc.stdout
