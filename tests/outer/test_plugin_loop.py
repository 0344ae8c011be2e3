"""Adding an outer loop is one class: a random search defined in this file, named by its import path
in YAML (``outer: tests.outer.test_plugin_loop:RANDOM_SEARCH``), runs through the real ``es-l2l run``
and ``es-l2l compare`` (against plain ES), with no file under es_l2l/ edited.

The loop: each generation samples ``es.popsize - 1`` members around the centre (Gaussian,
``es.stdev_init``), scores them with the centre on the generation's tasks, and moves the centre to
the best of them (the centre itself when nothing beats it). It reads the ``es`` section, which it
declares, and keeps its state (the centre) as plain data, so it declares itself resumable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from mlflow.tracking import MlflowClient

from es_l2l.outer.base import LoopSetting, OuterLoop, Search
from es_l2l.seeds import STREAM_SEARCH, STREAM_TRAIN, generator

ROOT = Path(__file__).resolve().parents[2]
NAME = "tests.outer.test_plugin_loop:RANDOM_SEARCH"


class RandomRun(Search):
    def __init__(self, es, ctx, inputs):
        self.popsize, self.stdev, self.seed = es.popsize, es.stdev_init, ctx.seed
        self.evaluator = inputs.evaluator
        self.centre_ = inputs.genome.initial_vector().clone()
        self.moves = 0

    def step(self, generation: int) -> dict:
        noise = torch.randn(self.popsize - 1, len(self.centre_), generator=generator(self.seed, STREAM_SEARCH, generation))
        members = torch.cat([self.centre_.unsqueeze(0), self.centre_ + self.stdev * noise])
        ev = self.evaluator(members, (self.seed, STREAM_TRAIN, generation))
        best = int(torch.argmax(ev.fitness))
        self.moves += best != 0
        self.centre_ = members[best].clone()
        return {"fitness_mean": float(ev.fitness.mean()), "fitness_best": float(ev.fitness[best]), **ev.summary(),
                "fitness_centre": float(ev.fitness[0]), "moves": self.moves, "neuron_steps": ev.neuron_steps}

    def centre(self) -> torch.Tensor:
        return self.centre_.clone()

    def state(self) -> dict:
        return {"centre": self.centre_.clone(), "moves": self.moves}

    def restore(self, state: dict) -> None:
        self.centre_, self.moves = state["centre"].clone(), int(state["moves"])


class RandomSearch(OuterLoop):
    name = "random search"
    sections = ("es",)  # reads es.popsize and es.stdev_init
    uses_evaluator = True
    resumable = True
    popsize_key = "es.popsize"

    def describe(self, setting: LoopSetting) -> str:
        es = setting.sections["es"]
        return f"random search P={es.popsize} stdev={es.stdev_init:g}"

    def popsize(self, setting: LoopSetting) -> int:
        return setting.sections["es"].popsize

    def start(self, section, ctx, inputs) -> Search:
        return RandomRun(inputs.sections["es"], ctx, inputs)


RANDOM_SEARCH = RandomSearch()


def config(tmp: Path, outer: str, name: str) -> Path:
    tree = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    tree.update(name=name, outer=outer)
    tree["run"].update(workers=0, threads=1, generations=4, validate_every=2)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def es_l2l(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "es_l2l.cli", *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=900)


def test_the_loop_steps_through_the_driver_and_resumes_exactly():
    from es_l2l.config import build_config
    from es_l2l.cluster.evaluators import LocalEvaluator
    from es_l2l.genome import build_genome
    from es_l2l.outer.driver import drive

    tree = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    tree.update(outer=NAME)
    tree["run"].update(workers=0, generations=5, validate_every=5, checkpoint_every=2, validation_tasks=8)
    tree["task"].update(batch_size=4)
    cfg = build_config(tree)
    genome = build_genome(cfg)
    states = {}
    full = drive(cfg, genome, LocalEvaluator(cfg, genome), [lambda s: states.update({s["generation"]: s.get("resume_state")})])
    assert [h["generation"] for h in full.history] == [0, 1, 2, 3, 4, 5]
    assert all(h["fitness_best"] >= h["fitness_centre"] for h in full.history[1:])  # it keeps the best
    assert full.history[-1]["moves"] > 0 and not torch.equal(full.final, full.initial)
    assert states[2] is not None and states[4] is not None and states[5] is None  # the driver's resume cadence
    seen = []
    resumed = drive(cfg, genome, LocalEvaluator(cfg, genome), [seen.append], resume=states[2])
    assert [s["generation"] for s in seen] == [3, 4, 5]
    assert torch.equal(resumed.final, full.final)
    assert [s["fitness_mean"] for s in seen] == [h["fitness_mean"] for h in full.history[3:]]


def test_a_loop_from_outside_the_package_runs_and_compares_through_the_cli(tmp_path):
    proc = es_l2l(tmp_path, "run", str(config(tmp_path, NAME, "random-smoke")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "random search P=32" in proc.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED" and run.data.params["outer"] == NAME
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/mse_late")] == [0, 2, 4]

    plan = {"configs": [str(config(tmp_path, "es", "es-smoke")), str(config(tmp_path, NAME, "random-smoke"))],
            "budget_neuron_steps": 4e6}
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(plan))
    proc = es_l2l(tmp_path, "compare", str(tmp_path / "cmp.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = " ".join(proc.stdout.split())  # the terminal's line breaks undone
    assert "lowest test MSE" in text and "es-smoke (es, " in text and f"random-smoke ({NAME}, " in text  # the verdict ranks both
    assert "terms: outer loop differ: es-smoke: es (searches w_in" in text and "random-smoke: random search (searches w_in" in text


def test_a_wrong_path_is_one_line():
    from es_l2l.config import ConfigError, build_config

    for outer, words in (("tests.outer.nothing_here:LOOP", "cannot be imported"), ("tests.outer.test_plugin_loop:NAME", "is not an OuterLoop")):
        try:
            build_config({"outer": outer})
        except ConfigError as exc:
            assert words in str(exc) and "\n" not in str(exc)
        else:
            raise AssertionError(f"outer={outer} must be refused")
