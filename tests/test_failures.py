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


@pytest.mark.parametrize("how, workers", [("SIGTERM", "0"), pytest.param("SIGTERM", "1", marks=pytest.mark.slow), ("Ctrl-C", "1")])  # SIGTERM with a worker: .ci/run
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


INTERRUPTED_WRITES = """
import os, pathlib, random, signal, sys, threading, time
from mlflow import MlflowClient
from mlflow.entities import Metric
from es_l2l.tracking.end_state import Terminated, sigterm_as_interrupt
from es_l2l.tracking.spool import Spool

tmp = pathlib.Path(sys.argv[1])
uri = f"sqlite:///{tmp / 'm.db'}"
client = MlflowClient(uri)
run = client.create_run(client.create_experiment("e")).info.run_id
spool, rng = Spool(run, uri, root=tmp / "spool"), random.Random(0)
for i in range(40):
    with sigterm_as_interrupt(deadline=3600):
        timer = threading.Timer(rng.uniform(0.0, 0.03), os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        try:
            while True:  # writes back to back: the signal lands inside one
                spool.send(client, "metrics", metrics=[Metric("x", 1.0, 0, i)])
                spool.send(client, "tag", key="k", value=str(i))
        except Terminated:
            pass
        timer.join()
        t0 = time.monotonic()
        reached = spool.send(client, "tag", key="stopped_by", value="SIGTERM")
        took = time.monotonic() - t0
        if not reached or took > 10:  # the bug waited 20 s (busy_timeout); a sound write takes milliseconds
            sys.exit(f"after interrupt {i} the next write took {took:.1f} s (reached the store: {reached})")
print("every write after an interrupt reached the store at once")
"""


def test_an_interrupt_inside_a_store_write_waits_for_the_write_so_the_killed_status_goes_out_at_once(tmp_path):
    """SIGTERM raised inside SQLAlchemy's handling of a write orphans a connection that keeps SQLite
    locked: the orderly stop's KILLED status then waited 20 s and failed ("database is locked"),
    past the stop deadline. Without the hold, this fails at the first or one of the first ten
    interrupts; with it, 40 interrupts each leave the next write immediate."""
    proc = subprocess.run([sys.executable, "-c", INTERRUPTED_WRITES, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-3000:]
    assert "every write after an interrupt reached the store at once" in proc.stdout


@pytest.mark.slow  # run by .ci/run; SIGTERM of a run stays in the default run (test_sigterm_or_ctrl_c_marks_the_run_killed...[SIGTERM-0])
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


@pytest.mark.slow  # run by .ci/run; Ctrl-C of a run stays in the default run (test_sigterm_or_ctrl_c_marks_the_run_killed...[Ctrl-C-1])
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


# three of five run by .ci/run only
@pytest.mark.parametrize("value", [pytest.param(".inf", marks=pytest.mark.slow), pytest.param("-.inf", marks=pytest.mark.slow), ".nan", "inf", pytest.param("nan", marks=pytest.mark.slow)])
def test_non_finite_floats_are_config_errors(tmp_path, value):
    proc = es_l2l(tmp_path, "run", str(SMOKE), *store(tmp_path), f"--set=es.stdev_init={value}", timeout=60)
    assert proc.returncode == 2 and one_line(proc), proc.stderr
    assert "'es.stdev_init'" in proc.stderr and "finite" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


# --- 7. small ones -----------------------------------------------------------------------------


# three of five run by .ci/run only
@pytest.mark.parametrize("kind, message", [("empty", "is empty"), pytest.param("dir", "is a directory", marks=pytest.mark.slow), ("binary", "not a text file"),
                                           pytest.param("nul", "binary file", marks=pytest.mark.slow), pytest.param("list", "must hold a mapping", marks=pytest.mark.slow)])
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


# two of four run by .ci/run only
@pytest.mark.parametrize("content", [b"random", pytest.param(b"text", marks=pytest.mark.slow), b"pickle", pytest.param(b"dir", marks=pytest.mark.slow)])
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


@pytest.mark.parametrize("tasks", ["0", pytest.param("-5", marks=pytest.mark.slow)])  # -5: run by .ci/run
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


@pytest.mark.slow  # run by .ci/run; a refused resume stays in the default run (a resume.pt holding code)
def test_resume_of_a_finished_run_is_refused_in_one_line(tmp_path):
    run_id = _es_run(tmp_path, "FINISHED")
    proc = es_l2l(tmp_path, "run", "--resume", run_id, *store(tmp_path), timeout=60)
    assert proc.returncode == 1 and one_line(proc), proc.stderr
    assert f"MLflow run '{run_id}' is FINISHED" in proc.stderr


@pytest.mark.slow  # run by .ci/run; a resume.pt holding code stays in the default run
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


@pytest.mark.slow  # run by .ci/run; a race of two processes on one store, 20-30 s
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


@pytest.mark.slow  # run by .ci/run; SIGTERM of a run stays in the default run
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


# --- every command that talks to MLflow: the same probe as `run`, one line in seconds -------------------------


class _Silent:
    """A listener on loopback that accepts connections and never answers (a hung server)."""

    def __init__(self):
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)  # kept open, never read or answered

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def _dead_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


