"""Failures and what the user sees: the real `es-l2l` command, real signals, a real SQLite MLflow store.

Each test is one row of docs/failures.md.
"""

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
# small and long: a run that is still going when the test acts on it
LONG = ["--set=run.generations=400", "--set=run.validate_every=5", "--set=run.checkpoint_every=5",
        "--set=task.batch_size=4", "--set=run.validation_tasks=8"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "es_l2l.cli", *args]


def es_l2l(cwd: Path, *args: str, timeout: float = 300, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def store(tmp: Path) -> list[str]:
    return [f"--set=tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"--set=tracking.artifact_root={tmp / 'mlruns'}"]


def client_of(tmp: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")


def runs_in(tmp: Path):
    client = client_of(tmp)
    exps = client.search_experiments()
    return client.search_runs([e.experiment_id for e in exps]) if exps else []


def one_line(proc) -> bool:
    return len(proc.stderr.strip().splitlines()) == 1


def wait_for(root: Path, pattern: str, proc, timeout: float = 240) -> Path:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(proc.communicate())
        time.sleep(0.1)
    raise TimeoutError(pattern)


def group_gone(pgid: int, timeout: float = 20) -> bool:
    """Whether every process of the group (the driver, and Ray's raylet, GCS and workers) has exited."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


# --- 1. every run ends in a final state -------------------------------------------------------


@pytest.mark.parametrize("how, workers", [("SIGTERM", "0"), ("SIGTERM", "1"), ("Ctrl-C", "1")])
def test_sigterm_or_ctrl_c_marks_the_run_killed_keeps_checkpoints_and_shuts_ray_down(tmp_path, how, workers):
    # as from a terminal: SIGINT at its default (a parent running Ray may ignore it, and exec keeps SIG_IGN)
    terminal = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(cli("run", str(SMOKE), *store(tmp_path), *LONG, "--workers", workers), cwd=tmp_path, preexec_fn=terminal,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(tmp_path, "mlruns/**/checkpoint.pt", proc)
        t0 = time.monotonic()
        if how == "SIGTERM":  # kill PID, ray job stop, a scheduler: the driver alone
            os.kill(proc.pid, signal.SIGTERM)
        else:  # Ctrl-C in a terminal: SIGINT to the whole foreground process group, Ray's processes included
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
        took = time.monotonic() - t0
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == (143 if how == "SIGTERM" else 130), err[-2000:]
    assert took < 12, took  # about 4 s (Ctrl-C) and under 10 s (SIGTERM) on an idle machine; slack for a busy one
    verb = "terminated" if how == "SIGTERM" else "interrupted"
    assert f"{verb}; the MLflow run keeps the metrics logged so far" in " ".join(out.split())
    (run,) = runs_in(tmp_path)
    assert run.info.status == "KILLED" and run.data.tags["stopped_by"] == ("SIGTERM" if how == "SIGTERM" else "SIGINT")
    assert {"checkpoint.pt", "resume.pt", "config.yaml"} <= {a.path for a in client_of(tmp_path).list_artifacts(run.info.run_id)}
    assert group_gone(proc.pid), "Ray processes outlived the driver"


def test_sigterm_ends_the_run_within_the_deadline_even_when_its_tracking_store_is_locked(tmp_path):
    """Another process holds the SQLite store locked (as a busy machine's other writer can, for
    seconds): every MLflow write then waits up to 20 s, and the orderly stop took a minute. The run
    ends within the stop deadline (10 s) and says it did not wait."""
    import sqlite3

    proc = subprocess.Popen(cli("run", str(SMOKE), *store(tmp_path), *LONG, "--workers", "0"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    db = None
    try:
        wait_for(tmp_path, "mlruns/**/checkpoint.pt", proc)
        db = sqlite3.connect(tmp_path / "mlflow.db", timeout=60, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(60)
        took = time.monotonic() - t0
        out, err = proc.communicate(timeout=30)
    finally:
        if db is not None:
            db.execute("ROLLBACK")
            db.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-2000:]
    assert 9 < took < 14, took  # the 10 s deadline (a minute before it)
    assert "terminated; stopping took over 10 s, so the process ended without waiting" in " ".join(out.split()), out[-2000:]
    assert group_gone(proc.pid, timeout=5)


def test_ctrl_c_in_compare_is_one_line_and_marks_the_parent_and_the_running_child_killed(tmp_path):
    terminal = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    args = ["compare", str(ROOT / "configs" / "compare_smoke.yaml"), "--budget-seconds", "120", *store(tmp_path), *LONG]
    proc = subprocess.Popen(cli(*args), cwd=tmp_path, preexec_fn=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        wait_for(tmp_path, "mlruns/**/checkpoint.pt", proc)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "Traceback" not in out, err[-2000:]
    assert "interrupted; the MLflow runs keep the metrics logged so far" in " ".join(out.split())
    runs = {r.data.tags.get("es_l2l.compare"): r for r in runs_in(tmp_path)}
    assert set(runs) == {"parent", "child"}  # stopped in the first child: the other arms never started
    assert runs["parent"].info.status == "KILLED" and runs["child"].info.status == "KILLED"
    assert group_gone(proc.pid), "Ray processes outlived the driver"


def test_an_error_after_the_run_exists_marks_it_failed_with_the_error_as_a_tag(tmp_path):
    """A real failure mid-run: the run's artifact folder is replaced by a file, so the next checkpoint cannot be written."""
    # the traceback then goes to a local file in the temp folder: this test's own, so that it does not stay behind
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen(cli("run", str(SMOKE), *store(tmp_path), *LONG, "--workers", "0"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ckpt = wait_for(tmp_path, "mlruns/**/artifacts/checkpoint.pt", proc)
        artifacts = ckpt.parent
        artifacts.rename(artifacts.with_name("artifacts.moved"))
        artifacts.write_text("not a folder")
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-3000:]
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and "error.txt" in err  # the traceback: here a local file (the artifact folder is broken)
    assert list(tmp_path.glob("es-l2l-*-error.txt")), err
    (run,) = runs_in(tmp_path)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].split(":")[0] in {"NotADirectoryError", "FileExistsError", "OSError"}, run.data.tags["error"]
    assert run.data.metrics["train/fitness_mean"]  # what was logged stays


# --- 2. fail before work ------------------------------------------------------------------------


def test_an_unreachable_tracking_server_fails_in_seconds_with_one_line_and_no_run(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    proc = es_l2l(tmp_path, "run", str(SMOKE), f"--set=tracking.uri=http://127.0.0.1:{port}", "--workers", "0", timeout=120)
    assert proc.returncode == 1 and one_line(proc), proc.stderr
    assert f"the MLflow tracking server at http://127.0.0.1:{port} does not answer" in proc.stderr
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_a_run_that_cannot_fit_in_memory_is_refused_with_the_numbers_before_any_run(tmp_path):
    proc = es_l2l(tmp_path, "run", str(SMOKE), *store(tmp_path), "--workers", "0", "--set=model.n_lif=4096",
                  "--set=model.n_alif=4096", "--set=es.popsize=256", timeout=300)
    assert proc.returncode == 1 and one_line(proc), proc.stderr
    assert "this run needs about" in proc.stderr and "GiB of memory but" in proc.stderr and "P=256" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "inf", "nan"])
def test_non_finite_floats_are_config_errors(tmp_path, value):
    proc = es_l2l(tmp_path, "run", str(SMOKE), *store(tmp_path), f"--set=es.stdev_init={value}", timeout=60)
    assert proc.returncode == 2 and one_line(proc), proc.stderr
    assert "'es.stdev_init'" in proc.stderr and "finite" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


# --- 7. small ones -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind, message", [("empty", "is empty"), ("dir", "is a directory"), ("binary", "not a text file"),
                                           ("nul", "binary file"), ("list", "must hold a mapping")])
