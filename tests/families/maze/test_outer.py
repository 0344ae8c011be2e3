"""ES and A2C + BPTT on the maze family: each improves the held-out reward on a tiny config; Ray changes nothing."""

from pathlib import Path

import torch

from es_l2l.config import load_config
from es_l2l.cluster.evaluators import LocalEvaluator, RayEvaluator
from es_l2l.genome import build_genome
from es_l2l.outer.driver import drive

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
# A 2 x 3 maze (every corner cell is a candidate goal), 20 moves, few neurons: learnable in seconds.
TINY = ["task.rows=2", "task.cols=3", "task.n_steps=20", "task.ms_per_step=3", "run.validation_tasks=64"]


def improvement(history: list[dict]) -> tuple[float, float]:
    vals = [h["val_reward"] for h in history if "val_reward" in h]
    return vals[0], max(vals)


def test_es_improves_the_reward():
    # In the driver process; test_es_numbers_do_not_depend_on_the_worker_count shows Ray actors give the same numbers.
    cfg = load_config(
        CONFIGS / "smoke_maze.yaml", [*TINY, "run.generations=40", "run.validate_every=10", "run.workers=0", "task.search_curriculum=0"]
    )
    genome = build_genome(cfg)
    history = []
    drive(cfg, genome, LocalEvaluator(cfg, genome), [history.append])
    # Validation reward per episode (64 fixed mazes) rises by at least 0.5 (measured: -0.32 -> 0.23).
    # The search curriculum is off: this checks ES on the family itself.
    start, best = improvement(history)
    assert best > start + 0.5, (start, best)
    assert {"train_reward_mean", "val_reward", "val_first_find", "best_val_reward"} <= set(history[-1])


def test_a2c_improves_the_reward():
    cfg = load_config(CONFIGS / "smoke_maze_a2c.yaml", [*TINY, "run.generations=40", "run.validate_every=10", "task.search_curriculum=0"])
    history = []
    result = drive(cfg, build_genome(cfg), None, [history.append])
    # Measured: -0.32 -> 0.20 in 40 steps, the search curriculum off.
    start, best = improvement(history)
    assert best > start + 0.3, (start, best)
    assert {"policy_loss", "value_loss", "entropy", "train_reward_mean"} <= set(history[-1])
    assert not torch.equal(result.best, result.initial)


def test_es_numbers_do_not_depend_on_the_worker_count(ray_local):
    cfg = load_config(CONFIGS / "smoke_maze.yaml", [*TINY, "run.generations=2", "run.validate_every=2"])
    genome = build_genome(cfg)
    local = drive(cfg, genome, LocalEvaluator(cfg, genome))
    pool = RayEvaluator(cfg, 2)
    try:
        remote = drive(cfg, genome, pool)
    finally:
        pool.close()
    assert torch.equal(local.final, remote.final)
    assert local.history[-1]["val_reward"] == remote.history[-1]["val_reward"]


def test_both_outer_loops_train_the_mirror_tied_network():
    """ES and A2C both move the genome, and the networks they give stay exactly mirror-symmetric."""
    sets = [*TINY, "genome.mirror=true", "run.generations=3", "run.validate_every=3"]
    for cfg in (load_config(CONFIGS / "smoke_maze.yaml", [*sets, "run.workers=0"]), load_config(CONFIGS / "smoke_maze_a2c.yaml", sets)):
        genome = build_genome(cfg)
        result = drive(cfg, genome, LocalEvaluator(cfg, genome)) if cfg.outer == "es" else drive(cfg, genome)
        assert not torch.equal(result.final, result.initial), cfg.outer
        params, perms = genome.params(result.final.unsqueeze(0)), genome.block_perms()
        hidden, perm_out = perms["w_rec"][0], perms["w_out"][1]
        assert torch.equal(params.w_rec[0][hidden][:, hidden], params.w_rec[0]), cfg.outer
        assert torch.equal(params.w_out[0][hidden][:, perm_out], params.w_out[0]), cfg.outer
        assert torch.equal(params.b0[0][hidden], params.b0[0]), cfg.outer


def test_search_curriculum_changes_only_the_early_training_mazes():
    base = [*TINY, "run.generations=2", "run.validate_every=1", "run.workers=0"]
    runs = {}
    for n in (0, 1):
        cfg = load_config(CONFIGS / "smoke_maze.yaml", [*base, f"task.search_curriculum={n}"])
        genome = build_genome(cfg)
        runs[n] = drive(cfg, genome, LocalEvaluator(cfg, genome)).history
    # Generation 0 validates the initial centre; training generations count from 1.
    assert [h.get("search_curriculum") for h in runs[1]] == [None, 1.0, 0.0]
    assert "search_curriculum" not in runs[0][1]
    # Generation 1: the same population on relocating goals earns differently; validation (the
    # family itself, the same initial centre) is identical.
    assert runs[1][1]["train_reward_mean"] != runs[0][1]["train_reward_mean"]
    assert runs[1][0]["val_reward"] == runs[0][0]["val_reward"]
