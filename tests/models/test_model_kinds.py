"""Model kinds: the registry, each kind's own ``model:`` section, the LSTM's genome (round trip,
layout, parameters), its closed-loop stepper, ES and BPTT on an LSTM through the real CLI (the
maze's closed loop included), and the settings that refuse a kind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from es_l2l.config import ConfigError, build_config, load_config
from es_l2l.genome import build_genome
from es_l2l.context import RunContext
from es_l2l.models import MODELS
from es_l2l.models.lstm import LSTMParams, LSTMStepper, init_lstm, lstm_param_count, lstm_rollout
from es_l2l.seeds import STREAM_INIT, SeedKey, generator

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


def lstm_cfg(**extra):
    return load_config(CONFIGS / "smoke_store_recall_lstm_bptt.yaml", [f"{k}={v}" for k, v in extra.items()])


def test_registry():
    assert set(MODELS) == {"lsnn", "lstm"}
    with pytest.raises(ConfigError, match="unknown model kind 'gru'; allowed: lsnn, lstm"):
        build_config({"model": {"kind": "gru"}})


def test_lstm_genome_round_trip_and_layout():
    cfg = lstm_cfg()
    g = build_genome(cfg)
    h, n_in, n_out = cfg.model.lstm_units, g.n_in, g.n_out
    assert g.kind == "lstm" and g.searched == ("w_in", "w_rec", "w_out", "b_out")
    assert g.dim == lstm_param_count(n_in, h, n_out)
    vectors = torch.randn(5, g.dim)
    assert torch.equal(g.encode(g.decode(vectors)), vectors)
    # the initial genome is torch.nn.LSTM's initialisation from the run seed, bias as the last row of w_in
    p = g.params(g.initial_vector().unsqueeze(0))
    ref = init_lstm(1, n_in, h, n_out, generator(cfg.run.seed, STREAM_INIT), forget_bias=cfg.model.lstm_forget_bias)
    assert isinstance(p, LSTMParams) and all(torch.equal(a, b) for a, b in zip(p, ref))


def test_lstm_simulate_is_lstm_rollout_with_no_spikes():
    cfg = lstm_cfg()
    g = build_genome(cfg)
    p = g.params(torch.randn(3, g.dim) * 0.3)
    x = (torch.rand(4, 50, g.n_in) < 0.1).float()
    out = RunContext.of(cfg).simulate(p, x, readout_steps=torch.tensor([10, 49]))
    assert torch.equal(out.y, lstm_rollout(p, x, torch.tensor([10, 49])))
    assert out.spike_count.shape == (3, 4, cfg.model.lstm_units) and not out.spike_count.any() and out.n_steps == 50


def test_lstm_weights_are_clipped_and_differentiable():
    cfg = lstm_cfg(**{"genome.weight_bound": 0.5})
    g = build_genome(cfg)
    v = (torch.randn(2, g.dim) * 3).requires_grad_()
    p = g.params(v)
    assert all(t.abs().max() <= 0.5 for t in p)
    RunContext.of(cfg).simulate(p, torch.rand(2, 20, g.n_in)).y.sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0


def es_l2l(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    track = [f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"tracking.artifact_root={tmp / 'mlruns'}"]
    return subprocess.run([sys.executable, "-m", "es_l2l.cli", *args, *[a for s in track for a in ("--set", s)]], cwd=tmp,
                          env=env, capture_output=True, text=True, timeout=600)


# BPTT: run by .ci/run; the teacher LSTM through BPTT stays in the default run (tests/test_smoke_configs.py)
@pytest.mark.parametrize("outer", ["es", pytest.param("bptt", marks=pytest.mark.slow)])
def test_es_and_bptt_train_an_lstm_through_the_cli(tmp_path, outer):
    from mlflow.tracking import MlflowClient

    proc = es_l2l(tmp_path, "run", str(CONFIGS / "smoke_store_recall_lstm_bptt.yaml"), "--set", f"outer={outer}",
                  "--set", "es.popsize=8")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LSTM of 4 units" in proc.stdout and "Store-recall: 40 held-out sequences" in proc.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED" and run.data.params["model.kind"] == "lstm"
    from es_l2l.tracking.checkpoint import load_checkpoint

    path = client.download_artifacts(run.info.run_id, "checkpoint.pt", str(tmp_path))
    _, genome, genomes, _ = load_checkpoint(path)
    assert genome.kind == "lstm" and not torch.equal(genomes["final"], genomes["initial"])  # it trained


def test_each_kind_owns_its_section():
    assert build_config({"model": {"kind": "lstm", "lstm_units": 3}}).model.lstm_units == 3
    assert not hasattr(build_config(None).model, "lstm_units")  # the LSNN's section has no LSTM keys
    for tree, line in (
        ({"lstm_units": 3}, "config key 'model.lstm_units' belongs to model.kind lstm, not lsnn; remove it or set model.kind=lstm"),
        ({"kind": "lstm", "n_lif": 3}, "config key 'model.n_lif' belongs to model.kind lsnn, not lstm; remove it or set model.kind=lsnn"),
        ({"kind": "lstm", "tau_mem": 3}, "unknown config key 'model.tau_mem'; allowed keys in model (kind lstm): kind, lstm_units, lstm_forget_bias"),
    ):
        with pytest.raises(ConfigError) as err:
            build_config({"model": tree})
        assert str(err.value) == line


def test_a_stored_config_with_every_kinds_model_keys_still_loads():
    """Before each kind owned its section, es-l2l stored one ``model:`` with every kind's keys
    (checkpoints, resume files): they load as the same config, the other kind's keys dropped."""
    from es_l2l.tracking.checkpoint import renamed_values

    lsnn, lstm = build_config(None), lstm_cfg()
    old_lsnn = {**lsnn.model_dump(), "model": {**lsnn.model.model_dump(), "lstm_units": 16, "lstm_forget_bias": 1.0}}
    old_lstm = {**lstm.model_dump(), "model": {**lstm.model.model_dump(), "n_lif": 16, "n_alif": 16, "tau_m": 20.0}}
    assert build_config(renamed_values(old_lsnn)) == lsnn and build_config(renamed_values(old_lstm)) == lstm
    with pytest.raises(ConfigError, match="unknown config key 'model.tau_mem'"):  # unknown keys are still named
        build_config(renamed_values({"model": {"tau_mem": 3}}))


