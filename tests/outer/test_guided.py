"""Guided ES (Maheswaranathan et al. 2019): the update against a hand computation, the sampling
covariance, worker-count invariance on real Ray, exact resume, learning, the NaN fallback and bad
input, and the real CLI (run and compare)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from es_l2l.tracking.checkpoint import load_resume, save_resume
from es_l2l.config import load_config
from es_l2l.cluster.evaluators import ClusterError, LocalEvaluator, RayEvaluator
from es_l2l.genome import build_genome
from es_l2l.outer.driver import drive
from es_l2l.outer.guided import GuidedConfig, GuidedSearch, subspace
from es_l2l.schema import ConfigError
from es_l2l.seeds import STREAM_SEARCH, derive_seed
from tests.families import test_plugin_family as plugin

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke_guided.yaml"


def tiny(*sets):
    return load_config(SMOKE, ["task.batch_size=4", "run.validation_tasks=16", *sets])


# --- the mathematics ---------------------------------------------------------------------------


def _hand_directions(seed, generation, pairs, basis, stdev, alpha):
    """eps_i = sigma (sqrt(alpha/D) n1 + sqrt((1-alpha)/k) U n2), sigma = stdev sqrt(D), in float64."""
    dim, k = basis.shape
    sigma = stdev * math.sqrt(dim)
    out = []
    for i in range(pairs):
        gen = torch.Generator().manual_seed(derive_seed(seed, STREAM_SEARCH, generation, i))
        n1 = torch.randn(dim, generator=gen).double().numpy()
        n2 = torch.randn(k, generator=gen).double().numpy()
        out.append(sigma * (math.sqrt(alpha / dim) * n1 + math.sqrt((1 - alpha) / k) * basis @ n2))
    return np.stack(out)


def _gram_schmidt(vectors):
    basis = []
    for v in vectors:
        v = v.astype(np.float64).copy()
        for u in basis:
            v -= (v @ u) * u
        basis.append(v / np.linalg.norm(v))
    return np.stack(basis, axis=1)


@pytest.mark.parametrize("optimizer", ["sgd", "clipup"])
def test_the_guided_update_equals_a_hand_computed_one(optimizer):
    dim, seed, generation, lr = 5, 11, 3, 0.05
    cfg = GuidedConfig(popsize=6, stdev=0.1, alpha=0.3, k=2, beta=2.0, lr=lr, optimizer=optimizer)
    x = torch.tensor([0.5, -1.0, 0.25, 2.0, 0.0])
    grads = [torch.tensor([1.0, 2.0, 0.0, -1.0, 0.5]), torch.tensor([0.0, 1.0, 1.0, 0.0, -2.0]), torch.tensor([3.0, 0.0, 0.0, 1.0, 1.0])]
    search = GuidedSearch(cfg, x, seed)
    for g in grads:
        assert search.observe(g)
    basis = _gram_schmidt([g.numpy() for g in grads[1:]])  # k = 2: the last two gradients span U
    assert np.allclose(subspace(search.history).numpy(), basis, atol=1e-6)
    recipe = search.recipe(generation)
    eps = _hand_directions(seed, generation, 3, basis, 0.1, 0.3)
    members = recipe.rows(0, 6).double().numpy()
    assert np.allclose(members[0::2], x.numpy() + eps, atol=1e-5) and np.allclose(members[1::2], x.numpy() - eps, atol=1e-5)
    # Fitnesses 3, 1, -2, 5, 0, 4: centered ranks 0.1, -0.1, -0.5, 0.5, -0.3, 0.3; pair differences 0.2, -1, -0.6.
    fitness = torch.tensor([3.0, 1.0, -2.0, 5.0, 0.0, 4.0])
    g = 2.0 / (2 * 0.1**2 * dim * 3) * (0.2 * eps[0] - 1.0 * eps[1] - 0.6 * eps[2])
    search.tell(recipe.directions(range(3)), fitness)
    step = lr * g if optimizer == "sgd" else lr * g / np.linalg.norm(g)  # ClipUp from rest: lr along g (below 2 lr)
    assert np.allclose(search.centre.numpy(), x.numpy() + step, atol=1e-6)
    assert not np.allclose(step, 0)


def test_the_perturbations_covariance_is_the_guided_one():
    dim, k, alpha, stdev, n = 6, 2, 0.4, 0.5, 20000
    cfg = GuidedConfig(popsize=2, stdev=stdev, alpha=alpha, k=k)
    search = GuidedSearch(cfg, torch.zeros(dim), seed=0)
    search.observe(torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0]))
    search.observe(torch.tensor([0.0, 1.0, -1.0, 2.0, 0.0, 0.0]))
    recipe = search.recipe(1)
    eps = recipe.directions(range(n)).double()
    u = torch.from_numpy(recipe.basis).double()
    sigma2 = stdev**2 * dim
    expected = sigma2 * (alpha / dim * torch.eye(dim) + (1 - alpha) / k * u @ u.T)
    empirical = eps.T @ eps / n
    # standard error of a covariance entry: sqrt((S_ii S_jj + S_ij^2) / n)
    se = ((torch.diagonal(expected)[:, None] * torch.diagonal(expected)[None, :] + expected**2) / n).sqrt()
    assert ((empirical - expected).abs() < 4.5 * se).all(), (empirical - expected) / se
    # along the subspace the variance is sigma^2 (alpha/D + (1-alpha)/k); across it sigma^2 alpha/D
    assert float(u[:, 0] @ empirical @ u[:, 0]) == pytest.approx(sigma2 * (alpha / dim + (1 - alpha) / k), rel=0.05)
    ortho = torch.linalg.qr(torch.cat([u, torch.eye(dim)], 1))[0][:, k:]
    assert float(torch.diagonal(ortho.T @ empirical @ ortho).mean()) == pytest.approx(sigma2 * alpha / dim, rel=0.05)
    assert torch.equal(recipe.rows(0, 4)[1], -recipe.rows(0, 4)[0])  # antithetic pairs around a zero centre


def test_a_workers_rows_equal_the_drivers_whatever_the_split():
    cfg = GuidedConfig(popsize=10, alpha=0.2, k=3)
    search = GuidedSearch(cfg, torch.randn(40, generator=torch.Generator().manual_seed(1)), seed=5)
    for i in range(3):
        search.observe(torch.randn(40, generator=torch.Generator().manual_seed(10 + i)))
    recipe = search.recipe(7)
    whole = recipe.rows(0, 10)
    for cuts in ([0, 3, 10], [0, 1, 2, 7, 10], [0, 5, 10]):
        assert torch.equal(torch.cat([recipe.rows(a, b) for a, b in zip(cuts[:-1], cuts[1:])]), whole)


# --- the loop ----------------------------------------------------------------------------------


def test_same_numbers_with_no_worker_and_two_ray_workers(ray_local):
    runs = {}
    for workers in (0, 2):
        cfg = tiny("run.generations=4", "run.validate_every=2", f"run.workers={workers}")
        genome = build_genome(cfg)
        evaluator = LocalEvaluator(cfg, genome) if workers == 0 else RayEvaluator(cfg, workers)
        try:
            if workers:
                assert len(set(evaluator.pids())) == 2
            hist = []
            result = drive(cfg, genome, evaluator, [hist.append])
            if workers:  # the checksums catch a worker that regenerates other members than the driver's
                recipe = GuidedSearch(cfg.guided, genome.initial_vector(), cfg.run.seed).recipe(1)
                with pytest.raises(ClusterError, match="regenerated different members"):
                    evaluator.collect(evaluator.submit_rows(recipe, (0, 2, 1)), expected=recipe.rows(0, 32).double().sum(1) + 1)
        finally:
            evaluator.close()
        runs[workers] = ([h.get("fitness_mean") for h in hist], [h.get("val_mse_late") for h in hist], result.final)
    assert runs[0][0] == runs[2][0] and runs[0][1] == runs[2][1]
    assert torch.equal(runs[0][2], runs[2][2])
    assert not torch.equal(runs[0][2], genome.initial_vector())


@pytest.mark.parametrize("optimizer", ["clipup", "adam"])
def test_resuming_from_a_checkpoint_reproduces_the_uninterrupted_run(optimizer, tmp_path):
    cfg = tiny("run.workers=0", "run.generations=7", "run.checkpoint_every=2", "run.validate_every=3",
               f"guided.optimizer={optimizer}", "guided.k=2", "guided.popsize=8")
    genome = build_genome(cfg)
    states = {}
    full = drive(cfg, genome, LocalEvaluator(cfg, genome), [lambda s: states.update({s["generation"]: s.get("resume_state")})])
    saved = {g: s for g, s in states.items() if s is not None}
    assert sorted(saved) == [2, 4, 6]
    assert saved[4]["searcher"]["history"].shape == (2, genome.dim)  # the subspace's gradients travel with the state
    for gen in (2, 4):
        seen = []
        state = load_resume(save_resume(tmp_path / f"resume{gen}.pt", cfg, saved[gen]))  # through the file: no pickle
        resumed = drive(cfg, genome, LocalEvaluator(cfg, genome), [seen.append], resume=state)
        assert [s["generation"] for s in seen] == list(range(gen + 1, 8))
        assert torch.equal(resumed.final, full.final) and torch.equal(resumed.best, full.best)
        assert [s["fitness_mean"] for s in seen] == [h["fitness_mean"] for h in full.history[gen + 1 :]]


def test_guided_es_improves_the_teacher_families_validation_error():
    cfg = load_config(SMOKE, ["run.workers=0", "run.generations=30", "run.validate_every=30", "run.threads=1"])
    genome = build_genome(cfg)
    hist = []
    drive(cfg, genome, LocalEvaluator(cfg, genome), [hist.append])
    start, end = hist[0]["val_mse_late"], hist[-1]["val_mse_late"]
    assert end < 0.85 * start, (start, end)
    assert all(h["subspace_dim"] == 2 for h in hist[2:]) and hist[1]["subspace_dim"] == 1
    assert all(h["surrogate_nan"] == 0 for h in hist[1:])


@pytest.mark.parametrize("smoke", ["smoke_store_recall.yaml", "smoke_smnist.yaml", "smoke_maze.yaml", "smoke_maze_a2c.yaml"])
def test_every_family_with_a_gradient_loss_runs_guided(smoke):
    """store-recall and sequential MNIST through their BPTT losses, the maze through A2C (with and
    without the mirror tying): finite surrogate gradients that span the subspace, and a moved centre."""
    cfg = load_config(ROOT / "configs" / smoke, ["outer=guided", "guided.popsize=8", "run.generations=2", "run.workers=0",
                                                 "run.validate_every=2", "run.threads=1"])
    genome = build_genome(cfg)
    hist = []
    result = drive(cfg, genome, LocalEvaluator(cfg, genome), [hist.append])
    assert [h["subspace_dim"] for h in hist[1:]] == [1, 2]
    assert all(h["surrogate_nan"] == 0 and h["surrogate_norm"] > 0 for h in hist[1:])
    assert torch.isfinite(result.final).all() and not torch.equal(result.final, genome.initial_vector())


# --- a surrogate forced to NaN, and a family without a gradient loss -----------------------------

NAN_NAME = "tests.outer.test_guided:NAN_FAMILY"
NO_GRAD_NAME = "tests.outer.test_guided:NO_GRADIENT_FAMILY"


class NanConfig(plugin.SumConfig):
    family: Literal["tests.outer.test_guided:NAN_FAMILY"] = NAN_NAME


class NanFamily(plugin.SumFamily):
    """The spike-sum family whose gradient loss is NaN on even generations: NaN times the real loss,
    so the NaN reaches the gradient through the real backward."""

    name, config = NAN_NAME, NanConfig

    def gradient_loss(self, task, ctx, params, key, batch):
        loss, ev, terms = super().gradient_loss(task, ctx, params, key, batch)
        return (loss * float("nan") if key.generation % 2 == 0 else loss), ev, terms


class NoGradConfig(plugin.SumConfig):
    family: Literal["tests.outer.test_guided:NO_GRADIENT_FAMILY"] = NO_GRAD_NAME


class NoGradFamily(plugin.SumFamily):
    name, config, gradient_loss_name = NO_GRAD_NAME, NoGradConfig, None


NAN_FAMILY, NO_GRADIENT_FAMILY = NanFamily(), NoGradFamily()


def _sum_config(family: str, *sets):
    tree = {"outer": "guided", "model": {"n_lif": 6, "n_alif": 6}, "task": {"family": family},
            "guided": {"popsize": 8, "k": 2}, "run": {"generations": 5, "workers": 0, "validate_every": 5, "validation_tasks": 8}}
    from es_l2l.config import build_config

    return build_config(tree, list(sets))


def test_a_nan_surrogate_falls_back_to_the_isotropic_part_and_is_counted():
    cfg = _sum_config(NAN_NAME)
    genome = build_genome(cfg)
    hist = []
    result = drive(cfg, genome, LocalEvaluator(cfg, genome), [hist.append])
    steps = hist[1:]
    assert [h["surrogate_nan"] for h in steps] == [0, 1, 1, 2, 2]
    assert [h["alpha"] for h in steps] == [0.5, 1.0, 0.5, 1.0, 0.5]
    assert [h["subspace_dim"] for h in steps] == [1, 0, 2, 0, 2]  # the NaN gradients join no subspace
    assert all(math.isfinite(h["fitness_mean"]) for h in steps) and torch.isfinite(result.final).all()


def test_bad_guided_input_is_one_sentence_naming_the_key():
    with pytest.raises(ConfigError, match="the tests.outer.test_guided:NO_GRADIENT_FAMILY family has no gradient loss"):
        _sum_config(NO_GRAD_NAME)
    with pytest.raises(ConfigError, match="'guided.alpha'"):
        _sum_config(NAN_NAME, "guided.alpha=1.5")
    with pytest.raises(ConfigError, match="'guided.alpha'"):
        _sum_config(NAN_NAME, "guided.alpha=-0.1")
    with pytest.raises(ConfigError, match="'guided.k'"):
        _sum_config(NAN_NAME, "guided.k=0")
    with pytest.raises(ConfigError, match="genome.search lists no block a gradient reaches"):
        _sum_config(NAN_NAME, "genome.search=[mask_in, mask_rec]")
    with pytest.raises(ConfigError, match="guided.popsize must be even"):
        _sum_config(NAN_NAME, "guided.popsize=7")
    from es_l2l.errors import PreflightError
    from es_l2l.preflight import check_memory, estimate_bytes

    cfg = tiny()  # the memory check before a run counts the surrogate's graph and names guided's own key
    assert estimate_bytes(cfg, 2113)["surrogate gradient's graph (B x T x N x 8 floats)"] == 4 * 100 * 32 * 8 * 4
    with pytest.raises(PreflightError, match="lower guided.popsize"):
        check_memory(cfg, 2113, available=1000)


# --- the real CLI -------------------------------------------------------------------------------


def _cli(tmp: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "es_l2l.cli", *args], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _store(tmp: Path) -> list[str]:
    return [f"--set=tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"--set=tracking.artifact_root={tmp / 'mlruns'}"]


@pytest.mark.parametrize("case, message", [
    ("guided.alpha=2", "'guided.alpha'"),
    ("guided.k=0", "'guided.k'"),
    ("no gradient loss", "the tests.outer.test_guided:NO_GRADIENT_FAMILY family has no gradient loss"),
])
def test_bad_guided_input_exits_2_through_the_cli_with_no_run(tmp_path, case, message):
    if case == "no gradient loss":  # a family with a section of its own: a config file of its own
        path = tmp_path / "nograd.yaml"
        path.write_text(yaml.safe_dump({"outer": "guided", "task": {"family": NO_GRAD_NAME}, "model": {"n_lif": 6, "n_alif": 6}}))
        args = ["run", str(path)]
    else:
        args = ["run", str(SMOKE), f"--set={case}"]
    proc = _cli(tmp_path, *args, *_store(tmp_path), timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow  # run by .ci/run; guided ES stays in the default run in-process and its bad input through the CLI
def test_the_cli_runs_guided_es_and_compares_it_with_plain_es(tmp_path):
    proc = _cli(tmp_path, "run", str(SMOKE), *_store(tmp_path), "--set=run.threads=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "guided ES P=32 alpha=0.5 k=2" in proc.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED" and run.data.params["guided.alpha"] == "0.5"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train/subspace_dim")] == [1, 2, 2, 2, 2, 2]
    assert {"train/surrogate_nan", "train/surrogate_loss", "withheld/model/mse_late"} <= set(run.data.metrics)

    cmp_dir = tmp_path / "compare"
    cmp_dir.mkdir()
    proc = _cli(cmp_dir, "compare", str(ROOT / "configs" / "smoke.yaml"), str(SMOKE), "--budget-seconds", "3",
                *_store(cmp_dir), "--set=run.threads=1", "--set=run.workers=0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{cmp_dir / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["es_l2l.outer"] for r in children) == ["es", "guided"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert "outer loop differ: teacher-es-smoke: es (searches" in " ".join(proc.stdout.split())
    assert "teacher-guided-smoke: guided (searches" in " ".join(proc.stdout.split())


def test_the_bench_cell_times_guided_es_beside_es_and_bptt():
    from es_l2l.bench import guided_gen

    res = guided_gen.run(quick=True, rounds=1, log=lambda s: None)
    s = res["seconds"]
    assert all(s[k] > 0 for k in ("es", "bptt", "guided", "guided_bptt_batch"))
    assert 0 < res["surrogate_seconds"]["guided"] < s["guided"]
    assert res["guided_over_es_plus_bptt"] == pytest.approx(s["guided"] / (s["es"] + s["bptt"]))
    assert res["tasks"]["guided_bptt_batch"] == 64 and res["popsize"] == {"es": 64, "guided": 64}
    assert "guided / (ES + BPTT)" in guided_gen.report(res)


@pytest.mark.slow  # run by .ci/run; guided resume stays in the default run (test_resuming_from_a_checkpoint_reproduces_the_uninterrupted_run)
def test_a_killed_guided_driver_resumes_through_the_cli_and_ends_with_the_uninterrupted_genome(tmp_path):
    import signal
    import time

    from es_l2l.tracking.checkpoint import load_checkpoint

    sets = ["--set=run.workers=0", "--set=run.generations=40", "--set=run.checkpoint_every=5", "--set=run.validate_every=40",
            "--set=task.batch_size=4", "--set=run.validation_tasks=16", "--set=guided.popsize=8", "--set=run.threads=1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen([sys.executable, "-m", "es_l2l.cli", "run", str(SMOKE), *_store(tmp_path), *sets], cwd=tmp_path,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 300
        while not sorted(tmp_path.glob("mlruns/**/resume.pt")):
            assert driver.poll() is None and time.monotonic() < end, driver.communicate()
            time.sleep(0.05)
        time.sleep(0.3)  # let the artifact copy complete, then kill the driver without warning
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    checkpointed = load_resume(sorted(tmp_path.glob("mlruns/**/resume.pt"))[0])["generation"]
    assert driver.returncode == -signal.SIGKILL and 5 <= checkpointed < 40
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    resumed = _cli(tmp_path, "run", "--resume", run.info.run_id, *_store(tmp_path), "--set=run.workers=0")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed after generation {checkpointed}" in " ".join(resumed.stdout.split())
    steps = {m.step for m in client.get_metric_history(run.info.run_id, "train/surrogate_nan")}
    assert steps == set(range(1, 41))  # one MLflow run, every generation logged
    cfg, genome, genomes, _ = load_checkpoint(client.download_artifacts(run.info.run_id, "checkpoint.pt", str(tmp_path)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the driver's threads are part of the numbers (its surrogate gradient), as in BPTT
    try:
        reference = drive(cfg, genome, LocalEvaluator(cfg, genome))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(genomes["final"], reference.final) and torch.equal(genomes["best"], reference.best)
