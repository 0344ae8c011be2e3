"""Frequent target networks (task.frequent_targets): off is today's sampling bit for bit; on, the
training stream mixes in the K fixed networks at the configured share, and validation and the
fresh test group never see them."""

import pytest
import torch

from es_l2l.config import ConfigError, build_config
from es_l2l.families.teacher import tasks as teacher
from es_l2l.families.teacher.evaluate import task_batch
from es_l2l.seeds import STREAM_TEST, STREAM_TRAIN, STREAM_VALIDATION, generator

SMALL = ["task.n_trials=6", "task.trial_ms=4", "task.readout_ms=2", "task.neurons_per_variable=4"]


def old_sample_tasks(cfg, gen, batch, centered=False):
    """The sampler as it was before the option (a copy of its draws, in their order)."""
    nets = teacher.sample_target_nets(cfg, gen, batch)
    x = (torch.rand(batch, cfg.n_trials, 2, generator=gen) * 2 - 1) * cfg.input_range
    y = teacher.evaluate_target(cfg, nets, x)
    if centered:
        y = y - y.mean(dim=1, keepdim=True)
    prob = teacher.trial_probabilities(cfg, x, y).repeat_interleave(cfg.trial_ms, dim=1)
    spikes = (torch.rand(prob.shape, generator=gen) < prob).to(torch.float32)
    return x, y, spikes


def fixed_outputs(cfg, x: torch.Tensor) -> torch.Tensor:
    """(K, B, n_trials): each fixed network's targets on every episode's inputs."""
    nets = teacher.frequent_nets(cfg)
    return torch.stack([teacher.evaluate_target(cfg, teacher.TargetNets(*(f[k].expand(x.shape[0], *f.shape[1:]) for f in nets)), x)
                        for k in range(cfg.frequent_targets)])


@pytest.mark.parametrize("keys", [(0, STREAM_TRAIN, 3), (4, STREAM_TRAIN, 2, 1), (0, STREAM_VALIDATION), (1, STREAM_TEST)])
@pytest.mark.parametrize("curriculum", [0, 5])
def test_off_gives_todays_tasks_and_generator_consumption(keys, curriculum):
    cfg = build_config(None, SMALL + [f"task.shape_curriculum={curriculum}"])
    assert cfg.task.frequent_targets == 0
    gen_new, gen_old = generator(*keys), generator(*keys)
    new = teacher.sample_tasks(cfg.task, gen_new, 5, centered=curriculum > 0 and keys[1] == STREAM_TRAIN,
                               targets=teacher.TARGETS_TRAINING if keys[1] == STREAM_TRAIN else teacher.TARGETS_FRESH)
    x, y, spikes = old_sample_tasks(cfg.task, gen_old, 5, centered=curriculum > 0 and keys[1] == STREAM_TRAIN)
    assert torch.equal(new.x, x) and torch.equal(new.y, y) and torch.equal(new.spikes, spikes)
    assert torch.equal(gen_new.get_state(), gen_old.get_state())  # the same draws, no more
    assert torch.equal(task_batch(cfg.task, keys, 5).y, new.y) and (new.which == -1).all()


def test_training_stream_mixes_in_the_fixed_networks_at_the_share():
    cfg = build_config(None, SMALL + ["task.frequent_targets=4", "task.frequent_share=0.4"])
    which, frequent_ok, fresh_ok = [], [], []
    for step in range(1, 41):
        tasks = teacher.sample_tasks(cfg.task, generator(0, STREAM_TRAIN, step), 100, spikes=False,
                                     targets=teacher.TARGETS_TRAINING)
        fixed = fixed_outputs(cfg.task, tasks.x)  # (K, B, n)
        freq = tasks.which >= 0
        # a frequent episode's targets are its fixed network's exactly; a fresh one's are none of them
        frequent_ok.append(torch.equal(tasks.y[freq], fixed[tasks.which[freq], torch.arange(100)[freq]]))
        fresh_ok.append(not (fixed[:, ~freq] == tasks.y[~freq]).all(dim=-1).any())
        which.append(tasks.which)
    which = torch.cat(which)
    assert all(frequent_ok) and all(fresh_ok)
    assert abs(float((which >= 0).float().mean()) - 0.4) < 0.04  # 4000 episodes: sd 0.008
    for k in range(4):
        assert abs(float((which == k).float().mean()) - 0.1) < 0.03
    assert which.min() == -1 and which.max() == 3
    # inputs are always fresh, and the same as without the option (the mixing draws come after x)
    off = build_config(None, SMALL)
    assert torch.equal(task_batch(cfg.task, (0, STREAM_TRAIN, 7), 8).x, task_batch(off.task, (0, STREAM_TRAIN, 7), 8).x)
    assert task_batch(cfg.task, (0, STREAM_TRAIN, 7), 8).spikes.shape[1] == 6 * 4