@pytest.fixture
def foreign_http(tmp_path):
    """`python -m http.server` on loopback: an HTTP server that is not MLflow."""
    import socket

    port = _dead_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


# the silent server waits out its timeouts: deselected by make test, run by .ci/run (dead and not-mlflow stay)
@pytest.mark.parametrize("server", ["dead", pytest.param("silent", marks=pytest.mark.slow), pytest.param("not-mlflow", marks=pytest.mark.slow)])  # dead: the default run's case
def test_evaluate_resume_and_sync_name_a_dead_silent_or_foreign_server_in_one_line_within_seconds(tmp_path, server, request):
    """They used to take 249 s on a dead server (and hang past 900 s on a silent one; --resume then said "no MLflow
    run"), and a server that is not MLflow passed the probe and ended in a 50-line traceback."""
    silent = None
    if server == "dead":
        uri = f"http://127.0.0.1:{_dead_port()}"
    elif server == "silent":
        silent = _Silent()
        uri = f"http://127.0.0.1:{silent.port}"
    else:
        uri = request.getfixturevalue("foreign_http")
    spool = tmp_path / "spool" / "0123456789abcdef0123456789abcdef"
    spool.mkdir(parents=True)
    (spool / "meta.json").write_text('{"run_id": "0123456789abcdef0123456789abcdef", "tracking_uri": "%s"}' % uri)
    (spool / "metrics.jsonl").write_text('{"key": "train/x", "value": 1.0, "timestamp": 1, "step": 1}\n')
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    commands = {"evaluate": ["evaluate", "runs:/0123456789abcdef0123456789abcdef"],
                "resume": ["run", "--resume", "0123456789abcdef0123456789abcdef", f"--set=tracking.uri={uri}"],
                "sync": ["sync", str(spool)],
                "run": ["run", str(SMOKE), "--workers", "0", f"--set=tracking.uri={uri}"]}
    if server == "silent":  # the worst case, for the commands that make a parent run too
        commands["compare"] = ["compare", str(SMOKE), "--budget-seconds", "5", f"--set=tracking.uri={uri}"]
        commands["tune"] = ["tune", str(ROOT / "configs" / "tune_smoke.yaml"), f"--set=tracking.uri={uri}"]
    took = {}
    try:
        for name, args in commands.items():
            t0 = time.monotonic()
            proc = es_l2l(tmp_path, *args, timeout=120, env=env)
            took[name] = time.monotonic() - t0
            assert proc.returncode == 1 and one_line(proc), (name, proc.stderr[-3000:])
            if server == "not-mlflow":
                assert "is not an MLflow tracking server" in proc.stderr, (name, proc.stderr)
            else:
                assert "does not answer within 5 s" in proc.stderr, (name, proc.stderr)
            assert "no MLflow run" not in proc.stderr
    finally:
        if silent is not None:
            silent.close()
    print(f"{server}: seconds from the command to its one-line exit: " + ", ".join(f"{k} {v:.1f}" for k, v in took.items()))
    assert max(took.values()) < 75, took  # start-up (imports: 15-30 s on a loaded 2-core machine) + the 5 s probe; was 249 s and > 900 s
    assert (spool / "metrics.jsonl").exists()  # the spool is kept
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.slow  # run by .ci/run; the default run keeps sync's dead-server case (test_evaluate_resume_and_sync_name_a_dead_...[dead])
def test_sync_into_a_store_without_the_run_or_of_a_damaged_spool_is_one_line_and_keeps_the_spool(tmp_path):
    """Both used to print a 34-line traceback."""
    client = client_of(tmp_path)
    exp = client.create_experiment("es-l2l", artifact_location=(tmp_path / "mlruns").as_uri())
    run_id = client.create_run(exp).info.run_id
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    missing = tmp_path / "spool" / ("f" * 32)
    damaged_meta = tmp_path / "spool" / "damaged-meta"
    damaged_rows = tmp_path / "spool" / run_id
    for folder, meta in ((missing, '{"run_id": "%s", "tracking_uri": "%s"}' % ("f" * 32, uri)), (damaged_meta, "{not json"),
                         (damaged_rows, '{"run_id": "%s", "tracking_uri": "%s"}' % (run_id, uri))):
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text(meta)
        (folder / "metrics.jsonl").write_text('{"key": "train/x", "step": 1}\n' if folder == damaged_rows else
                                              '{"key": "train/x", "value": 1.0, "timestamp": 1, "step": 1}\n')
    expected = {missing: f"no MLflow run '{'f' * 32}'", damaged_meta: "meta.json is damaged (JSONDecodeError)",
                damaged_rows: "could not upload the spool"}
    for folder, message in expected.items():
        proc = es_l2l(tmp_path, "sync", str(folder), timeout=120)
        assert proc.returncode == 1 and one_line(proc), proc.stderr[-3000:]
        assert message in proc.stderr and "is kept" in proc.stderr, proc.stderr
        assert (folder / "metrics.jsonl").exists()


