"""Teacher family: reproducible sampling, trial structure, and baselines on hand-made cases."""

import pytest
import torch

from es_l2l.families.teacher.config import TeacherConfig
from es_l2l.families.teacher import tasks as teacher
from es_l2l.seeds import derive_seed, generator
from es_l2l.families.teacher.baselines import (
    baseline_mse_per_trial,
    linear_share,
    predict_online_least_squares,
    predict_oracle_linear,
    predict_running_mean,
    within_share,
)

CFG = TeacherConfig(n_trials=8, trial_ms=6, readout_ms=2, neurons_per_variable=5)


def test_same_seed_same_tasks_other_seed_different():
    a = teacher.sample_tasks(CFG, generator(7, 2, 3), 4)
    b = teacher.sample_tasks(CFG, generator(7, 2, 3), 4)
    c = teacher.sample_tasks(CFG, generator(7, 2, 4), 4)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a.y, c.y) and not torch.equal(a.spikes, c.spikes)
    assert derive_seed(7, 2, 3) == derive_seed(7, 2, 3) != derive_seed(7, 3, 2)


def test_shapes_and_trial_structure():
    tasks = teacher.sample_tasks(CFG, generator(0), 3)
    n_in = teacher.n_inputs(CFG)
    assert tasks.spikes.shape == (3, CFG.n_trials * CFG.trial_ms, n_in)
    assert tasks.readout_steps.tolist()[:4] == [4, 5, 10, 11]  # last 2 steps of each 6-step trial
    assert tasks.x.abs().max() <= CFG.input_range
    # The previous-target population is silent during the first trial only.
    y_cols = slice(2 * CFG.neurons_per_variable, n_in)
    assert tasks.spikes[:, : CFG.trial_ms, y_cols].sum() == 0


def test_targets_follow_the_two_layer_sigmoid_network():
    nets = teacher.sample_target_nets(CFG, generator(1), 2)
    x = torch.tensor([[[0.5, -1.0]], [[2.0, 0.0]]])
    got = teacher.evaluate_target(CFG, nets, x)
    for b in range(2):
        h = torch.sigmoid(nets.w1[b] @ x[b, 0] + nets.c1[b])
        expected = CFG.output_scale * (nets.v[b] @ h + nets.d[b])
        assert got[b, 0].item() == pytest.approx(expected.item(), rel=1e-5)
    assert nets.w1.abs().max() <= CFG.weight_range and nets.d.abs().max() <= CFG.weight_range


def test_population_code_peaks_at_the_value():
    p = teacher.population_code(torch.tensor([0.0, 1.0]), -1.0, 1.0, 5, max_rate_hz=200)
    assert p.argmax(-1).tolist() == [2, 4] and p.max().item() == pytest.approx(0.2)


def test_running_mean_by_hand():
    y = torch.tensor([[1.0, 3.0, 2.0, 6.0]])
    assert predict_running_mean(y, prior=0.5).tolist() == [[0.5, 1.0, 2.0, 2.0]]


def test_linear_baselines_recover_a_linear_function():
    x = torch.rand(2, 10, 2, generator=generator(3)) * 2 - 1
    y = 0.3 + 1.5 * x[..., 0] - 0.7 * x[..., 1]
    torch.testing.assert_close(predict_oracle_linear(x, y), y)
    online = predict_online_least_squares(x, y, prior=0.0, ridge=1e-9)
    torch.testing.assert_close(online[:, 4:], y[:, 4:], atol=1e-4, rtol=1e-4)  # exact once 3 points are seen
    assert online[0, 0].item() == 0.0  # the prior before any target


