"""The hybrid outer loop: ES moves only its blocks, gradient steps only theirs."""

from pathlib import Path

import torch

from es_l2l.config import load_config
from es_l2l.cluster.evaluators import LocalEvaluator
from es_l2l.genome import build_genome
from es_l2l.context import RunContext
from es_l2l.outer import OUTER_LOOPS
from es_l2l.outer.driver import drive
from es_l2l.outer.shell import inputs_of
from es_l2l.families.teacher.tasks import n_inputs

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def changed(genome, a, b):
    sl = genome.slices()
    return {name for name in genome.searched if not torch.equal(a[sl[name]], b[sl[name]])}


def test_each_side_updates_only_its_blocks():
    # mask_rec is searched but given to neither side: nothing may touch it.
    cfg = load_config(
        CONFIGS / "smoke_hybrid.yaml",
        ["run.workers=0", "genome.search=[w_in, w_rec, w_out, b_out, tau_m, tau_a, b0, beta, mask_rec]",
         "hybrid.es_blocks=[tau_m, b0]", "bptt.train=[w_out, b_out]"],
    )
    genome = build_genome(cfg, n_inputs(cfg.task))
    hybrid = OUTER_LOOPS["hybrid"].start(cfg.hybrid, RunContext.of(cfg), inputs_of(cfg, genome, LocalEvaluator(cfg, genome)))
    v0 = hybrid.vector
    hybrid.es_step(1)  # evotorch's first step only samples and evaluates; updates start at the second
    assert changed(genome, v0, hybrid.vector) == set()
    hybrid.gradient_steps(1)
    for gen in (2, 3):
        v0 = hybrid.vector
        hybrid.es_step(gen)
        v1 = hybrid.vector
        assert changed(genome, v0, v1) == {"tau_m", "b0"}
        hybrid.gradient_steps(gen)
        v2 = hybrid.vector
        assert changed(genome, v1, v2) == {"w_out", "b_out"}


def test_hybrid_run_emits_both_sides_metrics_and_improves():
    cfg = load_config(CONFIGS / "smoke_hybrid.yaml", ["run.workers=0", "run.generations=12", "run.validate_every=12", "bptt.lr=0.01"])
    genome = build_genome(cfg, n_inputs(cfg.task))
    seen = []
    drive(cfg, genome, LocalEvaluator(cfg, genome), [seen.append])
    assert {"fitness_mean", "stdev", "bptt_train_mse", "grad_norm", "neuron_steps"} <= set(seen[-1])
    assert seen[-1]["val_mse_late"] < 0.8 * seen[0]["val_mse_late"]
    per_gen = seen[2]["neuron_steps"] - seen[1]["neuron_steps"]
    n, t = cfg.model.n_lif + cfg.model.n_alif, cfg.task.n_trials * cfg.task.trial_ms
    assert per_gen == (cfg.es.popsize + cfg.hybrid.bptt_steps) * cfg.task.batch_size * n * t
