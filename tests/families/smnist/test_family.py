"""The smnist family end to end: BPTT and ES through the real CLI on the smoke config; its splits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from es_l2l.config import load_config
from es_l2l.families import FAMILIES
from es_l2l.families.smnist.evaluate import digit_batch, split
from es_l2l.seeds import STREAM_TEST, STREAM_TRAIN, STREAM_VALIDATION

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs"


def es_l2l(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    track = [f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"tracking.artifact_root={tmp / 'mlruns'}"]
    return subprocess.run([sys.executable, "-m", "es_l2l.cli", *args, *[a for s in track for a in ("--set", s)]], cwd=tmp,
                          env=env, capture_output=True, text=True, timeout=600)


def test_registered():
    assert "smnist" in FAMILIES and FAMILIES["smnist"].objective == ("val_accuracy", True, "val accuracy", 4)


def test_bptt_and_es_run_through_the_cli_with_the_smoke_config(tmp_path):
    for outer in ("bptt", "es"):
        proc = es_l2l(tmp_path, "run", str(CONFIGS / "smoke_smnist.yaml"), "--set", f"outer={outer}", "--set", f"name=sm-{outer}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Sequential MNIST: 1000 held-out test digits" in proc.stdout and "nearest class mean" in proc.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.data.params["outer"] for r in found) == ["bptt", "es"]
    for run in found:
        assert run.info.status == "FINISHED" and 0 <= run.data.metrics["withheld/model/accuracy"] <= 1
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/accuracy")] == [0, 1, 2]
        assert {"withheld/untrained/accuracy", "withheld/chance/accuracy", "withheld/nearest_class_mean/accuracy",
                "withheld/model/accuracy_digit_0"} <= set(run.data.metrics)
        assert "raster.png" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_streams_take_their_own_split_and_the_digits_load_once():
    cfg = load_config(CONFIGS / "smoke_smnist.yaml")
    assert split(cfg.task, "train") is split(cfg.task, "train")  # cached per process
    assert [len(split(cfg.task, s)) for s in ("train", "val", "test")] == [3500, 500, 1000]
    val = digit_batch(cfg.task, (0, STREAM_VALIDATION), 50)
    assert torch.equal(val.index, digit_batch(cfg.task, (0, STREAM_VALIDATION), 50).index)  # fixed validation digits
    assert len(val.labels.unique()) > 5  # a random subset: the split itself is sorted by class
    test = digit_batch(cfg.task, (0, STREAM_TEST), 1000)
    assert torch.equal(test.index, torch.arange(1000))
    train = digit_batch(cfg.task, (0, STREAM_TRAIN, 1), 16)
    assert train.index.max() < 3500 and not torch.equal(train.index, digit_batch(cfg.task, (0, STREAM_TRAIN, 2), 16).index)
    assert train.x.shape == (16, cfg.task.n_steps(), cfg.task.n_inputs)


def test_the_real_configs_load():
    for name in ("smnist_lsnn_bptt", "smnist_lif_bptt", "smnist_lstm_bptt"):
        cfg = load_config(CONFIGS / f"{name}.yaml")
        assert cfg.task.family == "smnist" and cfg.bptt.lr_decay == 0.8 and cfg.bptt.lr_decay_every == 2500
    lsnn = load_config(CONFIGS / "smnist_lsnn_bptt.yaml").model
    assert (lsnn.n_lif, lsnn.n_alif, lsnn.tau_m, lsnn.tau_a, lsnn.beta, lsnn.b0, lsnn.n_ref) == (120, 100, 20, 700, 1.8, 0.01, 5)
