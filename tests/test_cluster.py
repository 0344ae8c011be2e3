"""Real services on loopback: a `ray start --head` cluster with its job server, and an MLflow
tracking server; `es-l2l submit` and `es-l2l run --address` run on the cluster."""

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, token: str | None = None) -> None:
    end = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def mlflow_server():
    tmp = Path(tempfile.mkdtemp(prefix="es-l2l-mlflow-"))
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--serve-artifacts",
         "--artifacts-destination", (tmp / "artifacts").as_uri()],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 120)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def head_node(temp_dir: str, num_cpus: int = 2, dashboard: bool = True, env: dict | None = None):
    """`ray start --head` on 127.0.0.1 with token authentication, free ports and its own temp dir;
    yields its addresses, env and the process group of its processes. Stopped by killing that
    process group (`ray stop` would stop every Ray on the machine), and the cluster record
    `ray start` wrote in its temp dir (`ray_current_cluster`) removed."""
    gcs, dash = free_port(), free_port()
    token = secrets.token_hex(32)
    env = dict(
        env or os.environ,
        PATH=f"{BIN}:{os.environ['PATH']}",
        RAY_USAGE_STATS_ENABLED="0",
        # `ray start` turns 127.0.0.1 into the machine's address unless Ray thinks it is on one machine.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        # Token authentication: the head and every client read the token from RAY_AUTH_TOKEN.
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
    )
    ports = {
        "--port": gcs, "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
        "--metrics-export-port": free_port(), "--runtime-env-agent-port": free_port(),
        "--node-manager-port": free_port(), "--object-manager-port": free_port(),
    }
    if dashboard:
        ports["--dashboard-port"] = dash
    cmd = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
           f"--include-dashboard={'true' if dashboard else 'false'}", f"--num-cpus={num_cpus}", "--num-gpus=0",
           f"--temp-dir={temp_dir}", "--disable-usage-stats", *[f"{k}={v}" for k, v in ports.items()]]
    starter = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        out, _ = starter.communicate(timeout=180)
        assert starter.returncode == 0, out
        if dashboard:
            wait_http(f"http://127.0.0.1:{dash}/api/version", 120, token)
        yield {"gcs": f"127.0.0.1:{gcs}", "dashboard": f"http://127.0.0.1:{dash}", "env": env, "token": token,
               "pgid": starter.pid}
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(starter.pid, sig)  # the head's processes and the workers it started
            except ProcessLookupError:
                break
            time.sleep(3)
        record = Path(temp_dir) / "ray_current_cluster"
        if record.exists() and record.read_text().strip() == f"127.0.0.1:{gcs}":
            record.unlink()


@pytest.fixture(scope="module")
def ray_head():
    """A 2-CPU head with its dashboard (the Jobs API); see :func:`head_node`."""
    import ray

    if ray.is_initialized():  # one Ray at a time on this machine: stop the in-process one
        ray.shutdown()
    tmp = tempfile.mkdtemp(prefix="/tmp/rh")  # short: Ray's socket paths live under it
    try:
        with head_node(tmp, num_cpus=2) as head:
            yield head
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def es_l2l(*args, env=None, timeout=600, cwd=None):
    return subprocess.run([sys.executable, "-m", "es_l2l.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


@pytest.mark.slow  # 25-50 s through real services; .ci/run runs it
def test_submit_reaches_succeeded_and_its_mlflow_run_is_found(ray_head, mlflow_server, tmp_path):
    proc = es_l2l("submit", str(SMOKE), "--address", ray_head["dashboard"], "--set", f"tracking.uri={mlflow_server}",
                  "--set", "run.generations=2", "--set", "run.validate_every=1", "--set", "run.checkpoint_every=1",
                  "--follow", env=ray_head["env"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    job_id = next(line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("submitted Ray job"))
    assert f"ray job stop --address {ray_head['dashboard']} {job_id}" in proc.stdout
    assert proc.stdout.rstrip().endswith(f"Ray job {job_id} SUCCEEDED")

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("es-l2l")
    (run,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`ray.job_submission_id` = '{job_id}'")
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/fitness_mean")] == [1, 2]
    assert {"checkpoint.pt", "resume.pt", "config.yaml"} <= {a.path for a in client.list_artifacts(run.info.run_id)}



@pytest.mark.slow  # run by .ci/run; an attach refusal on a real head stays in the default run (tests/test_cluster_failures.py)
def test_submit_without_the_token_is_one_clear_line(ray_head, tmp_path):
    env = {k: v for k, v in ray_head["env"].items() if k != "RAY_AUTH_TOKEN"}
    env["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "no-such-token")
    proc = es_l2l("submit", str(SMOKE), "--address", ray_head["dashboard"], f"--set=tracking.uri=sqlite:///{tmp_path / 'm.db'}",
                  env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot reach Ray's job server") and "RAY_AUTH_TOKEN" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # 25-50 s through real services; .ci/run runs it
def test_run_attaches_a_driver_to_the_running_cluster(ray_head, tmp_path):
    proc = es_l2l("run", str(SMOKE), "--address", ray_head["gcs"], "--set", "run.generations=2",
                  f"--set=tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"--set=tracking.artifact_root={tmp_path / 'mlruns'}",
                  env=ray_head["env"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED" and run.data.params["run.address"] == ray_head["gcs"]
