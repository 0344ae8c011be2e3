"""ES on a real multi-node Ray cluster on one machine (tests/loopback_cluster.py: a head without
CPUs and one-CPU worker nodes, every address on 127.0.0.1), through the real CLI with a SQLite
MLflow store: actors across three nodes, a node lost and a node added mid-run, a straggler, the
whole cluster lost and the run resumed. Every disturbed run ends with the numbers of an
undisturbed one (``--workers 0``, no Ray), bit for bit.

Marked ``multinode`` (deselected by default: minutes on a loaded 2-core machine, most of it
starting Ray nodes); run them with ``pytest -m multinode tests/test_multinode.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.loopback_cluster import LoopbackCluster
from tests.test_failures import wait_for

pytestmark = pytest.mark.multinode

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
# Each node's actor sleeps this long before each evaluation (ES_L2L_SLOW_WORKER_S in the node's
# environment): generations long enough to act on mid-run, and little CPU taken from the machine.
PACE_S = "0.3"
RUN = ["--set=run.threads=1", "--set=run.generations=40", "--set=run.validate_every=20", "--set=run.checkpoint_every=2",
       "--set=task.batch_size=4", "--set=run.validation_tasks=8"]
# long enough for a node to join mid-run (starting a node takes 20-30 s on the loaded test machine)
LONG = [*RUN, "--set=run.generations=150", "--set=run.validate_every=50"]
NOISY = ("elapsed", "wall_s", "seconds_per_generation", "neuron_steps_per_s")  # clocks, not numbers


def store(tmp: Path) -> list[str]:
    return [f"--set=tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"--set=tracking.artifact_root={tmp / 'mlruns'}"]


def start(tmp: Path, *args: str, env=None) -> subprocess.Popen:
    tmp.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "es_l2l.cli", "run", *args, *store(tmp)], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def the_run(tmp: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return client, run


def numbers(tmp: Path) -> dict:
    """What a run computed: its final and best genomes and every metric's history, clocks left out."""
    from es_l2l.tracking.checkpoint import load_checkpoint

    client, run = the_run(tmp)
    genomes = load_checkpoint(client.download_artifacts(run.info.run_id, "checkpoint.pt", str(tmp)))[2]
    metrics = {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)]
               for k in run.data.metrics if not k.startswith("system/") and not any(n in k for n in NOISY)}
    return {"final": genomes["final"], "best": genomes["best"], "metrics": metrics}


