"""Runs next to other Ray software on the same machine (docs/failures.md): a live `ray start --head`
or only its record left behind, a SIGTERM while Ray starts, and a cluster whose CPUs another job holds.

Every cluster here is a real `ray start --head` on 127.0.0.1 in its own temp dir (RAY_TMPDIR for
the runs too, so that the record a `ray start` leaves is the one a run would read), stopped by
killing its own process group, never by `ray stop` (which stops every Ray on the machine).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.test_cluster import free_port, head_node

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
TINY = ["--set=run.generations=1", "--set=es.popsize=4", "--set=task.batch_size=2", "--set=run.validation_tasks=4",
        "--set=run.threads=1"]


@pytest.fixture
def ray_tmp():
    """A fresh, short Ray temp folder (Ray's socket paths live under it) as RAY_TMPDIR; removed after."""
    tmp = tempfile.mkdtemp(prefix="/tmp/rn")
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_env(ray_tmp: Path) -> dict:
    """The environment of a user's plain `es-l2l run`: no Ray address, no Ray token of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    return dict(env, RAY_TMPDIR=str(ray_tmp), RAY_USAGE_STATS_ENABLED="0")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "es_l2l.cli", *args]


def store(tmp: Path) -> list[str]:
    return [f"--set=tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"--set=tracking.artifact_root={tmp / 'mlruns'}"]


def the_run(tmp: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return run


def alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def group_gone(pgid: int, timeout: float = 20) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not alive(pgid):
            return True
        time.sleep(0.2)
    return False


# --- a cluster recorded on the machine ------------------------------------------------------------


@pytest.mark.slow  # 25-50 s through real services; .ci/run runs it
def test_a_run_without_address_starts_its_own_ray_beside_a_live_ray_start_head(ray_tmp, tmp_path):
    with head_node(str(ray_tmp / "ray"), num_cpus=1, dashboard=False, env=run_env(ray_tmp)) as head:
        # what a bare ray.init() would attach to (and then refuse num_cpus)
        assert (ray_tmp / "ray" / "ray_current_cluster").read_text().strip() == head["gcs"]
        t0 = time.monotonic()
        proc = subprocess.run(cli("run", str(SMOKE), *store(tmp_path), *TINY, "--workers", "1"), cwd=tmp_path,
                              env=run_env(ray_tmp), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        print(f"run beside a live head: FINISHED after {time.monotonic() - t0:.1f} s")
        run = the_run(tmp_path)
        assert run.info.status == "FINISHED" and run.data.params["run.workers"] == "1"
        assert alive(head["pgid"]), "the run stopped the other cluster"
        assert (ray_tmp / "ray" / "ray_current_cluster").read_text().strip() == head["gcs"]  # left as it was


@pytest.mark.slow  # run by .ci/run; a run beside a live cluster stays in the default run
def test_a_run_without_address_ignores_a_stale_cluster_record(ray_tmp, tmp_path):
    """A Ray process killed long ago left its record pointing at a dead address."""
    (ray_tmp / "ray").mkdir()
    record = ray_tmp / "ray" / "ray_current_cluster"
    record.write_text(f"127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    proc = subprocess.run(cli("run", str(SMOKE), *store(tmp_path), *TINY, "--workers", "1"), cwd=tmp_path,
                          env=run_env(ray_tmp), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    print(f"run beside a stale record: FINISHED after {time.monotonic() - t0:.1f} s")
    assert the_run(tmp_path).info.status == "FINISHED"
    assert record.exists()  # not ours to delete


# --- SIGTERM while Ray starts -------------------------------------------------------------------


def test_sigterm_while_ray_starts_is_one_line_exit_143_and_leaves_no_ray_process(ray_tmp, tmp_path):
    proc = subprocess.Popen(cli("run", str(SMOKE), *store(tmp_path), *TINY, "--workers", "1"), cwd=tmp_path,
                            env=run_env(ray_tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        end = time.monotonic() + 240
        # the raylet is up (its agents start next) while ray.init is still connecting the driver
        while not list(ray_tmp.glob("ray/session_*/logs/raylet.out")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < end, "Ray did not start"
            time.sleep(0.05)
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
        gone = group_gone(proc.pid, timeout=15)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    print(f"SIGTERM while Ray starts: exit after {took:.1f} s")
    assert proc.returncode == 143, (proc.returncode, out[-2000:], err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    assert out.strip().splitlines()[-1] == "terminated before any MLflow run started; nothing was logged", out[-2000:]
    assert took < 15, took
    assert gone, "Ray processes outlived the driver"
    assert not (tmp_path / "mlflow.db").exists()


# --- a cluster whose CPUs another job holds ------------------------------------------------------

HOLDER = r"""
import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False)
@ray.remote(num_cpus=1)
class Holder:
    def ping(self):
        return 1
h = Holder.remote()
ray.get(h.ping.remote())
print("HOLDING", flush=True)
time.sleep(600)
"""


@pytest.mark.slow  # run by .ci/run; a run beside other Ray state stays in the default run (test_a_run_without_address_ignores_a_stale_cluster_record)
def test_an_attached_run_says_in_one_line_that_another_job_holds_the_cpus_and_starts_when_freed(ray_tmp, tmp_path):
    with head_node(str(ray_tmp / "ray"), num_cpus=1, dashboard=False, env=run_env(ray_tmp)) as head:
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, head["gcs"]], env=head["env"], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        log = tmp_path / "out.txt"
        proc = None
        try:
            assert holder.stdout.readline().strip() == "HOLDING"
            with open(log, "w") as fh:
                t0 = time.monotonic()
                proc = subprocess.Popen(cli("run", str(SMOKE), *store(tmp_path), *TINY, "--workers", "1", "--address", head["gcs"]),
                                        cwd=tmp_path, env=head["env"], stdout=fh, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True)
                while "waiting for" not in log.read_text():
                    assert proc.poll() is None, (log.read_text(), proc.communicate())
                    assert time.monotonic() - t0 < 120, log.read_text()
                    time.sleep(0.2)
                said = time.monotonic() - t0
                os.killpg(holder.pid, signal.SIGTERM)  # the other job ends: its CPU is free
                holder.wait(30)
                _, err = proc.communicate(timeout=240)
        finally:
            for p in (holder, proc):
                if p is not None and p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
        text = log.read_text()
        print(f"CPUs held by another job: warning {said:.1f} s after the start")
        assert proc.returncode == 0, text[-2000:] + err[-3000:]
        (line,) = [ln for ln in text.splitlines() if "waiting for" in ln]
        assert f"waiting for 1 CPU(s) on the Ray cluster at '{head['gcs']}'" in line and "it has 1, 0 free" in line, line
        assert said < 60, said
        assert the_run(tmp_path).info.status == "FINISHED"
