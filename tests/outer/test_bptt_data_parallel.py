"""Data-parallel BPTT (bptt.workers): shards of a step's tasks on Ray actors, gradients all-reduced.

One and two workers take the same steps up to float rounding (a real local Ray on 127.0.0.1 and a
real gloo group on loopback); the tasks a worker sees are rows of the batch the seeds draw; bad
input is one sentence, exit 2 and no MLflow run.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from es_l2l.config import ConfigError, load_config
from es_l2l.errors import ClusterError
from es_l2l.families import family_of
from es_l2l.genome import build_genome
from es_l2l.outer.driver import drive
from es_l2l.outer.shell import gradient_trainer
from es_l2l.outer.data_parallel import DataParallelTrainer, make_data_parallel, merge, shards
from es_l2l.seeds import STREAM_TRAIN

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke_bptt.yaml"
# smoke_bptt's model and tasks; 15 tasks a step, so that two workers get unequal shards (8 and 7)
# and a plain mean of the shards' losses (instead of the task-weighted one) would show
SETS = ["run.generations=5", "run.validate_every=5", "run.threads=1", "bptt.batch_size=15"]


def config(*sets):
    return load_config(SMOKE, [*SETS, *sets])


def test_shards_are_contiguous_and_cover_the_batch():
    assert shards(15, 2) == [(0, 8), (8, 15)]
    assert shards(16, 3) == [(0, 6), (6, 11), (11, 16)]
    assert shards(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]


def test_a_shard_holds_the_batch_rows_the_seeds_drew_and_weighted_shards_give_the_batch_gradient():
    """Tasks 8..14 evaluated alone are rows 8..14 of the whole batch (the seeds decide a task, not
    the worker), and the shards' gradients weighted 8/15 and 7/15 add up to the whole batch's."""
    cfg = config()
    genome = build_genome(cfg)
    keys = (cfg.run.seed, STREAM_TRAIN, 1)

    def grads(shard):
        trainer = gradient_trainer(cfg, genome)
        loss, ev, _ = trainer.loss_and_eval(keys, shard)
        weight = 1.0 if shard is None else (shard[1] - shard[0]) / 15
        (loss * weight).backward()
        return torch.cat([leaf.grad.reshape(-1) for leaf in trainer.leaves.values()]), ev

    whole, ev = grads(None)
    first, ev0 = grads((0, 8))
    second, ev1 = grads((8, 15))
    torch.testing.assert_close(ev1.predictions, ev.predictions[:, 8:15], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ev0.predictions, ev.predictions[:, :8], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ev0.predictions[:, :7], ev1.predictions)  # different tasks, different outputs
    torch.testing.assert_close(first + second, whole, rtol=1e-4, atol=1e-7)
    assert not torch.allclose((first + second) / 2, whole, rtol=1e-3)  # unweighted halves would be wrong
    merged = merge([{"fitness_mean": float(ev0.fitness[0].detach()), "neuron_steps": 1}, {"fitness_mean": float(ev1.fitness[0].detach()), "neuron_steps": 2}],
                   [(0, 8), (8, 15)], 15)
    assert merged["fitness_mean"] == pytest.approx(float(ev.fitness[0].detach()), rel=1e-5) and merged["neuron_steps"] == 3


def test_one_and_two_workers_give_the_same_loss_curve_and_parameters(ray_local):
    cfg1, cfg2 = config(), config("bptt.workers=2")
    genome = build_genome(cfg1)
    one = drive(cfg1, genome)  # bptt.workers=1: the single-process loop, unchanged
    assert make_data_parallel(cfg1, genome) is None
    hist2: list[dict] = []
    replicas = make_data_parallel(cfg2, genome)  # what the shell hands the loop in place of an evaluator
    try:
        assert len(set(replicas.pids())) == 2
        two = drive(cfg2, genome, replicas, [hist2.append])
    finally:
        replicas.close()
    curve1 = [h["fitness_mean"] for h in one.history[1:]]
    curve2 = [h["fitness_mean"] for h in two.history[1:]]
    assert len(curve1) == len(curve2) == 5 and len(set(curve1)) == 5  # the loss moves every step
    assert curve2 == pytest.approx(curve1, rel=1e-5)
    assert [h["grad_norm"] for h in hist2[1:]] == pytest.approx([h["grad_norm"] for h in one.history[1:]], rel=1e-4)
    assert [h["neuron_steps"] for h in hist2] == [h["neuron_steps"] for h in one.history]
    assert all(h["allreduce_s"] >= 0 for h in hist2[1:])
    assert not torch.equal(one.final, one.initial)
    torch.testing.assert_close(two.final, one.final, rtol=1e-5, atol=1e-6)
    assert hist2[-1]["val_mse_late"] == pytest.approx(one.history[-1]["val_mse_late"], rel=1e-4)
    assert two.best_generation == one.best_generation


def test_more_workers_than_the_cluster_has_cpus_is_one_sentence(ray_local):
    cfg = config("bptt.workers=3")  # the test session's Ray has 2 CPUs
    with pytest.raises(ClusterError, match=r"^bptt.workers=3 needs 3 CPUs but the Ray cluster has 2; lower bptt.workers or add nodes$"):
        DataParallelTrainer(cfg, build_genome(cfg))


def test_the_loop_refuses_to_run_two_workers_in_one_process():
    cfg = config("bptt.workers=2")
    with pytest.raises(ValueError, match="bptt.workers=2 needs the data-parallel trainer"):
        drive(cfg, build_genome(cfg))


def test_bad_bptt_workers_is_one_sentence_naming_the_key():
    with pytest.raises(ConfigError, match="'bptt.workers'"):
        config("bptt.workers=0")
    with pytest.raises(ConfigError, match="bptt.workers=16 is more than the 15 tasks of a step"):
        config("bptt.workers=16")
    with pytest.raises(ConfigError, match="bptt.workers=2 splits the gradient steps of outer=bptt only, not those of outer=hybrid"):
        load_config(ROOT / "configs" / "smoke_hybrid.yaml", ["bptt.workers=2"])
    with pytest.raises(ConfigError, match="bptt.workers=2 splits the gradient steps of outer=bptt only, not those of outer=es"):
        load_config(ROOT / "configs" / "smoke.yaml", ["bptt.workers=2"])
    with pytest.raises(ConfigError, match="the maze family cannot split a step's tasks across workers"):
        load_config(ROOT / "configs" / "smoke_maze_a2c.yaml", ["bptt.workers=2"])
    with pytest.raises(ConfigError, match="model.rate_reg=0.1: the rate regulariser is not a mean over tasks"):
        config("bptt.workers=2", "model.rate_reg=0.1")
    from es_l2l.config import build_config

    tree = {"outer": "bptt", "task": {"family": "tests.outer.test_guided:NO_GRADIENT_FAMILY"}, "model": {"n_lif": 6, "n_alif": 6}}
    with pytest.raises(ConfigError, match="bptt.workers=2: the tests.outer.test_guided:NO_GRADIENT_FAMILY family has no gradient loss"):
        build_config(tree, ["bptt.workers=2"])
    assert config("bptt.workers=2").bptt.workers == 2 and family_of(config().task).shards_tasks


@pytest.mark.parametrize("sets, message", [
    (["bptt.workers=0"], "'bptt.workers'"),
    (["bptt.workers=17"], "bptt.workers=17 is more than the 16 tasks of a step; lower bptt.workers or raise bptt.batch_size"),
])
def test_bad_bptt_workers_exits_2_through_the_cli_with_no_run(tmp_path, sets, message):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    store = [f"--set=tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"--set=tracking.artifact_root={tmp_path / 'mlruns'}"]
    proc = subprocess.run([sys.executable, "-m", "es_l2l.cli", "run", str(SMOKE), *store, *(f"--set={s}" for s in sets)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.slow  # run by .ci/run; data-parallel BPTT stays in the default run in-process (test_one_and_two_workers_give_the_same_loss_curve_and_parameters)
def test_the_cli_runs_two_workers_and_the_driver_logs_every_step_to_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    store = [f"--set=tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"--set=tracking.artifact_root={tmp_path / 'mlruns'}"]
    sets = ["bptt.workers=2", "run.generations=3", "run.validate_every=3", "run.threads=1", "run.validation_tasks=16"]
    proc = subprocess.run([sys.executable, "-m", "es_l2l.cli", "run", str(SMOKE), *store, *(f"--set={s}" for s in sets)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "each step's tasks split across 2 data-parallel workers" in " ".join(proc.stdout.split())
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED" and run.data.params["bptt.workers"] == "2"
    keys = set(run.data.metrics)
    fitness = [k for k in keys if k.endswith("fitness_mean")]
    assert fitness and len(client.get_metric_history(run.info.run_id, fitness[0])) == 3
    assert any(k.endswith("allreduce_s") for k in keys), sorted(keys)