@pytest.mark.slow  # run by .ci/run; a refused resume stays in the default run (a resume.pt holding code)
def test_resume_of_a_run_not_in_the_store_says_so_in_one_line(tmp_path):
    client_of(tmp_path).create_experiment("es-l2l")
    proc = es_l2l(tmp_path, "run", "--resume", "f" * 32, *store(tmp_path), timeout=120)
    assert proc.returncode == 1 and one_line(proc), proc.stderr
    assert f"no MLflow run '{'f' * 32}' at sqlite:///" in proc.stderr


# --- one driver per run -----------------------------------------------------------------------------------------


@pytest.mark.slow  # 25-50 s through real services; .ci/run runs it
def test_a_running_run_is_not_resumed_twice_and_a_killed_one_by_one_resumer_only(tmp_path):
    """Two --resume of the same run used to both proceed and log every step twice."""
    from es_l2l.tracking.checkpoint import load_resume

    driver = subprocess.Popen(cli("run", str(SMOKE), *store(tmp_path), *LONG, "--workers", "0"), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(tmp_path, "mlruns/**/resume.pt", driver)
        (run,) = runs_in(tmp_path)
        run_id = run.info.run_id
        alive = es_l2l(tmp_path, "run", "--resume", run_id, *store(tmp_path), timeout=120)  # its driver trains on
        assert alive.returncode == 1 and one_line(alive), alive.stderr
        assert f"MLflow run '{run_id}' is still RUNNING: its driver (PID {driver.pid} on this machine) is alive" in alive.stderr
        assert driver.poll() is None
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    saved = client_of(tmp_path).download_artifacts(run_id, "resume.pt", str(tmp_path))
    gens = load_resume(saved)["generation"] + 4
    args = cli("run", "--resume", run_id, *store(tmp_path), f"--set=run.generations={gens}")
    twins = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in twins]
    codes = sorted(p.returncode for p in twins)
    assert codes == [0, 1], [err[-2000:] for _, err in outs]
    refused = next(err for p, (_, err) in zip(twins, outs) if p.returncode == 1)
    assert len(refused.strip().splitlines()) == 1 and f"MLflow run '{run_id}'" in refused, refused
    assert "still RUNNING" in refused or "being resumed or run by another process" in refused, refused
    client = client_of(tmp_path)
    logged = [m.step for m in client.get_metric_history(run_id, "train/fitness_mean")]
    assert sorted(logged) == list(range(1, gens + 1)), logged  # every step once
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.slow  # run by .ci/run; resume through the CLI stays in the default run
def test_a_run_running_on_another_machine_needs_force_to_resume(tmp_path):
    client = client_of(tmp_path)
    exp = client.create_experiment("es-l2l", artifact_location=(tmp_path / "mlruns").as_uri())
    run_id = client.create_run(exp, tags={"es_l2l.driver": "gpu-node-7 4242"}).info.run_id
    client.log_param(run_id, "outer", "es")
    proc = es_l2l(tmp_path, "run", "--resume", run_id, *store(tmp_path), timeout=120)
    assert proc.returncode == 1 and one_line(proc), proc.stderr
    assert (f"MLflow run '{run_id}' is RUNNING, driven by PID 4242 on gpu-node-7, which this machine cannot check; if that "
            "driver is really dead (host down, process killed), resume with --force") in proc.stderr
    forced = es_l2l(tmp_path, "run", "--resume", run_id, "--force", *store(tmp_path), timeout=120)
    assert forced.returncode == 1 and "has no resume.pt yet" in forced.stderr, forced.stderr  # past the check


@pytest.mark.slow  # 25-50 s through real services; .ci/run runs it
def test_evaluate_leaves_no_temporary_folder(tmp_path):
    proc = es_l2l(tmp_path, "run", str(SMOKE), "--workers", "0", "--set=run.generations=1", "--set=task.batch_size=2",
                  "--set=run.validation_tasks=4", "--set=es.popsize=4", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = runs_in(tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    for target in (f"runs:/{run.info.run_id}", f"runs:/{'f' * 32}"):  # a good evaluation, then a failed one
        proc = es_l2l(tmp_path, "evaluate", target, "--tasks", "2", timeout=300, env=dict(os.environ, TMPDIR=str(tmp)))
        assert proc.returncode == (0 if target.endswith(run.info.run_id) else 1), proc.stderr[-3000:]
        left = [p for p in tmp.iterdir() if not p.name.startswith("torchinductor_")]  # torch's own compile cache stays
        assert left == [], left
