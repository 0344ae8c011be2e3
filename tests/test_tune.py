"""``es-l2l tune`` end to end on a real local Ray: one parent run, a child run per trial, the best config runs."""

import csv
import sys
from pathlib import Path

import pytest
import yaml

from es_l2l.config import ConfigError, load_config
from es_l2l.tune import bundles, resolve_tune
from tests.test_cli import es_l2l, runs_in, store

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TUNE_FILES = sorted(CONFIGS.glob("tune_*.yaml"))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    proc = es_l2l(tmp, "tune", str(CONFIGS / "tune_smoke.yaml"), "--trials", "3", "--out", "best.yaml", *store(tmp), timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tmp, proc


def test_tune_logs_one_parent_and_a_child_run_per_trial(tuned):
    tmp, proc = tuned
    client, runs = runs_in(tmp)
    parent = next(r for r in runs if r.data.tags.get("es_l2l.tune") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 4 and len(children) == 3 and all(r.data.tags["es_l2l.tune"] == "trial" for r in children)
    assert parent.info.status == "FINISHED" and {r.info.status for r in children} <= {"FINISHED", "KILLED"}
    assert sorted(r.data.tags["mlflow.runName"] for r in children) == [f"teacher-es-smoke trial {i}" for i in (1, 2, 3)]
    for r in children:  # the sampled values are the child's config params; the budget is the same for all
        assert r.data.params["es.popsize"] in ("16", "32") and 0.01 <= float(r.data.params["es.stdev_init"]) <= 0.3
        assert r.data.params["run.max_neuron_steps"] == "4000000" and r.data.params["run.workers"] == "1"
    stopped = [r for r in children if r.info.status == "KILLED"]
    assert all("ASHA" in r.data.tags["es_l2l.tune.stopped"] for r in stopped)
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.md", "trials.csv", "best.yaml", "tune.yaml"} <= names
    rows = list(csv.DictReader(Path(client.download_artifacts(parent.info.run_id, "trials.csv", str(tmp))).read_text().splitlines()))
    assert sorted(r["run_id"] for r in rows) == sorted(r.info.run_id for r in children)
    best = min(rows, key=lambda r: float(r["best_val"]))  # the teacher's objective is minimised
    assert parent.data.tags["best_run_id"] == best["run_id"]
    assert parent.data.params["best.es.popsize"] == best["es.popsize"]
    assert parent.data.metrics["val/best_trial/best_mse_late"] == pytest.approx(float(best["best_val"]))
    if best["test_score"]:  # the best trial's held-out score, in the held-out group (after val/ on the run page)
        assert parent.data.metrics["withheld/best_trial/score"] == pytest.approx(float(best["test_score"]))
    assert {k.split("/")[0] for k in parent.data.metrics} <= {"train", "val", "withheld"}, sorted(parent.data.metrics)
    assert "best config: best.yaml" in proc.stdout and parent.info.run_id in proc.stdout


def test_the_best_config_is_the_tuned_config_with_the_best_values_and_runs(tuned):
    tmp, _ = tuned
    client, runs = runs_in(tmp)
    parent = next(r for r in runs if r.data.tags.get("es_l2l.tune") == "parent")
    cfg = load_config(tmp / "best.yaml")
    assert cfg.es.popsize == int(parent.data.params["best.es.popsize"])
    assert cfg.es.stdev_init == pytest.approx(float(parent.data.params["best.es.stdev_init"]))
    assert cfg.run.max_neuron_steps is None and cfg.run.generations == 6  # the smoke config's own budget, not the trials'
    proc = es_l2l(tmp, "run", "best.yaml", "--set", "run.generations=1", "--workers", "0", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_random_search_runs_one_trial_at_a_time_as_concurrent_trials_says(tmp_path):
    """Tune ignored ``max_concurrent_trials`` for the random searcher (a ``BasicVariantGenerator`` passed in), so its
    trials ran as many at once as Ray had CPUs and a budget in seconds bought each trial half the steps."""
    proc = es_l2l(tmp_path, "tune", str(CONFIGS / "tune_smoke.yaml"), "--trials", "2", "--searcher", "random",
                  "--budget-neuron-steps", "2e6", "--set", "run.workers=0", *store(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, runs = runs_in(tmp_path)
    children = sorted((r for r in runs if r.data.tags.get("es_l2l.tune") == "trial"), key=lambda r: r.info.start_time)
    assert len(children) == 2 and all(r.info.end_time for r in children)  # ASHA may stop one (KILLED)
    assert children[0].info.end_time <= children[1].info.start_time, "the two trials overlapped in time"


@pytest.mark.parametrize("searcher", ["random", "optuna"])
def test_both_searchers_carry_the_concurrency_limit(searcher):
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher

    from es_l2l.tune import search_algorithm

    plan = resolve_tune(str(CONFIGS / "tune_smoke.yaml"), [])
    alg = search_algorithm(searcher, plan, "best_mse_late", "min", None)
    if isinstance(alg, BasicVariantGenerator):  # Tune does not limit this one for us
        assert alg.max_concurrent == plan.concurrent_trials == 1
    else:  # Tune wraps a Searcher in a ConcurrencyLimiter of max_concurrent_trials
        assert isinstance(alg, Searcher) and not isinstance(alg, ConcurrencyLimiter)


def test_without_optuna_the_search_falls_back_to_random_with_a_warning(monkeypatch):
    import io

    from rich.console import Console

    from es_l2l.tune import usable_searcher

    out = io.StringIO()
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    assert usable_searcher("optuna", Console(file=out, width=200)) == "random"
    assert "optuna is not installed (pip install optuna); searching at random instead" in out.getvalue()
    assert usable_searcher("random", Console(file=out, width=200)) == "random"


def test_an_unknown_key_in_the_space_is_one_line_and_exit_2(tmp_path):
    tree = yaml.safe_load((CONFIGS / "tune_smoke.yaml").read_text())
    tree["config"] = str(CONFIGS / "smoke.yaml")
    tree["space"]["es.popsze"] = {"choice": [16, 32]}
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(tree))
    proc = es_l2l(tmp_path, "tune", "tune.yaml", *store(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"config error: unknown config key 'es.popsze' in the search space of 'tune.yaml' "
                                   "(did you mean 'es.popsize'?); use a dotted key of teacher-es-smoke's config")
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("path", TUNE_FILES, ids=lambda p: p.name)
def test_every_shipped_tuning_file_resolves(path):
    plan = resolve_tune(str(path), [])
    assert plan.trials >= 1 and plan.space and plan.trial.run.generations == 10**9
    assert bundles(plan.trial)[0] == {"CPU": 1.0} and len(bundles(plan.trial)) == 1 + (plan.trial.run.workers if plan.trial.outer != "bptt" else 0)


@pytest.mark.parametrize("space, message", [
    ({"bptt.lr": {"loguniform": [0.001, 0.01]}}, "'bptt.lr' in the search space of '.*' does nothing for outer=es"),
    ({"run.seed": {"choice": [0, 1]}}, "'run.seed' .* must be equal across trials"),
    ({"es.popsize": {"choice": [33, 64]}}, "'es.popsize' .* 33 is not a valid value"),
    ({"es.stdev_init": {"loguniform": [0, 0.3]}}, "loguniform takes \\[low, high\\], low > 0"),
])
def test_the_space_is_checked_against_the_config(tmp_path, space, message):
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"config": str(CONFIGS / "smoke.yaml"), "budget_seconds": 1, "space": space}))
    with pytest.raises(ConfigError, match=message):
        resolve_tune(str(tmp_path / "t.yaml"), [])


# both run by .ci/run; Ctrl-C and SIGTERM of a run stay in the default run (tests/test_failures.py)
@pytest.mark.parametrize("how", [pytest.param("Ctrl-C", marks=pytest.mark.slow), pytest.param("SIGTERM", marks=pytest.mark.slow)])
def test_interrupted_tuning_ends_killed_with_its_trials_and_writes_no_best_config(tmp_path, how):
    """Ray Tune's own Ctrl-C handler used to end the search as if it had finished (exit 0, parent FINISHED, a best
    config from one trial), and SIGTERM aborted in Ray's C++ core (exit -6) leaving the parent and trial RUNNING."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.test_failures import group_gone, wait_for

    terminal = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    args = [sys.executable, "-m", "es_l2l.cli", "tune", str(CONFIGS / "tune_smoke.yaml"), "--trials", "3",
            "--budget-neuron-steps", "1e9", "--out", "best.yaml", *store(tmp_path)]  # trials long enough to be interrupted
    proc = subprocess.Popen(args, cwd=tmp_path, preexec_fn=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        wait_for(tmp_path, "mlruns/**/checkpoint.pt", proc, timeout=300)  # the first trial has validated once
        t0 = time.monotonic()
        if how == "SIGTERM":
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == (143 if how == "SIGTERM" else 130), err[-3000:]
    assert took < 20, took
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    verb = "terminated" if how == "SIGTERM" else "interrupted"
    assert f"{verb}; the MLflow runs keep the metrics logged so far; no best config written to best.yaml" in " ".join(out.split())
    assert not (tmp_path / "best.yaml").exists() and not list(tmp_path.glob("best.yaml*"))
    client, runs = runs_in(tmp_path)
    parent = next(r for r in runs if r.data.tags.get("es_l2l.tune") == "parent")
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "KILLED" and parent.data.tags["stopped_by"] == ("SIGTERM" if how == "SIGTERM" else "SIGINT")
    assert trials and {r.info.status for r in trials} == {"KILLED"}, [(r.info.run_id, r.info.status) for r in trials]
    assert "best_run_id" not in parent.data.tags and "best.yaml" not in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert group_gone(proc.pid), "Ray processes outlived the driver"
    print(f"{how}: {took:.1f} s from the signal to the exit")
