"""Failures against a real `ray start --head` cluster (token authentication, 2 CPUs) and a real MLflow
server: a missing token is named, too few CPUs are said in one sentence, and a plain
`ray job submit --working-dir . -- python -m es_l2l.cli run ...` attaches through RAY_ADDRESS."""

import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.test_cluster import BIN, ROOT, SMOKE, es_l2l, mlflow_server, ray_head  # noqa: F401  (fixtures)


@pytest.mark.slow  # run by .ci/run; the other attach refusals on this head stay in the default run
def test_run_without_the_ray_token_says_the_token_is_missing(ray_head, tmp_path):
    env = {k: v for k, v in ray_head["env"].items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    env["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "no-such-token")
    proc = es_l2l("run", str(SMOKE), "--address", ray_head["gcs"], f"--set=tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                  env=env, cwd=tmp_path, timeout=180)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "requires an authentication token" in proc.stderr and "RAY_AUTH_TOKEN" in proc.stderr, proc.stderr[-3000:]
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_more_workers_than_the_cluster_has_cpus_is_one_sentence_exit_2_not_a_hang(ray_head, tmp_path):
    proc = es_l2l("run", str(SMOKE), "--address", ray_head["gcs"], "--workers", "4",
                  f"--set=tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", env=ray_head["env"], cwd=tmp_path, timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]  # bad input: more than the cluster has, with no autoscaler
    assert "need 4 CPUs but the Ray cluster at" in proc.stderr and "has 2" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def _working_dir(tmp: Path) -> Path:
    """What a user's checkout holds that the job needs (the package and the configs)."""
    wd = tmp / "checkout"
    shutil.copytree(ROOT / "es_l2l", wd / "es_l2l", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "configs", wd / "configs")
    return wd


def _ray_job(ray_head, wd: Path, runtime_env: str | None, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "ray"), "job", "submit", "--address", ray_head["dashboard"], "--working-dir", "."]
    if runtime_env:
        cmd += ["--runtime-env-json", runtime_env]
    cmd += ["--", "python", "-m", "es_l2l.cli", "run", "configs/smoke.yaml", *args]
    return subprocess.run(cmd, cwd=wd, env=ray_head["env"], capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # run by .ci/run, beside es-l2l submit's own test (tests/test_cluster.py, also slow)
def test_plain_ray_job_submit_attaches_through_ray_address(ray_head, mlflow_server, tmp_path):
    wd = _working_dir(tmp_path)
    proc = _ray_job(ray_head, wd, '{"env_vars": {"MLFLOW_TRACKING_URI": "%s"}}' % mlflow_server,
                    "--set=run.generations=2", "--set=tracking.experiment=plain-job")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("plain-job")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"


@pytest.mark.slow  # run by .ci/run; an attach refusal on this head stays in the default run
def test_a_ray_job_without_a_tracking_uri_is_refused_in_one_line(ray_head, tmp_path):
    wd = _working_dir(tmp_path)
    proc = _ray_job(ray_head, wd, None, "--set=run.generations=2")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "is a Ray job with neither tracking.uri nor MLFLOW_TRACKING_URI" in text, text[-3000:]