def test_lstm_stepper_is_the_lstm_run_a_step_at_a_time():
    g = build_genome(lstm_cfg())
    p = g.params(torch.randn(3, g.dim) * 0.3)
    x = (torch.rand(4, 12, g.n_in) < 0.2).float()
    net = LSTMStepper(p, 4)
    ys = []
    for t0 in range(0, 12, 3):  # the closed loop's chunks
        net.advance(x[:, t0 : t0 + 3])
        ys.append(net.readout())
    torch.testing.assert_close(torch.stack(ys, dim=2), lstm_rollout(p, x, torch.tensor([2, 5, 8, 11])))
    assert not net.spike_count.any()


def test_an_lstm_agent_plays_the_maze_through_the_cli(tmp_path):
    proc = es_l2l(tmp_path, "run", str(CONFIGS / "smoke_maze.yaml"), "--set", "model={kind: lstm, lstm_units: 4}",
                  "--set", "run.generations=2", "--set", "run.workers=0", "--set", "run.threads=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    words = " ".join(proc.stdout.split())
    assert "LSTM of 4 units" in words and "Held-out test mazes" in words


def test_settings_that_refuse_an_lstm():
    with pytest.raises(ConfigError, match="genome.mirror"):
        build_config({"model": {"kind": "lstm"}, "task": {"family": "maze"}, "genome": {"mirror": True}})
    with pytest.raises(ConfigError, match="bptt.deep_r"):
        build_config({"model": {"kind": "lstm"}, "outer": "bptt", "bptt": {"deep_r": {"enabled": True}}})
    # the teacher family runs any model kind
    cfg = build_config({"model": {"kind": "lstm", "lstm_units": 3}, "task": {"n_trials": 3, "trial_ms": 4, "readout_ms": 2, "batch_size": 2}})
    from es_l2l.families import family_of

    g = build_genome(cfg)
    ev = family_of(cfg.task).evaluate(cfg.task, RunContext.of(cfg), g.params(g.initial_vector().unsqueeze(0)), SeedKey(0, 1), 2)
    assert ev.fitness.shape == (1,) and float(ev.rate_hz[0]) == 0.0