def test_bad_config_files_exit_2_with_one_line(tmp_path, kind, message):
    path = tmp_path / "c.yaml"
    if kind == "empty":
        path.write_text("")
    elif kind == "dir":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "nul":
        path.write_bytes(b"name: x\x00\x00\n")
    else:
        path.write_text("- a\n- b\n")
    proc = es_l2l(tmp_path, "run", str(path), *store(tmp_path), timeout=60)
    assert proc.returncode == 2 and one_line(proc), proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("content", [b"random", b"text", b"pickle", b"dir"])
def test_evaluate_on_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, content):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    if content == b"random":
        path.write_bytes(os.urandom(10000))
    elif content == b"text":
        path.write_text("a text file\n")
    elif content == b"dir":
        path.mkdir()
    else:
        path.write_bytes(pickle.dumps(_Exec(f"touch {marker}")))
    proc = es_l2l(tmp_path, "evaluate", str(path), timeout=60)
    assert proc.returncode == 1 and one_line(proc), proc.stderr
    assert "not an es-l2l checkpoint" in proc.stderr
    assert not marker.exists()


class _Exec:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


@pytest.mark.parametrize("tasks", ["0", "-5"])
def test_evaluate_with_no_tasks_is_a_config_error(tmp_path, tasks):
    path = tmp_path / "checkpoint.pt"
    path.write_text("x")
    proc = es_l2l(tmp_path, "evaluate", str(path), "--tasks", tasks, timeout=60)
    assert proc.returncode == 2 and one_line(proc), proc.stderr
    assert "--tasks must be a positive number" in proc.stderr


