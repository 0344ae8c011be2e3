"""The teacher family's input codes (poisson, regular, analog), the old name 'rate' refused, and the
shape recipe's budget in steps."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from es_l2l.config import ConfigError, build_config, load_config
from es_l2l.families.teacher import tasks as teacher
from es_l2l.families.teacher.config import TeacherConfig
from es_l2l.seeds import generator

ROOT = Path(__file__).resolve().parents[3]
SHAPE_CONFIGS = ("teacher_shape.yaml", "teacher_shape_es.yaml", "teacher_bayes.yaml")


def cli(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "es_l2l.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def store(tmp: Path) -> list[str]:
    return [f"--set=tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"--set=tracking.artifact_root={tmp / 'mlruns'}"]


def test_the_old_name_rate_fails_in_one_line_naming_analog():
    with pytest.raises(ConfigError, match=r"task\.encoding 'rate' is now called 'analog'") as err:
        build_config(None, ["task.encoding=rate"])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"task\.encoding: analog"):
        build_config({"task": {"family": "teacher", "encoding": "rate"}})
    for name in ("poisson", "regular", "analog"):
        assert build_config(None, [f"task.encoding={name}"]).task.encoding == name


@pytest.mark.parametrize("where", ["config", "set"])
def test_the_old_name_exits_2_with_one_sentence_and_no_run(tmp_path, where):
    config = tmp_path / "old.yaml"
    config.write_text("task:\n  family: teacher\n" + ("  encoding: rate\n" if where == "config" else ""))
    extra = ["--set", "task.encoding=rate"] if where == "set" else []
    proc = cli(tmp_path, "run", str(config), *store(tmp_path), *extra)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "'rate' is now called 'analog'" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_analog_is_the_spike_probability_itself():
    cfg = TeacherConfig(encoding="analog", n_trials=3, trial_ms=4, readout_ms=2)
    analog = teacher.sample_tasks(cfg, generator(5, 1), 2)
    poisson = teacher.sample_tasks(cfg.model_copy(update={"encoding": "poisson"}), generator(5, 1), 2)
    assert torch.equal(analog.y, poisson.y) and torch.equal(analog.x, poisson.x)
    prob = teacher.trial_probabilities(cfg, analog.x, analog.y).repeat_interleave(4, dim=1)
    assert torch.equal(analog.spikes, prob.to(torch.float32))
    assert 0.0 < float(analog.spikes.max()) <= 0.2  # an analog current in [0, max_rate * 1 ms], not 0/1 spikes
    assert not torch.equal(analog.spikes, analog.spikes.round())


def test_regular_spikes_on_a_hand_computed_example():
    # one neuron, two trials of 8 steps: p = 0.25 then 0.5; a second neuron at 0.125 and 0 (silent)
    prob = torch.tensor([[0.25] * 8 + [0.5] * 8, [0.125] * 8 + [0.0] * 8]).T.unsqueeze(0)  # (1, 16, 2)
    spikes = teacher.regular_spikes(prob, 8)
    assert spikes.dtype == torch.float32 and spikes.shape == (1, 16, 2)
    # floor(0.5 + (k+1) p) > floor(0.5 + k p), k counted from 0 in each trial:
    # p = 0.25: k = 1, 5; p = 0.5: k = 0, 2, 4, 6 (steps 8, 10, 12, 14); p = 0.125: k = 3 (8 * 0.125 = 1)
    assert torch.nonzero(spikes[0, :, 0]).flatten().tolist() == [1, 5, 8, 10, 12, 14]
    assert torch.nonzero(spikes[0, :, 1]).flatten().tolist() == [3]
    # 20-step trials at 200 Hz (p = 0.2): every 5 ms from the 3rd; 2.5 spikes a trial round up to 3
    assert torch.nonzero(teacher.regular_spikes(torch.full((1, 20, 1), 0.2), 20)[0, :, 0]).flatten().tolist() == [2, 7, 12, 17]
    assert teacher.regular_spikes(torch.full((1, 20, 1), 0.125), 20).sum() == 3


def test_regular_tasks_spike_at_the_coded_rate_the_same_in_every_draw():
    cfg = TeacherConfig(encoding="regular", n_trials=4, trial_ms=20)
    a = teacher.sample_tasks(cfg, generator(5, 1), 3)
    poisson = teacher.sample_tasks(cfg.model_copy(update={"encoding": "poisson"}), generator(5, 1), 3)
    assert torch.equal(a.y, poisson.y) and torch.equal(a.x, poisson.x)
    prob = teacher.trial_probabilities(cfg, a.x, a.y).to(torch.float64)  # (B, n_trials, n_in)
    counts = a.spikes.reshape(3, 4, 20, -1).sum(2)
    assert torch.equal(counts, torch.floor(0.5 + 20 * prob).to(torch.float32))
    assert set(a.spikes.unique().tolist()) <= {0.0, 1.0} and counts.sum() > 0


@pytest.mark.parametrize("name", SHAPE_CONFIGS)
def test_the_shape_recipes_are_spiking_and_budgeted_in_steps(name):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.task.encoding == "poisson"
    assert cfg.run.max_seconds is None and cfg.run.max_neuron_steps is None and cfg.run.generations <= 10_000


@pytest.mark.slow  # run by .ci/run; the shipped recipe's step budget is checked in the default run (its config test)
def test_a_steps_budgeted_shape_run_stops_at_its_step_count(tmp_path):
    """The shipped recipe, shrunk: no wall-clock limit, so it makes exactly run.generations Adam steps."""
    small = ["--set=model.n_lif=4", "--set=model.n_alif=4", "--set=task.n_trials=4", "--set=task.trial_ms=6",
             "--set=task.readout_ms=3", "--set=bptt.batch_size=4", "--set=run.generations=7",
             "--set=run.validate_every=3", "--set=run.validation_tasks=8", "--set=run.threads=1"]
    proc = cli(tmp_path, "run", str(ROOT / "configs" / "teacher_shape.yaml"), *store(tmp_path), *small, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/grad_norm"))
    assert steps == list(range(1, 8)), steps  # Adam steps count from 1


def test_a_checkpoint_written_with_the_old_name_loads_as_analog(tmp_path):
    from es_l2l.tracking.checkpoint import LEGACY_FORMAT, load_checkpoint
    from es_l2l.genome import build_genome
    from es_l2l.tracking.redact import safe_config

    cfg = build_config(None, ["task.encoding=analog", "model.n_lif=3", "model.n_alif=2"])
    genome = build_genome(cfg)
    vec = genome.initial_vector()
    config = safe_config(cfg)
    config["task"]["encoding"] = "rate"  # as es-l2l wrote it before the rename, in the torch.save file of then
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": LEGACY_FORMAT, "config": config, "genomes": {"best": vec, "final": vec, "initial": vec}, "meta": {}}, path)
    loaded, _, genomes, _ = load_checkpoint(path)
    assert loaded.task.encoding == "analog" and torch.equal(genomes["best"], vec)
