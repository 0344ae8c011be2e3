"""Adding a task family is one folder: a family defined in this file, named by its import path in
YAML, runs through the real ``es-l2l run`` with ES (on a real Ray worker) and with BPTT, and
``compare`` puts the two side by side, with no file under es_l2l/ edited.

The family: two groups of input neurons fire Poisson spikes at random rates; at the last step the
readout must give the total spike count of both groups (scaled). The baseline predicts the mean.
"""

from __future__ import annotations

import pytest
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import yaml
from mlflow.tracking import MlflowClient
from pydantic import Field

from es_l2l.families.base import HeldOut, Objective, TaskFamily
from es_l2l.schema import TaskSection
from es_l2l.seeds import STREAM_TEST, SeedKey, generator
from tests.test_reporting import load_table

ROOT = Path(__file__).resolve().parents[2]
NAME = "tests.families.test_plugin_family:FAMILY"


class SumConfig(TaskSection):
    family: Literal["tests.families.test_plugin_family:FAMILY"] = NAME
    batch_size: int = Field(8, ge=1)
    neurons_per_group: int = Field(4, ge=1)
    steps: int = Field(20, ge=2)
    max_rate_hz: float = Field(200.0, gt=0)


class SumEval(NamedTuple):
    fitness: torch.Tensor  # (P,)
    mse: torch.Tensor  # (P,)
    rate_hz: torch.Tensor  # (P,)
    neuron_steps: int

    def summary(self) -> dict[str, float]:
        return {"train_mse_mean": float(self.mse.mean()), "rate_hz": float(self.rate_hz.mean())}


def sample(task: SumConfig, key: SeedKey, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input spikes (B, T, 2n) and targets (B,): the total count over both groups, over its scale."""
    gen = generator(*key.keys())
    rates = torch.rand(batch, 2, generator=gen) * task.max_rate_hz * 1e-3  # spikes per ms
    p = rates.repeat_interleave(task.neurons_per_group, dim=1)  # (B, 2n)
    x = (torch.rand(batch, task.steps, p.shape[1], generator=gen) < p[:, None, :]).float()
    scale = task.steps * task.neurons_per_group * task.max_rate_hz * 1e-3
    return x, x.sum(dim=(1, 2)) / scale


class SumFamily(TaskFamily):
    name = NAME
    config = SumConfig
    objective = Objective("val_mse", maximize=False, label="val MSE")
    gradient_loss_name = "MSE"

    def io_sizes(self, task):
        return 2 * task.neurons_per_group, 1

    def evaluate(self, task, ctx, params, key, batch):
        x, target = sample(task, key, batch)
        out = ctx.simulate(params, x, readout_steps=torch.tensor([task.steps - 1]))  # any model kind
        mse = (out.y[:, :, 0, 0] - target).pow(2).mean(dim=1)
        pop, b, n = out.spike_count.shape
        rate, _ = ctx.rate_terms(out)
        return SumEval(-mse, mse, rate, pop * b * n * out.n_steps)

    def validation_metrics(self, ev):
        return {"val_mse": float(ev.mse[0])}

    def report(self, task, ctx, genome, initial, trained):
        key = SeedKey(ctx.seed, STREAM_TEST)
        ev = self.evaluate(task, ctx, genome.params(trained.unsqueeze(0)), key, ctx.validation_tasks)
        _, target = sample(task, key, ctx.validation_tasks)
        mse, baseline = float(ev.mse[0]), float((target - target.mean()).pow(2).mean())
        verdict = f"spike-sum family: test MSE {mse:.4f} against the mean's {baseline:.4f}"
        # data only: the shell prints the verdict, logs the metrics, tags and held_out.json
        return HeldOut(rows={"network": {"mse": mse}, "mean": {"mse": baseline}}, score=mse, verdict=verdict,
                       beats={"mean": mse < baseline}, metrics={"withheld/model/mse": mse, "withheld/mean/mse": baseline})


FAMILY = SumFamily()


def config(outer: str, tmp: Path) -> Path:
    tree = {
        "name": f"spike-sum-{outer}",
        "outer": outer,
        "model": {"n_lif": 6, "n_alif": 6},
        "task": {"family": NAME},
        "es": {"popsize": 8},
        "bptt": {"lr": 0.01},
        "run": {"generations": 3, "workers": 1, "validate_every": 1, "validation_tasks": 16},
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "artifact_root": str(tmp / "mlruns")},
    }
    path = tmp / f"{outer}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def es_l2l(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "es_l2l.cli", *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=900)


def test_a_family_from_outside_the_package_runs_es_and_bptt_through_the_cli(tmp_path):
    for outer in ("es", "bptt"):
        proc = es_l2l(tmp_path, "run", str(config(outer, tmp_path)))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "spike-sum family: test MSE" in proc.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.data.params["outer"] for r in runs) == ["bptt", "es"]
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "val/mse")
        assert [m.step for m in history] == [0, 1, 2, 3]  # validated every generation / step
        assert {"withheld/model/mse", "withheld/mean/mse"} <= set(run.data.metrics)
        assert run.data.tags["beats.mean"] in ("true", "false") and "spike-sum family" in run.data.tags["mlflow.note.content"]
        table = load_table(client, run)
        assert list(table["predictor"]) == ["network", "mean"] and table["mse"][0] == run.data.metrics["withheld/model/mse"]
        assert run.data.params["task.family"] == NAME


@pytest.mark.slow  # 25-50 s through real services; .ci/run runs it
def test_compare_runs_the_family_with_its_generic_summary(tmp_path):
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump({"configs": [str(config("es", tmp_path)), str(config("bptt", tmp_path))],
                                                       "budget_neuron_steps": 2e6}))
    proc = es_l2l(tmp_path, "compare", str(tmp_path / "cmp.yaml"), "--set", "run.workers=0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lowest test MSE" in proc.stdout and "spike-sum-es (es" in proc.stdout and "spike-sum-bptt (bptt" in proc.stdout


def test_the_family_validates_its_own_section():
    from es_l2l.config import ConfigError, build_config

    cfg = build_config({"task": {"family": NAME, "steps": 5}})
    assert isinstance(cfg.task, SumConfig) and cfg.task.steps == 5 and cfg.name == f"{NAME}-es"
    try:
        build_config({"task": {"family": NAME, "colour": 1}})
    except ConfigError as exc:
        assert str(exc).startswith("unknown config key 'task.colour'; allowed keys in task: family, batch_size")
    else:
        raise AssertionError("an unknown key in the family's section must be an error")
