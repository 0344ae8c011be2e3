"""Chaos run: an ES run on Ray, tracked by a real MLflow server, is disturbed on purpose, and must end
exactly where an undisturbed run ends.

Disturbances (triggered by the generations the server has seen, so they land mid-run on any machine):

* SIGKILL a random Ray evaluation worker, twice per driver lifetime (each actor may restart 3 times);
* stop the MLflow server (its whole process group) and start it again on the same port and store;
* SIGKILL the driver once, after a ``resume.pt`` exists, then ``es-l2l run --resume RUN_ID``.

Then: the chaos run is FINISHED, its final and best genomes equal the undisturbed run's bit for bit,
and every metric history (all but wall-clock timings) equals the undisturbed run's, each step once.

    python benchmarks/chaos.py [--generations 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
BIN = Path(sys.executable).parent
TIMING = ("train/elapsed_s", "train/wall_s", "train/seconds_per_generation", "train/neuron_steps_per_s")  # MLflow keys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` on loopback in its own process group; stop() and start() keep port and store."""

    def __init__(self, root: Path):
        self.root, self.port, self.proc = root, free_port(), None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}", "--serve-artifacts",
             "--artifacts-destination", (self.root / "artifacts").as_uri()],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError("mlflow server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


def run_args(uri: str, experiment: str, generations: int) -> list[str]:
    return [sys.executable, "-m", "es_l2l.cli", "run", str(SMOKE), "--workers", "2", f"--set=tracking.uri={uri}",
            f"--set=tracking.experiment={experiment}", f"--set=run.generations={generations}",
            "--set=run.validate_every=10", "--set=run.checkpoint_every=5", "--set=run.validation_tasks=16"]
    # task.batch_size stays at the smoke config's 16: a generation must take long enough that the run is
    # still going when the restarted server answers again (~15 s to start, then up to 10 s until the retry)


class Proc:
    def __init__(self, pid: int):
        self.pid = pid

    def send_signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc: parent ids)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out.extend(kids)
        frontier.extend(kids)
    return out


