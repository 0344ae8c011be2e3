"""Resume of the gradient loops: BPTT (with and without DEEP R) and the hybrid continue from any
checkpointed step, through the resume file, to exactly the numbers of an uninterrupted run."""

from pathlib import Path

import pytest
import torch

from es_l2l.tracking.checkpoint import load_resume, save_resume
from es_l2l.config import load_config
from es_l2l.cluster.evaluators import LocalEvaluator
from es_l2l.genome import build_genome
from es_l2l.outer.driver import drive

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEEP_R = ["bptt.deep_r.enabled=true", "model.p_in=1", "model.p_rec=1", "bptt.deep_r.temperature=1e-4"]


@pytest.mark.parametrize("name, sets", [("smoke_bptt", []), ("smoke_bptt", DEEP_R), ("smoke_bptt", ["bptt.lr_schedule=cosine"]),
                                        ("smoke_hybrid", [])], ids=["bptt", "bptt-deep-r", "bptt-cosine", "hybrid"])
def test_resuming_a_gradient_loop_reproduces_the_uninterrupted_run(name, sets, tmp_path):
    cfg = load_config(CONFIGS / f"{name}.yaml", ["run.workers=0", "run.generations=5", "run.checkpoint_every=2",
                                                 "run.validate_every=3", "task.batch_size=4", "run.validation_tasks=8", *sets])
    genome = build_genome(cfg)
    evaluator = lambda: LocalEvaluator(cfg, genome) if cfg.outer == "hybrid" else None  # noqa: E731
    states = {}
    full = drive(cfg, genome, evaluator(), [lambda s: states.update({s["generation"]: s.get("resume_state")})])
    assert sorted(g for g, s in states.items() if s is not None) == [2, 4]
    for gen in (2, 4):
        state = load_resume(save_resume(tmp_path / f"resume{gen}.pt", cfg, states[gen]))  # through the file
        seen = []
        resumed = drive(cfg, genome, evaluator(), [seen.append], resume=state)
        assert [s["generation"] for s in seen] == list(range(gen + 1, 6))
        assert torch.equal(resumed.final, full.final) and torch.equal(resumed.best, full.best)
        assert resumed.best_generation == full.best_generation
        for key in ("fitness_mean", "grad_norm", "lr"):
            assert [s[key] for s in seen] == [h[key] for h in full.history[gen + 1 :]], key
        if "active_w_rec" in full.history[-1]:
            assert [s["active_w_rec"] for s in seen] == [h["active_w_rec"] for h in full.history[gen + 1 :]]


def test_a_resume_state_of_another_loop_is_refused_in_one_line(tmp_path):
    cfg = load_config(CONFIGS / "smoke_bptt.yaml", ["run.workers=0", "run.generations=3", "run.checkpoint_every=2",
                                                    "task.batch_size=4", "run.validation_tasks=8"])
    genome = build_genome(cfg)
    states = {}
    drive(cfg, genome, None, [lambda s: states.update({s["generation"]: s.get("resume_state")})])
    state = dict(states[2], searcher={**states[2]["searcher"], "vector": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"searcher.vector is not a \(\d+,\) tensor"):
        load_resume(save_resume(tmp_path / "bad.pt", cfg, state))