def _es_run(tmp: Path, status: str, artifact: tuple[str, bytes] | None = None) -> str:
    client = client_of(tmp)
    exp = client.create_experiment("es-l2l", artifact_location=(tmp / "mlruns").as_uri())
    run = client.create_run(exp)
    client.log_param(run.info.run_id, "outer", "es")
    if artifact:
        name, data = artifact
        f = tmp / name
        f.write_bytes(data)
        client.log_artifact(run.info.run_id, str(f))
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_resume_of_a_finished_run_is_refused_in_one_line(tmp_path):
    run_id = _es_run(tmp_path, "FINISHED")
    proc = es_l2l(tmp_path, "run", "--resume", run_id, *store(tmp_path), timeout=60)
    assert proc.returncode == 1 and one_line(proc), proc.stderr
    assert f"MLflow run '{run_id}' is FINISHED" in proc.stderr


def test_resume_from_an_old_pickled_resume_file_is_refused_and_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    run_id = _es_run(tmp_path, "KILLED", ("resume.pkl", pickle.dumps(_Exec(f"touch {marker}"))))
    proc = es_l2l(tmp_path, "run", "--resume", run_id, *store(tmp_path), timeout=60)
    assert proc.returncode == 1 and one_line(proc), proc.stderr
    assert "written by an older version of es-l2l" in proc.stderr and "cannot be loaded safely" in proc.stderr
    assert not marker.exists()


def test_a_resume_pt_holding_code_is_refused_and_not_executed(tmp_path):
    import torch

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "es-l2l/resume/2", "json": "{}", "tensors": {}, "x": _Exec(f"touch {marker}")}, evil)
    run_id = _es_run(tmp_path, "KILLED", ("resume.pt", evil.read_bytes()))
    proc = es_l2l(tmp_path, "run", "--resume", run_id, *store(tmp_path), timeout=60)
    assert proc.returncode == 1 and one_line(proc), proc.stderr
    assert "is not an es-l2l resume file" in proc.stderr
    assert not marker.exists()


def test_two_first_runs_at_once_in_a_fresh_folder_both_succeed(tmp_path):
    """Both create mlflow.db, its tables and the experiment at the same moment (a file lock serialises them)."""
    args = ["run", str(SMOKE), "--workers", "0", "--set=run.generations=1", "--set=task.batch_size=2",
            "--set=run.validation_tasks=4", "--set=es.popsize=4"]
    procs = [subprocess.Popen(cli(*args), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("es-l2l")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}


def test_submit_without_a_tracking_store_is_refused_before_anything_is_submitted(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = es_l2l(tmp_path, "submit", str(SMOKE), "--address", "http://127.0.0.1:9", env=env, timeout=60)
    assert proc.returncode == 1 and one_line(proc), proc.stderr
    assert "es-l2l submit needs a tracking store the cluster can reach" in proc.stderr


def test_sigterm_reaches_a_run_whose_parent_blocked_it(tmp_path):
    """A parent that blocked SIGINT/SIGTERM (as a process running Ray's core does) passes the blocked
    mask on through exec; the CLI unblocks them, so kill still stops the run and marks it KILLED."""
    block = lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})  # noqa: E731
    proc = subprocess.Popen(cli("run", str(SMOKE), *store(tmp_path), *LONG, "--workers", "0"), cwd=tmp_path, preexec_fn=block,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(tmp_path, "mlruns/**/checkpoint.pt", proc)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143
    (run,) = runs_in(tmp_path)
    assert run.info.status == "KILLED"
