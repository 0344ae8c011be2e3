"""The store_recall family end to end: ES and BPTT through the real CLI on the smoke config, the
LIF-only network is the LSNN with n_alif 0, LSNN vs LIF vs LSTM through ``es-l2l compare``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from es_l2l.config import build_config, load_config
from es_l2l.context import RunContext
from es_l2l.families import FAMILIES
from es_l2l.families.store_recall.evaluate import evaluate_params
from es_l2l.genome import build_genome
from es_l2l.seeds import STREAM_TRAIN, SeedKey

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs"


def es_l2l(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    track = [f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"tracking.artifact_root={tmp / 'mlruns'}"]
    sets = [a for s in track for a in ("--set", s)]
    return subprocess.run([sys.executable, "-m", "es_l2l.cli", *args, *sets], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=600)


def runs(tmp: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    return client, client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_registered():
    assert "store_recall" in FAMILIES and FAMILIES["store_recall"].objective.key == "val_recall_error"


def test_es_and_bptt_run_through_the_cli_with_the_smoke_config(tmp_path):
    for outer in ("es", "bptt"):
        proc = es_l2l(tmp_path, "run", str(CONFIGS / "smoke_store_recall.yaml"), "--set", f"outer={outer}",
                      "--set", f"name=sr-{outer}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Store-recall: 40 held-out sequences" in proc.stdout and "last bit seen" in proc.stdout
    client, found = runs(tmp_path)
    assert sorted(r.data.params["outer"] for r in found) == ["bptt", "es"]
    for run in found:
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/recall_error")] == [0, 1, 2, 3]
        assert 0 <= run.data.metrics["withheld/model/recall_error"] <= 1 and "withheld/last_bit_seen/recall_error" in run.data.metrics
        assert {"withheld/model/recall_error_long", "withheld/untrained/recall_error", "withheld/chance/recall_error_long"} <= set(run.data.metrics)
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"raster.png", "recall_error_by_delay.png", "recall_error_by_delay.csv"} <= names


def test_lif_only_is_the_lsnn_with_n_alif_0():
    """A 12+0 network gives exactly the numbers of a 6+6 LSNN with the same weights and beta = 0."""
    lif = load_config(CONFIGS / "smoke_store_recall_bptt.yaml", ["model.n_lif=12", "model.n_alif=0"])
    lsnn = load_config(CONFIGS / "smoke_store_recall_bptt.yaml", ["model.n_lif=6", "model.n_alif=6", "model.beta=0"])
    g_lif, g_lsnn = build_genome(lif), build_genome(lsnn)
    genes = g_lif.decode(g_lif.initial_vector().unsqueeze(0))
    genes_lsnn = g_lsnn.decode(g_lsnn.initial_vector().unsqueeze(0))
    genes_lsnn.update({k: v for k, v in genes.items() if k not in ("tau_a", "beta")})
    p_lif, p_lsnn = g_lif.to_model(genes), g_lsnn.to_model(genes_lsnn)
    assert not p_lif.beta.any() and not p_lsnn.beta.any()
    keys = SeedKey(0, STREAM_TRAIN, 1)
    with torch.no_grad():
        a, b = evaluate_params(lif.task, RunContext.of(lif), p_lif, keys, 8), evaluate_params(lsnn.task, RunContext.of(lsnn), p_lsnn, keys, 8)
    assert torch.equal(a.fitness, b.fitness) and torch.equal(a.wrong, b.wrong)
    # with gradients (the BPTT path) too
    a = evaluate_params(lif.task, RunContext.of(lif), p_lif._replace(w_out=p_lif.w_out.clone().requires_grad_()), keys, 8)
    b = evaluate_params(lsnn.task, RunContext.of(lsnn), p_lsnn._replace(w_out=p_lsnn.w_out.clone().requires_grad_()), keys, 8)
    assert torch.allclose(a.fitness, b.fitness, rtol=0, atol=1e-6)


def test_the_lif_configs_differ_from_the_lsnn_ones_only_in_the_neuron_split_and_their_own_tuned_rate():
    """The LIF-only controls are the LSNN's configs with no adaptive neuron; the real ones ship the learning rate their
    own search chose (configs/tune_*_lif_bptt.yaml), nothing else."""
    for lsnn, lif, tuned in (("store_recall_bptt.yaml", "store_recall_lif_bptt.yaml", 0.0155), ("smnist_lsnn_bptt.yaml", "smnist_lif_bptt.yaml", 0.00035),
                             ("smoke_store_recall_bptt.yaml", "smoke_store_recall_lif_bptt.yaml", None)):
        a, b = load_config(CONFIGS / lsnn).flat(), load_config(CONFIGS / lif).flat()
        diff = {k for k in a if a[k] != b[k]}
        assert diff == {"name", "model.n_lif", "model.n_alif"} | ({"bptt.lr"} if tuned else set()), (lsnn, diff)
        assert tuned is None or b["bptt.lr"] == tuned
        assert b["model.n_alif"] == 0 and b["model.n_lif"] == a["model.n_lif"] + a["model.n_alif"]


@pytest.mark.slow  # run by .ci/run; compare stays in the default run (tests/test_compare.py), store-recall through the CLI too
def test_compare_accepts_lsnn_vs_lif_vs_lstm(tmp_path):
    proc = es_l2l(tmp_path, "compare", str(CONFIGS / "compare_store_recall_smoke.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lowest test recall error" in proc.stdout
    for name in ("store-recall-smoke-bptt", "store-recall-smoke-lif-bptt", "store-recall-smoke-lstm-bptt", "store-recall-smoke"):
        assert name in proc.stdout


def test_the_real_configs_load():
    for name in ("store_recall_bptt", "store_recall_lif_bptt", "store_recall_lstm_bptt", "store_recall_es"):
        cfg = load_config(CONFIGS / f"{name}.yaml")
        assert cfg.task.family == "store_recall" and cfg.task.min_delay * cfg.task.symbol_ms <= 1000 <= cfg.task.max_delay * cfg.task.symbol_ms
    assert build_config({"task": {"family": "store_recall"}}).task.test_sequences == 1000
