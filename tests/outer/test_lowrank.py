"""Low-rank ES (es.perturbation=lowrank): the update equals a hand-computed one, the members are what
the recipe says on every worker, resume is exact, fitness improves, bad input is one line."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from es_l2l.tracking.checkpoint import load_resume, save_resume
from es_l2l.config import load_config
from es_l2l.cluster.evaluators import LocalEvaluator, RayEvaluator
from es_l2l.genome import build_genome
from es_l2l.outer.driver import drive
from es_l2l.outer.es import ESConfig
from es_l2l.outer.lowrank import LowRankRecipe, LowRankSearch, Piece, shared_population
from es_l2l.seeds import generator

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke_lowrank.yaml"

# a 3 x 2 matrix block and a 2-vector block: D = 8
PIECES = (Piece("w_rec", 0, 6, (3, 2), 0.1, True), Piece("b0", 6, 8, (2,), 0.2, False))


def test_members_are_antithetic_rank_r_steps_drawn_from_the_pair_seed():
    center = torch.arange(8, dtype=torch.float32) / 10
    recipe = LowRankRecipe(center, PIECES, rank=1, seed=7, generation=3, popsize=4)
    rows = recipe.rows()
    for j in range(2):
        gen = generator(7, 3, j)  # by hand: A (3, 1), B (2, 1), eps (2,) in that order
        a, b, eps = torch.randn(3, 1, generator=gen), torch.randn(2, 1, generator=gen), torch.randn(2, generator=gen)
        delta = torch.cat([(0.1 * a @ b.T).reshape(-1), 0.2 * eps])
        assert torch.allclose(rows[2 * j] - center, delta, atol=1e-7)
        assert torch.allclose(rows[2 * j + 1] - center, -delta, atol=1e-7)
        assert torch.linalg.matrix_rank((rows[2 * j] - center)[:6].reshape(3, 2)) == 1
    assert torch.equal(recipe.rows(1, 3), rows[1:3])  # a worker's share equals the driver's rows


def test_update_equals_a_hand_computed_one_with_sgd_and_clipup():
    fitness = torch.tensor([3.0, 1.0, 0.0, 2.0])
    # centred ranks (PGPE's shaping): 3 -> 0.5, 1 -> -1/6, 0 -> -0.5, 2 -> 1/6
    # g = sum_j (u_2j - u_2j+1) / 2 * delta_j / (P / 2) = (1/3 d0 - 1/3 d1) / 2 = (d0 - d1) / 6
    center = torch.zeros(8)
    recipe = LowRankRecipe(center, PIECES, rank=2, seed=11, generation=5, popsize=4)
    deltas = []
    for j in range(2):
        gen = generator(11, 5, j)
        a, b, eps = torch.randn(3, 2, generator=gen), torch.randn(2, 2, generator=gen), torch.randn(2, generator=gen)
        deltas.append(torch.cat([(0.1 * a @ b.T / math.sqrt(2)).reshape(-1), 0.2 * eps]))
    g = (deltas[0] - deltas[1]) / 6
    sgd = LowRankSearch(ESConfig(optimizer="sgd", center_lr=0.5, rank=2, popsize=4), PIECES, 11, center)
    sgd.tell(recipe, fitness)
    assert torch.allclose(sgd.center, 0.5 * g, atol=1e-7)
    # ClipUp (Toklu et al. 2020): velocity = clip(0.9 v + lr g / |g|, max_speed), from v = 0
    clip = LowRankSearch(ESConfig(optimizer="clipup", center_lr=0.5, max_speed=0.3, rank=2, popsize=4), PIECES, 11, center)
    clip.tell(recipe, fitness)
    step = 0.5 * g / g.norm()
    assert torch.allclose(clip.center, step * min(1.0, 0.3 / float(step.norm())), atol=1e-7)
    assert abs(float(clip.center.norm()) - 0.3) < 1e-6  # the step was clipped to max_speed


def tiny(*sets):
    return load_config(SMOKE, list(sets))


@pytest.mark.parametrize("forward", ["shared", pytest.param("explicit", marks=pytest.mark.slow)])  # explicit: run by .ci/run
def test_same_numbers_with_zero_and_two_ray_workers_and_either_traffic(forward, ray_local):
    runs = {}
    arms = (("seeds", 0), ("seeds", 2)) + ((("vectors", 2),) if forward == "explicit" else ())
    for traffic, workers in arms:
        cfg = tiny("run.generations=3", "run.validate_every=3", "run.validation_tasks=16", f"es.traffic={traffic}",
                   f"es.lowrank_forward={forward}")
        genome = build_genome(cfg)
        evaluator = LocalEvaluator(cfg, genome) if workers == 0 else RayEvaluator(cfg, workers)
        try:
            hist = []
            result = drive(cfg, genome, evaluator, [hist.append])
        finally:
            evaluator.close()
        runs[traffic, workers] = ([h.get("fitness_mean") for h in hist], result.final)
    (ref_fit, ref_final), *others = runs.values()
    assert not torch.equal(ref_final, build_genome(tiny()).initial_vector())  # the centre moved
    for fit, final in others:
        assert fit == ref_fit and torch.equal(final, ref_final)  # bit for bit


def test_the_shared_forward_scores_members_as_their_explicit_matrices_and_steps_aside_for_masks():
    cfg = tiny("run.workers=0", "es.lowrank_forward=shared", "es.stdev_init=0.2")
    genome = build_genome(cfg)
    recipe = LowRankSearch.for_run(cfg.es, cfg.run.seed, genome).ask(1)
    keys = (0, 2, 1)
    shared, rows = recipe.evaluate(cfg, genome, 0, 32, keys)
    assert shared_population(genome, recipe, 0, 32, rows) is not None  # dense connectivity: the shared forward ran
    explicit, _ = recipe.evaluate(cfg.model_copy(update={"es": cfg.es.model_copy(update={"lowrank_forward": "explicit"})}),
                                  genome, 0, 32, keys)
    assert torch.allclose(shared.fitness, explicit.fitness, rtol=0, atol=1e-6)  # float32 rounding
    assert shared.fitness.std() > 1e-3  # the members differ, so the corrections were applied
    part, _ = recipe.evaluate(cfg, genome, 5, 13, keys)  # a worker's share: the same numbers, bit for bit
    assert torch.equal(part.fitness, shared.fitness[5:13])
    masked = tiny("run.workers=0", "model.p_rec=0.5")  # a sparse W_rec: members are no longer centre + a b^T
    genome = build_genome(masked)
    recipe = LowRankSearch.for_run(masked.es, masked.run.seed, genome).ask(1)
    assert shared_population(genome, recipe, 0, 32, recipe.rows()) is None


@pytest.mark.parametrize("optimizer", ["clipup", "adam"])
def test_resuming_from_a_checkpoint_reproduces_the_uninterrupted_run(optimizer, tmp_path):
    cfg = tiny("run.workers=0", "run.generations=5", "run.checkpoint_every=2", "run.validate_every=3",
               "task.batch_size=4", "run.validation_tasks=16", f"es.optimizer={optimizer}", "es.center_lr=0.05")
    genome = build_genome(cfg)
    states = {}
    full = drive(cfg, genome, LocalEvaluator(cfg, genome), [lambda s: states.update({s["generation"]: s.get("resume_state")})])
    state = load_resume(save_resume(tmp_path / "resume2.pt", cfg, states[2]))  # through the file: tensors + JSON
    seen = []
    resumed = drive(cfg, genome, LocalEvaluator(cfg, genome), [seen.append], resume=state)
    assert [s["generation"] for s in seen] == [3, 4, 5]
    assert torch.equal(resumed.final, full.final) and torch.equal(resumed.best, full.best)
    assert [s["fitness_mean"] for s in seen] == [h["fitness_mean"] for h in full.history[3:]]


@pytest.mark.parametrize("forward", ["explicit", "shared"])
def test_lowrank_es_improves_the_held_out_error(forward):
    cfg = tiny("run.workers=0", "run.generations=30", "run.validate_every=30", "es.popsize=32", f"es.lowrank_forward={forward}")
    genome = build_genome(cfg)
    history = []
    drive(cfg, genome, LocalEvaluator(cfg, genome), [history.append])
    start, end = history[0]["val_mse"], history[-1]["val_mse"]
    assert end < 0.9 * start, (start, end)


@pytest.mark.parametrize(
    "sets, message",
    [
        (["es.rank=5"], "es.rank=5 is larger than the smaller side of w_out (32, 1); set es.rank to at most 1"),
        (["genome.search=[tau_m,b0]"], "es.perturbation=lowrank perturbs matrix blocks"),
        (["es.algorithm=snes"], "es.perturbation=lowrank needs es.algorithm=pgpe"),
        (["outer=hybrid"], "es.perturbation=lowrank applies to outer=es only"),
        (["es.traffic=vectors", "es.lowrank_forward=shared"], "es.lowrank_forward=shared needs es.traffic=seeds"),
    ],
)
def test_bad_lowrank_input_is_one_line_exit_2_and_no_run(sets, message, tmp_path):
    store = [f"--set=tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"--set=tracking.artifact_root={tmp_path / 'mlruns'}"]
    proc = subprocess.run([sys.executable, "-m", "es_l2l.cli", "run", str(SMOKE), *store, *[f"--set={s}" for s in sets]],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_members_keep_connectivity_masks_and_mirror_tying_and_the_maze_runs():
    maze = ROOT / "configs" / "smoke_maze.yaml"
    cfg = load_config(maze, ["run.workers=0", "run.generations=1", "run.validate_every=1", "es.perturbation=lowrank",
                             "es.rank=1", "genome.mirror=true", "model.p_rec=0.5", "es.lowrank_forward=shared"])
    genome = build_genome(cfg)
    recipe = LowRankSearch.for_run(cfg.es, cfg.run.seed, genome).ask(1)
    params = genome.params(recipe.rows())
    absent = genome.base["mask_rec"] <= 0  # connections the centre's mask removes
    assert absent.sum() > 10 and (params.w_rec[:, absent] == 0).all()
    hidden = genome.block_perms()["w_rec"][0]
    assert torch.equal(params.w_rec[:, hidden][:, :, hidden], params.w_rec)  # mirror-symmetric members
    assert not torch.equal(params.w_rec[0], params.w_rec[1])  # and they differ
    seen = []
    result = drive(cfg, genome, LocalEvaluator(cfg, genome), [seen.append])  # closed loop: explicit members
    assert [s["generation"] for s in seen] == [0, 1] and not torch.equal(result.final, result.initial)
