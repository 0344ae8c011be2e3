"""End-to-end runs of the real ``es-l2l`` command on tiny budgets, read back through MlflowClient."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from es_l2l.tracking.checkpoint import load_checkpoint
from es_l2l.context import RunContext
from es_l2l.families.teacher.report import LSNN_TRAINED, held_out_report

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def es_l2l(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "es_l2l.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def store(tmp: Path) -> list[str]:
    return [f"--set=tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"--set=tracking.artifact_root={tmp / 'mlruns'}"]


def runs_in(tmp: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    exps = client.search_experiments()
    return client, client.search_runs([e.experiment_id for e in exps]) if exps else []


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    proc = es_l2l(tmp, "run", str(SMOKE), *store(tmp), "--set", "run.seed=3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tmp, proc


def test_run_logs_params_metrics_checkpoint_and_plot(finished_run):
    tmp, proc = finished_run
    client, runs = runs_in(tmp)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["es.algorithm"] == "pgpe" and run.data.params["run.seed"] == "3"
    # MLflow's UI opens the experiment in its model-training view only when the experiment says so
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    fitness = client.get_metric_history(run.info.run_id, "train/fitness_mean")
    assert len({m.step for m in fitness}) >= 2
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/mse_late")] == [0, 3, 6]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoint.pt", "mse_per_trial.png", "mse_per_trial.csv", "config.yaml"} <= names
    for key in ("withheld/model/mse_late", "withheld/untrained/mse_late", "withheld/running_mean/mse_late", "withheld/oracle_linear/mse_late",
                "withheld/family_mean/mse_late", "withheld/online_least_squares/mse_late", "withheld/family/linear_fit_share",
                "val/best_mse_late", "val/best_generation", "train/elapsed_s", "train/neuron_steps", "train/stdev"):
        assert key in run.data.metrics, key
    assert all(k.split("/")[0] in ("train", "val", "withheld", "system") for k in run.data.metrics), sorted(run.data.metrics)
    assert run.info.run_id in proc.stdout and "mlflow ui --backend-store-uri" in proc.stdout
    assert "beats" in proc.stdout and "running mean" in proc.stdout


def test_checkpoint_reloads_and_reproduces_the_logged_test_mse(finished_run):
    tmp, _ = finished_run
    client, runs = runs_in(tmp)
    run = runs[0]
    path = client.download_artifacts(run.info.run_id, "checkpoint.pt", str(tmp))
    cfg, genome, genomes, meta = load_checkpoint(path)
    assert cfg.run.seed == 3 and set(genomes) == {"best", "final", "initial"}
    report = held_out_report(cfg.task, RunContext.of(cfg), genome, genomes["initial"], genomes["best"])
    logged = run.data.metrics["withheld/model/mse_late"]
    assert report.metrics[LSNN_TRAINED]["test_mse_late"] == pytest.approx(logged, rel=1e-6)
    proc = es_l2l(tmp, "evaluate", path)
    assert proc.returncode == 0, proc.stderr
    assert f"test MSE over late trials: {logged:.4f}" in proc.stdout and "running mean" in proc.stdout
    png = Path(client.download_artifacts(run.info.run_id, "mse_per_trial.png", str(tmp)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    episode = Path(client.download_artifacts(run.info.run_id, "typical_episode.png", str(tmp)))
    assert episode.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "withheld/model_minus_running_mean/lo" in run.data.metrics


def test_evaluate_scores_a_variant_of_the_runs_tasks_and_refuses_what_the_network_cannot_take(finished_run):
    tmp, _ = finished_run
    client, (run,) = runs_in(tmp)
    path = client.download_artifacts(run.info.run_id, "checkpoint.pt", str(tmp))
    proc = es_l2l(tmp, "evaluate", path, "--tasks", "8", "--set", "task.frequent_targets=2")
    assert proc.returncode == 0, proc.stderr
    assert "Frequent (2 fixed networks) vs fresh target networks" in " ".join(proc.stdout.split())
    for args, message in ((["--set", "model.n_lif=3"], "changes the held-out tasks only"),
                          (["--set", "task.show_previous_input=true"], "cannot be scored on such tasks"),
                          (["--tasks", "7", "--set", "task.frequent_targets=2"], "must be a multiple of task.frequent_targets")):
        bad = es_l2l(tmp, "evaluate", path, *args)
        assert bad.returncode == 2 and message in " ".join(bad.stderr.split()), bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_same_config_and_seed_give_the_same_numbers(finished_run, tmp_path):
    tmp, _ = finished_run
    proc = es_l2l(tmp_path, "run", str(SMOKE), *store(tmp_path), "--set", "run.seed=3", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    _, (a,) = runs_in(tmp)
    _, (b,) = runs_in(tmp_path)
    assert a.data.metrics["withheld/model/mse_late"] == b.data.metrics["withheld/model/mse_late"]
    assert a.data.metrics["train/fitness_mean"] == b.data.metrics["train/fitness_mean"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "es.algorithm=adamw"], "'es.algorithm'"),
        (["--set", "es.popsize=-4"], "'es.popsize'"),
        (["--set", "model.tau_mem=20"], "unknown config key 'model.tau_mem'"),
        (["--set", "task.n_trials=two"], "'task.n_trials'"),
    ],
)
def test_bad_config_exits_2_with_one_sentence_and_no_run(tmp_path, args, message):
    proc = es_l2l(tmp_path, "run", str(SMOKE), *store(tmp_path), *args, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()


def test_unreachable_cluster_is_a_clear_error_and_creates_no_run(tmp_path):
    proc = es_l2l(tmp_path, "run", str(SMOKE), *store(tmp_path), "--address", "127.0.0.1:9", timeout=60)
    assert proc.returncode == 1
    assert "cannot reach a Ray cluster at '127.0.0.1:9'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_request_without_gpus_is_a_clear_error(tmp_path):
    proc = es_l2l(tmp_path, "run", str(SMOKE), *store(tmp_path), "--set", "run.device=cuda", timeout=120)
    assert proc.returncode == 1
    assert "run.device=cuda asks for 2 GPU worker(s) but this machine's local Ray has 0 GPU(s)" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_an_experiment_made_by_an_older_version_is_tagged_once_and_a_users_kind_is_kept(tmp_path):
    from es_l2l.tracking.preflight import get_or_create_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    old = client.create_experiment("old")  # as es-l2l made it before: no kind tag
    mine = client.create_experiment("mine", tags={"mlflow.experimentKind": "finetuning"})
    assert get_or_create_experiment(client, "old", None, uri) == old
    assert get_or_create_experiment(client, "mine", None, uri) == mine
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(mine).tags["mlflow.experimentKind"] == "finetuning"


# MLflow's own test for "are we in CI or pytest" (its telemetry is then off anyway): kept out of the child
_CI_VARS = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS", "TF_BUILD",
            "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION", "CLOUD_RUN_EXECUTION",
            "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")
_TELEMETRY = """
import sys
from es_l2l.cli import main
main(["run", sys.argv[1], "--print-config"])
from mlflow.telemetry.utils import is_telemetry_disabled
print("TELEMETRY", "off" if is_telemetry_disabled() else "on")
"""


@pytest.mark.parametrize("user, expected", [(None, "off"), ("false", "on")])
def test_mlflow_telemetry_is_off_in_the_cli_unless_the_user_opts_in(tmp_path, user, expected):
    import os

    env = {k: v for k, v in os.environ.items() if k not in _CI_VARS}
    env["PYTHONPATH"] = str(ROOT)
    if user is not None:
        env["MLFLOW_DISABLE_TELEMETRY"] = user  # the user's opt-in
    proc = subprocess.run([sys.executable, "-c", _TELEMETRY, str(SMOKE)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == f"TELEMETRY {expected}", proc.stdout[-500:]
