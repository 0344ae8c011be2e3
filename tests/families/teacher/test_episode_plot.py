"""The typical-episode figure: one episode's inputs, spikes (LIF and ALIF) and predictions."""

import torch

from es_l2l.config import build_config
from es_l2l.context import RunContext
from es_l2l.families.teacher import tasks as teacher
from es_l2l.families.teacher.episode_plot import episode_trace, plot_episode
from es_l2l.genome import build_genome
from es_l2l.seeds import generator


def test_episode_trace_and_png(tmp_path):
    cfg = build_config(None, ["task.n_trials=4", "task.trial_ms=8", "task.readout_ms=3", "model.n_lif=3", "model.n_alif=2"])
    genome = build_genome(cfg)
    tasks = teacher.sample_tasks(cfg.task, generator(0, 1), 2)
    trace = episode_trace(cfg.task, RunContext.of(cfg), genome.params(genome.initial_vector().unsqueeze(0)), tasks, 1)
    assert trace["spikes"].shape == (32, 5) and trace["input_spikes"].shape == (32, teacher.n_inputs(cfg.task))
    assert trace["alif"].tolist() == [False, False, False, True, True]
    assert torch.equal(trace["target"], tasks.y[1])
    # the prediction is the readout averaged over each trial's last readout_ms steps
    assert torch.allclose(trace["prediction"][0], trace["readout"][5:8].mean())
    png = plot_episode(cfg.task, trace, tmp_path / "episode.png", "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    analog_cfg = build_config(None, ["task.n_trials=4", "task.trial_ms=8", "task.readout_ms=3", "model.n_lif=3", "model.n_alif=2",
                                   "task.encoding=analog", "task.show_previous_input=true"])
    analog_genome = build_genome(analog_cfg)
    analog_tasks = teacher.sample_tasks(analog_cfg.task, generator(0, 1), 2)
    analog_trace = episode_trace(analog_cfg.task, RunContext.of(analog_cfg), analog_genome.params(analog_genome.initial_vector().unsqueeze(0)), analog_tasks, 0)
    png = plot_episode(analog_cfg.task, analog_trace, tmp_path / "analog.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