def test_fixed_networks_depend_on_frequent_seed_only():
    a = build_config(None, SMALL + ["task.frequent_targets=3", "run.seed=0", "run.validation_tasks=6"])
    b = build_config(None, SMALL + ["task.frequent_targets=3", "run.seed=9", "run.validation_tasks=6"])
    c = build_config(None, SMALL + ["task.frequent_targets=3", "task.frequent_seed=1", "run.validation_tasks=6"])
    na, nb, nc = (teacher.frequent_nets(x.task) for x in (a, b, c))
    assert all(torch.equal(u, v) for u, v in zip(na, nb))
    assert not torch.equal(na.w1, nc.w1) and na.w1.shape == (3, a.task.hidden_units, 2)
    assert na.w1.abs().max() <= a.task.weight_range


def test_validation_and_fresh_test_tasks_never_use_the_fixed_networks():
    cfg = build_config(None, SMALL + ["task.frequent_targets=4", "task.frequent_share=0.9"])
    off = build_config(None, SMALL)
    for keys in ((0, STREAM_VALIDATION), (0, STREAM_TEST)):
        on, plain = task_batch(cfg.task, keys, 64), task_batch(off.task, keys, 64)
        assert (on.which == -1).all()
        assert torch.equal(on.y, plain.y) and torch.equal(on.spikes, plain.spikes)
        assert not (fixed_outputs(cfg.task, on.x) == on.y).all(dim=-1).any()


def test_held_out_frequent_group_has_each_network_equally_often_on_the_fresh_groups_inputs():
    cfg = build_config(None, SMALL + ["task.frequent_targets=4"])
    fresh = task_batch(cfg.task, (0, STREAM_TEST), 16)
    freq = task_batch(cfg.task, (0, STREAM_TEST), 16, targets=teacher.TARGETS_FREQUENT)
    assert freq.which.tolist() == [0, 1, 2, 3] * 4
    assert torch.equal(freq.x, fresh.x)
    assert torch.equal(freq.y, fixed_outputs(cfg.task, freq.x)[freq.which, torch.arange(16)])
    with pytest.raises(ValueError, match="frequent_targets > 0"):
        task_batch(build_config(None, SMALL).task, (0, STREAM_TEST), 4, targets=teacher.TARGETS_FREQUENT)


@pytest.mark.parametrize(
    "sets, pattern",
    [
        (["task.frequent_targets=4", "task.frequent_share=1.0"], r"'task\.frequent_share'"),
        (["task.frequent_share=-0.1"], r"'task\.frequent_share'"),
        (["task.frequent_targets=-1"], r"'task\.frequent_targets'"),
        (["task.frequent_seed=-1"], r"'task\.frequent_seed'"),
        (["task.frequent_targets=3"], r"run\.validation_tasks \(128\) must be a multiple of task\.frequent_targets \(3\)"),
    ],
)
def test_options_are_checked(sets, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_config(None, sets)


def test_share_zero_is_the_control_and_validates():
    cfg = build_config(None, SMALL + ["task.frequent_targets=4", "task.frequent_share=0"])
    tasks = teacher.sample_tasks(cfg.task, generator(0, STREAM_TRAIN, 1), 50, spikes=False, targets=teacher.TARGETS_TRAINING)
    assert (tasks.which == -1).all()