def test_family_statistics_show_real_shape():
    cfg = TeacherConfig()
    tasks = teacher.sample_tasks(cfg, generator(0), 512)
    # Defaults give G real shape: a good part of the variance is within tasks, not only offsets,
    # and a linear fit does not explain all of it.
    assert within_share(tasks) > 0.15
    assert 0.5 < linear_share(tasks) < 0.99
    # the baselines on 128 episodes, as many as the held-out report scores (backprop per task is the cost)
    curves = baseline_mse_per_trial(cfg, teacher.sample_tasks(cfg, generator(0), 128), seed=0)
    late = {k: v[cfg.n_trials // 2 :].mean().item() for k, v in curves.items()}
    assert late["oracle linear"] < late["online least squares"] < late["running mean"] < late["family mean"]
    # Backprop on the target's own architecture learns the shape itself: the strongest baseline.
    assert late["target-architecture backprop"] < 0.5 * late["oracle linear"]


def test_tasks_without_spikes_have_the_same_inputs_and_targets():
    full = teacher.sample_tasks(CFG, generator(5, 1), 3)
    bare = teacher.sample_tasks(CFG, generator(5, 1), 3, spikes=False)
    assert torch.equal(full.x, bare.x) and torch.equal(full.y, bare.y)
    assert bare.spikes.shape == (3, 0, teacher.n_inputs(CFG))


def test_show_previous_input_adds_the_previous_trials_x_after_the_target():
    cfg = CFG.model_copy(update={"show_previous_input": True, "max_rate_hz": 1000.0})
    x = torch.tensor([[[-6.0, 6.0], [6.0, -6.0], [0.0, 0.0]]])
    y = torch.zeros(1, 3)
    prob = teacher.trial_probabilities(cfg, x, y)
    n = cfg.neurons_per_variable
    assert teacher.n_inputs(cfg) == 5 * n == prob.shape[-1]
    assert torch.equal(prob[:, :, : 3 * n], teacher.trial_probabilities(CFG.model_copy(update={"max_rate_hz": 1000.0}), x, y))
    prev = prob[0, :, 3 * n :]
    assert prev[0].sum() == 0  # silent in the first trial
    assert torch.equal(prev[1:], prob[0, :-1, : 2 * n])  # trial i shows trial i-1's x1, x2


def test_late_weight_weights_the_second_half():
    from es_l2l.families.teacher.evaluate import weighted_mse

    per_trial = torch.tensor([[1.0, 1.0, 4.0, 4.0]])
    assert torch.allclose(weighted_mse(per_trial, 1.0), torch.tensor([2.5]))
    # weights (1, 1, 3, 3) / 2: (1 + 1 + 12 + 12) / 2 / 4
    assert torch.allclose(weighted_mse(per_trial, 3.0), torch.tensor([3.25]))


def test_analog_encoding_is_the_spike_probability_itself():
    cfg = CFG.model_copy(update={"encoding": "analog"})
    analog = teacher.sample_tasks(cfg, generator(5, 1), 3)
    poisson = teacher.sample_tasks(CFG, generator(5, 1), 3)
    assert torch.equal(analog.y, poisson.y)
    prob = teacher.trial_probabilities(cfg, analog.x, analog.y).repeat_interleave(cfg.trial_ms, dim=1)
    assert torch.equal(analog.spikes, prob.to(torch.float32))


def test_analog_inputs_get_the_kernel_gradient_autograd_gets():
    from es_l2l.config import build_config
    from es_l2l.genome import build_genome
    from es_l2l.outer.shell import gradient_trainer

    grads = []
    for backend in ("kernel", "autograd"):
        cfg = build_config(None, ["outer=bptt", "task.encoding=analog", "task.n_trials=3", "task.trial_ms=8",
                                  "task.readout_ms=3", f"bptt.backend={backend}", "bptt.batch_size=2"])
        genome = build_genome(cfg)
        trainer = gradient_trainer(cfg, genome)
        loss, _, _ = trainer.loss_and_eval((0, 2, 1))
        loss.backward()
        grads.append(torch.cat([leaf.grad.flatten() for leaf in trainer.leaves.values()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6 * float(grads[1].abs().max()))


def test_shape_curriculum_centres_training_tasks_only_while_it_lasts():
    from es_l2l.config import build_config
    from es_l2l.families.teacher import FAMILY
    from es_l2l.families.teacher.evaluate import task_batch
    from es_l2l.seeds import STREAM_TRAIN, STREAM_VALIDATION

    cfg = build_config(None, ["task.shape_curriculum=5", "task.n_trials=6", "task.trial_ms=4", "task.readout_ms=2"])
    early = task_batch(cfg.task, (0, STREAM_TRAIN, 5), 3)
    late = task_batch(cfg.task, (0, STREAM_TRAIN, 6), 3)
    plain = teacher.sample_tasks(cfg.task, generator(0, STREAM_TRAIN, 5), 3)
    assert torch.allclose(early.y.mean(dim=1), torch.zeros(3), atol=1e-6)
    assert torch.allclose(early.y, plain.y - plain.y.mean(dim=1, keepdim=True)) and torch.equal(early.x, plain.x)
    assert torch.equal(late.y, teacher.sample_tasks(cfg.task, generator(0, STREAM_TRAIN, 6), 3).y)
    val = task_batch(cfg.task, (0, STREAM_VALIDATION), 3)
    assert torch.equal(val.y, teacher.sample_tasks(cfg.task, generator(0, STREAM_VALIDATION), 3).y)
    assert FAMILY.status_extras(cfg.task, 5) == {"shape_curriculum": 1.0} and FAMILY.status_extras(cfg.task, 6) == {"shape_curriculum": 0.0}