def ray_workers(driver_pid: int) -> list[Proc]:
    """The driver's Ray evaluation actors (processes titled ``ray::_Worker...``)."""
    out = []
    for pid in _children(driver_pid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode("utf-8", "replace")
        except OSError:
            continue
        if title.startswith("ray::_Worker"):
            out.append(Proc(pid))
    return out


def metric_history(client, run_id: str, key: str) -> list:
    from es_l2l.tracking.metric_keys import history

    return history(client, run_id, key)


def metric_histories(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    from es_l2l.tracking.metric_keys import grouped

    run = client.get_run(run_id)
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        for key in run.data.metrics
        if grouped(key) not in TIMING and not key.startswith("system/")  # machine load, not results (either naming)
    }


def the_run(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return runs[0] if runs else None


def logged_steps(client, run_id: str) -> int:
    try:
        return len(metric_history(client, run_id, "train/fitness_mean"))
    except Exception:  # the server is down right now
        return -1


def chaos(root: Path, generations: int = 300, seed: int = 0, say=print) -> dict:
    """Run the undisturbed reference and the chaos run; returns what happened and the comparison."""
    import torch
    from mlflow.tracking import MlflowClient

    from es_l2l.tracking.checkpoint import load_checkpoint

    rng = random.Random(seed)
    server = Server(root / "server")
    server.start()
    client = MlflowClient(tracking_uri=server.uri)
    events: list[str] = []
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        say("reference run (undisturbed)")
        ref = subprocess.run(run_args(server.uri, "reference", generations), cwd=root, capture_output=True, text=True,
                             timeout=1800)
        (logs / "reference.err").write_text(ref.stderr)
        assert ref.returncode == 0, ref.stderr[-3000:]
        ref_run = the_run(client, "reference")

        say("chaos run")
        work = root / "chaos"
        work.mkdir(exist_ok=True)
        env = dict(os.environ, ES_L2L_SPOOL_RETRY_S="2")  # retry the server every 2 s (default 10)
        driver = subprocess.Popen(run_args(server.uri, "chaos", generations), cwd=work, stdout=subprocess.DEVNULL,
                                  stderr=open(logs / "chaos-1.err", "w"), env=env)
        run_id = None
        plan = [("kill_worker", 5), ("kill_worker", 10), ("restart_server", 15), ("kill_driver", 25)]
        end = time.monotonic() + 1800
        while plan and time.monotonic() < end and driver.poll() is None:
            if run_id is None:
                run = the_run(client, "chaos")
                run_id = run.info.run_id if run else None
                time.sleep(0.2)
                continue
            step = logged_steps(client, run_id)
            what, at = plan[0]
            if step < at:
                time.sleep(0.2)
                continue
            if what == "kill_worker":
                workers = ray_workers(driver.pid)
                if not workers:
                    time.sleep(0.2)
                    continue
                victim = rng.choice(workers)
                victim.send_signal(signal.SIGKILL)
                events.append(f"SIGKILL Ray worker {victim.pid} at generation ~{step}")
            elif what == "restart_server":
                server.stop()
                events.append(f"MLflow server stopped at generation ~{step}")
                time.sleep(3)
                server.start()
                events.append(f"MLflow server back at generation ~{logged_steps(client, run_id)}")
            elif what == "kill_driver":
                names = {a.path for a in client.list_artifacts(run_id)}
                if "resume.pt" not in names:
                    time.sleep(0.2)
                    continue
                driver.send_signal(signal.SIGKILL)
                driver.wait(60)
                events.append(f"SIGKILL driver at generation ~{step}")
            plan.pop(0)
            say(f"  {events[-1]}")
        if plan:
            driver.kill()
            raise RuntimeError(f"the chaos run ended before these disturbances: {plan}; raise --generations")
        for _ in range(20):  # Ray's processes of the killed driver exit once their owner is gone
            if not ray_workers(driver.pid):
                break
            time.sleep(0.5)

        resumed = subprocess.Popen(
            [sys.executable, "-m", "es_l2l.cli", "run", "--resume", run_id, f"--set=tracking.uri={server.uri}"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=open(logs / "chaos-2.err", "w"), env=env,
        )
        start_steps = None
        plan = [("kill_worker", 5), ("kill_worker", 10)]
        while plan and resumed.poll() is None:
            step = logged_steps(client, run_id)
            if start_steps is None:
                start_steps = step
            if step - start_steps < plan[0][1] or not ray_workers(resumed.pid):
                time.sleep(0.2)
                continue
            victim = rng.choice(ray_workers(resumed.pid))
            victim.send_signal(signal.SIGKILL)
            events.append(f"SIGKILL Ray worker {victim.pid} of the resumed driver at generation ~{step}")
            say(f"  {events[-1]}")
            plan.pop(0)
        resumed.wait(1800)
        assert resumed.returncode == 0, (logs / "chaos-2.err").read_text()[-3000:]

        a = load_checkpoint(client.download_artifacts(ref_run.info.run_id, "checkpoint.pt", str(root / "ref")))[2]
        b = load_checkpoint(client.download_artifacts(run_id, "checkpoint.pt", str(root / "chaos-dl")))[2]
        ref_hist, chaos_hist = metric_histories(client, ref_run.info.run_id), metric_histories(client, run_id)
        differing = sorted(k for k in set(ref_hist) | set(chaos_hist) if ref_hist.get(k) != chaos_hist.get(k))
        duplicates = sorted(k for k, h in chaos_hist.items() if len({s for s, _ in h}) != len(h))
        out = {
            "events": events,
            "missed": [p[0] for p in plan],
            "status": client.get_run(run_id).info.status,
            "final_equal": bool(torch.equal(a["final"], b["final"])),
            "best_equal": bool(torch.equal(a["best"], b["best"])),
            "metrics_compared": len(ref_hist),
            "metrics_differing": differing,
            "metrics_with_duplicate_steps": duplicates,
            "spool_left": any((work / ".es_l2l_spool").glob("*")) if (work / ".es_l2l_spool").exists() else False,
        }
        out["ok"] = (out["status"] == "FINISHED" and out["final_equal"] and out["best_equal"] and not differing
                     and not duplicates and not out["missed"] and not out["spool_left"])
        return out
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generations", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0, help="which workers the chaos picks")
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder)")
    args = ap.parse_args()
    if args.keep:
        root = Path(args.keep)
        root.mkdir(parents=True, exist_ok=True)
        report = chaos(root.resolve(), args.generations, args.seed)
    else:
        with tempfile.TemporaryDirectory(prefix="es-l2l-chaos-") as tmp:
            report = chaos(Path(tmp), args.generations, args.seed)
    text = json.dumps(report, indent=2)
    print(text)
    if args.keep:
        (Path(args.keep) / "report.json").write_text(text)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