def assert_same(a: dict, b: dict, generations: int = 40) -> None:
    assert torch.equal(a["final"], b["final"]) and torch.equal(a["best"], b["best"])
    assert a["metrics"].keys() == b["metrics"].keys()
    differ = [k for k in a["metrics"] if a["metrics"][k] != b["metrics"][k]]
    assert not differ, differ
    assert [s for s, _ in a["metrics"]["train/fitness_mean"]] == list(range(1, generations + 1))  # each generation once


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The undisturbed numbers, evaluated in the driver without Ray."""
    tmp = tmp_path_factory.mktemp("reference")
    code, out, err = finish(start(tmp, str(SMOKE), "--workers", "0", *RUN))
    assert code == 0, err[-3000:]
    return numbers(tmp)


@pytest.fixture(scope="module")
def reference_long(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("reference_long")
    code, out, err = finish(start(tmp, str(SMOKE), "--workers", "0", *LONG))
    assert code == 0, err[-3000:]
    return numbers(tmp)


@pytest.fixture(scope="module")
def cluster():
    import ray

    if ray.is_initialized():  # one Ray in this process at a time
        ray.shutdown()
    c = LoopbackCluster()
    try:
        c.start_head()
        c.add_nodes("n1", "n2", "n3", env={"ES_L2L_SLOW_WORKER_S": PACE_S})
        yield c
    finally:
        c.stop()


def attach(cluster: LoopbackCluster, workers: int) -> list[str]:
    return [str(SMOKE), "--address", cluster.address, "--workers", str(workers), *RUN]


def test_actors_on_three_nodes_give_the_numbers_of_one_process_and_listen_on_loopback_only(cluster, reference, tmp_path):
    proc = start(tmp_path, *attach(cluster, 3), env=cluster.env)
    seen: dict[str, set[int]] = {name: set() for name in ("n1", "n2", "n3")}
    listeners = []
    while proc.poll() is None:
        for name in seen:
            seen[name] |= {p.pid for p in cluster.nodes[name].actors()}
        listeners += cluster.non_loopback_listeners()
        time.sleep(0.5)
    code, _, err = finish(proc)
    assert code == 0, err[-3000:]
    assert all(len(pids) == 1 for pids in seen.values()), seen  # one actor on each of the three nodes
    assert not listeners, listeners
    assert_same(numbers(tmp_path), reference)


def test_a_node_lost_then_a_node_added_mid_run_and_the_numbers_do_not_change(cluster, reference_long, tmp_path):
    proc = start(tmp_path, *attach(cluster, 3)[:-len(RUN)], *LONG, env=cluster.env)
    wait_for(tmp_path, "mlruns/**/checkpoint.pt", proc, timeout=300)  # generation 2 done: mid-run
    killed = time.monotonic()
    cluster.remove_node("n3")  # SIGKILL its raylet, object store and actor at once; no spare CPU anywhere
    cluster.add_nodes("n4", env={"ES_L2L_SLOW_WORKER_S": PACE_S})  # joins while the run goes on with two
    joined = time.monotonic()
    used = None
    while proc.poll() is None and used is None:
        actors = cluster.nodes["n4"].actors()
        if any(p.cpu_times().user > 1.0 for p in actors):  # started, and evaluating
            used = time.monotonic()
        time.sleep(0.2)
    code, out, err = finish(proc)
    ended = time.monotonic()
    assert code == 0, err[-3000:]
    lost = [line for line in err.splitlines() if "evaluation worker lost" in line]
    added = [line for line in err.splitlines() if "evaluation worker added; 3 of 3" in line]
    assert len(lost) == 1 and "2 left, its share sent again" in lost[0], err[-3000:]
    assert len(added) == 1 and used is not None, err[-3000:]
    assert_same(numbers(tmp_path), reference_long, generations=150)
    print(f"\nnode lost -> run FINISHED: {ended - killed:.1f} s; node joined -> its actor evaluating: "
          f"{used - joined:.1f} s")


def test_a_straggler_share_is_sent_again_and_the_numbers_do_not_change(cluster, reference, tmp_path):
    cluster.remove_node("n4")
    cluster.add_nodes("slow", env={"ES_L2L_SLOW_WORKER_S": "4"})  # alive, but 13x slower than the others
    code, _, err = finish(start(tmp_path, *attach(cluster, 3), env=cluster.env))
    assert code == 0, err[-3000:]
    resent = [line for line in err.splitlines() if "sent again to an idle worker" in line]
    assert resent, err[-3000:]
    assert_same(numbers(tmp_path), reference)
    # waiting for the slow node would take at least 40 x 4 s; re-sending its share keeps the
    # generations near the fast nodes' pace (0.3 s, and a re-send costs about 1.5 s)
    client, run = the_run(tmp_path)
    wall = [m.value for m in client.get_metric_history(run.info.run_id, "train/wall_s")]
    assert wall[-1] - wall[0] < 80, wall
    print(f"\n40 generations with a straggler node: {wall[-1] - wall[0]:.1f} s, {len(resent)} shares re-sent")


def test_more_workers_than_the_cluster_has_cpus_is_one_line_and_no_run(cluster, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "es_l2l.cli", "run", *attach(cluster, 5), *store(tmp_path)],
                          cwd=tmp_path, env=cluster.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]  # bad input: more than the cluster has, no run
    assert f"need 5 CPUs but the Ray cluster at '{cluster.address}' has 3" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_the_whole_cluster_lost_fails_the_run_in_one_line_and_resume_ends_with_the_same_numbers(cluster, reference, tmp_path):
    proc = start(tmp_path, *attach(cluster, 3), env=cluster.env)
    wait_for(tmp_path, "mlruns/**/resume.pt", proc, timeout=300)
    wait_for(tmp_path, "mlruns/**/checkpoint.pt", proc, timeout=300)
    lost = time.monotonic()
    for name in list(cluster.nodes):  # every node at once, the head last
        cluster.nodes[name].kill()
    code, out, err = finish(proc, timeout=180)
    took = time.monotonic() - lost
    assert code == 1, err[-3000:]
    errors = [line for line in err.strip().splitlines() if not line.startswith("es-l2l: ")]  # not the pool's notes
    assert len(errors) == 1 and errors[0].startswith("error: lost the Ray cluster: its head at"), err[-3000:]
    assert "es-l2l run --resume RUN_ID" in errors[0], err
    client, run = the_run(tmp_path)
    assert run.info.status == "FAILED", run.info.status
    assert {"resume.pt", "checkpoint.pt"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    print(f"\nwhole cluster lost -> run FAILED: {took:.1f} s")
    # the cluster is back (here: a local Ray, as a new cluster would be): the same run continues
    resumed = subprocess.run([sys.executable, "-m", "es_l2l.cli", "run", "--resume", run.info.run_id, *store(tmp_path),
                              "--set=run.address=null", "--workers", "2"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same(numbers(tmp_path), reference)
