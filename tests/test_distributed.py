"""Cluster-facing config and device checks that need no cluster: one-sentence errors, GPU fallback,
seed-traffic regeneration."""

from pathlib import Path

import pytest
import torch

from es_l2l.config import ConfigError, load_config
from es_l2l.cluster.evaluators import ClusterError, settle_device
from es_l2l.cluster.seed_traffic import SampleRecipe, regenerate
from es_l2l.genome import build_genome
from es_l2l.outer.evo import MetaProblem, make_searcher
from es_l2l.families.teacher.tasks import n_inputs

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


@pytest.mark.parametrize(
    "sets, message",
    [
        (["es.algorithm=cmaes", "es.traffic=seeds"], "es.traffic=seeds needs a Gaussian search distribution"),
        (["run.gpus_per_worker=1.5"], "run.gpus_per_worker must be a fraction of one GPU or a whole number"),
        (["run.checkpoint_every=0"], "'run.checkpoint_every'"),
        (["es.traffic=bytes"], "'es.traffic'"),
    ],
)
def test_cluster_config_errors_are_one_sentence(sets, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(SMOKE, sets)


def test_traffic_defaults_to_seeds_where_the_algorithm_samples_a_gaussian():
    assert load_config(SMOKE, ["es.algorithm=snes"]).es.seed_traffic
    assert not load_config(SMOKE, ["es.algorithm=cmaes"]).es.seed_traffic
    assert not load_config(SMOKE, ["es.traffic=vectors"]).es.seed_traffic
    assert load_config(SMOKE, ["run.gpus_per_worker=0.25"]).run.gpus_per_worker == 0.25


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_missing_gpu_is_an_error_or_an_explicit_cpu_fallback():
    cfg = load_config(SMOKE, ["run.workers=0", "run.device=cuda"])
    with pytest.raises(ClusterError, match="run.device=cuda but this torch sees no GPU"):
        settle_device(cfg)
    ran, note = settle_device(load_config(SMOKE, ["run.workers=0", "run.device=cuda", "run.gpu_fallback=true"]))
    assert ran.run.device == "cpu" and "running on CPU instead (run.gpu_fallback=true)" in note
    assert settle_device(load_config(SMOKE, ["run.workers=0"])) == (load_config(SMOKE, ["run.workers=0"]), None)


@pytest.mark.parametrize("algorithm", ["pgpe", "snes", "cem"])
def test_a_recipe_regenerates_evotorchs_sample_bit_for_bit(algorithm):
    cfg = load_config(SMOKE, ["run.workers=0", f"es.algorithm={algorithm}"])
    genome = build_genome(cfg, n_inputs(cfg.task))
    seen = []

    class Recorder:
        seed_traffic = True

        def evaluate_recipe(self, recipe, vectors, keys):
            seen.append((recipe, vectors))
            from es_l2l.cluster.evaluators import LocalEvaluator

            return LocalEvaluator(cfg, genome)(vectors, keys)

    problem = MetaProblem(genome.dim, Recorder(), seed=7)
    searcher = make_searcher(cfg.es, problem, genome.initial_vector())
    for gen in (1, 2, 3):
        problem.start_generation((0, 2, gen))
        searcher.step()
    assert len(seen) == 3
    for recipe, vectors in seen:
        assert isinstance(recipe, SampleRecipe) and torch.equal(regenerate(recipe), vectors)
    assert not torch.equal(seen[0][1], seen[1][1])


@pytest.mark.parametrize("algorithm", ["pgpe", "snes", "cem"])
def test_work_is_sent_before_evotorch_samples_and_the_lean_recipe_regenerates_its_sample(algorithm):
    """With an evaluator that can submit_recipe, the recipe leaves when evotorch asks for the
    generator, after its distribution update: every generation's recipe (not only the first,
    whose distribution was never updated) must regenerate exactly the members then evaluated."""
    from es_l2l.cluster.evaluators import LocalEvaluator
    from es_l2l.cluster.seed_traffic import lean, pack, unpack

    cfg = load_config(SMOKE, ["run.workers=0", f"es.algorithm={algorithm}"])
    genome = build_genome(cfg, n_inputs(cfg.task))
    events = []

    class Prelaunch:
        seed_traffic = True

        def submit_recipe(self, recipe, keys):
            events.append("submit")
            lean_recipe = lean(recipe)
            assert torch.equal(regenerate(lean_recipe), regenerate(recipe))
            return regenerate(lean_recipe), keys

        def collect(self, refs, expected=None):
            vectors, keys = refs
            events.append("collect")
            assert torch.equal(vectors.double().sum(dim=1), expected)  # the same members as evotorch sampled
            return unpack(pack(LocalEvaluator(cfg, genome)(vectors, keys)))

    problem = MetaProblem(genome.dim, Prelaunch(), seed=7)
    searcher = make_searcher(cfg.es, problem, genome.initial_vector())
    for gen in (1, 2, 3):
        problem.start_generation((0, 2, gen))
        searcher.step()
    assert events == ["submit", "collect"] * 3
    assert torch.isfinite(problem.last_eval.fitness).all()
