"""Resume: the searcher's whole state is checkpointed, and a resumed run ends exactly where an
uninterrupted one does, also when the driver process is killed for real."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from es_l2l.tracking.checkpoint import load_checkpoint, load_resume, save_resume
from es_l2l.config import load_config
from es_l2l.cluster.evaluators import LocalEvaluator
from es_l2l.genome import build_genome
from es_l2l.outer.driver import drive
from es_l2l.families.teacher.tasks import n_inputs

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"


@pytest.mark.parametrize("algorithm", ["pgpe", "pgpe+adam", "snes", "cem", "cmaes"])
def test_resuming_from_any_checkpoint_reproduces_the_uninterrupted_run(algorithm, tmp_path):
    algorithm, _, optimizer = algorithm.partition("+")
    cfg = load_config(SMOKE, ["run.workers=0", "run.generations=7", "run.checkpoint_every=2", "run.validate_every=3",
                              f"es.algorithm={algorithm}", "task.batch_size=4", "run.validation_tasks=16",
                              *([f"es.optimizer={optimizer}"] if optimizer else [])])
    genome = build_genome(cfg, n_inputs(cfg.task))
    states = {}
    full = drive(cfg, genome, LocalEvaluator(cfg, genome), [lambda s: states.update({s["generation"]: s.get("resume_state")})])
    saved = {g: s for g, s in states.items() if s is not None}
    assert sorted(saved) == [2, 4, 6]
    # Generation 4 carries the best genome found at the validation of generation 3.
    for gen in (2, 4):
        seen = []
        # through the file: tensors + JSON, loaded with weights_only (no pickle)
        state = load_resume(save_resume(tmp_path / f"resume{gen}.pt", cfg, saved[gen]))
        resumed = drive(cfg, genome, LocalEvaluator(cfg, genome), [seen.append], resume=state)
        assert [s["generation"] for s in seen] == list(range(gen + 1, 8))
        assert torch.equal(resumed.final, full.final) and torch.equal(resumed.best, full.best)
        assert resumed.best_generation == full.best_generation
        assert [s["fitness_mean"] for s in seen] == [h["fitness_mean"] for h in full.history[gen + 1 :]]


def _cli(*args):
    return [sys.executable, "-m", "es_l2l.cli", *args]


def _wait_for(path_glob, root: Path, timeout: float, proc) -> Path:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = sorted(root.glob(path_glob))
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise TimeoutError(path_glob)


@pytest.mark.slow  # run by .ci/run; resume stays in the default run (test_resuming_from_any_checkpoint_reproduces_the_uninterrupted_run, and a killed driver resumed in tests/test_failures.py)
def test_a_killed_driver_resumes_and_ends_with_the_uninterrupted_genome(tmp_path):
    store = [f"--set=tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"--set=tracking.artifact_root={tmp_path / 'mlruns'}"]
    sets = ["--set=run.workers=0", "--set=run.generations=100", "--set=run.checkpoint_every=10",
            "--set=run.validate_every=100", "--set=task.batch_size=4", "--set=run.validation_tasks=16"]
    driver = subprocess.Popen(_cli("run", str(SMOKE), *store, *sets), cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        resume_file = _wait_for("mlruns/**/resume.pt", tmp_path, 240, driver)
        time.sleep(0.3)  # let the artifact copy complete, then kill the driver without warning
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    checkpointed = load_resume(resume_file)["generation"]
    assert driver.returncode == -signal.SIGKILL and 10 <= checkpointed < 100
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "RUNNING"  # died without a word

    resumed = subprocess.run(_cli("run", "--resume", run.info.run_id, *store, "--set=run.workers=0"), cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed after generation {checkpointed}" in " ".join(resumed.stdout.split())
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED"
    steps = {m.step for m in client.get_metric_history(run.info.run_id, "train/fitness_mean")}
    assert steps == set(range(1, 101))  # one MLflow run, every generation logged
    path = client.download_artifacts(run.info.run_id, "checkpoint.pt", str(tmp_path))
    cfg, genome, genomes, _ = load_checkpoint(path)
    reference = drive(cfg, genome, LocalEvaluator(cfg, genome))
    assert torch.equal(genomes["final"], reference.final)
    assert torch.equal(genomes["best"], reference.best)
