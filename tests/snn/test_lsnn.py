"""The LSNN equations, pinned by a hand-computed trace and by batched-vs-loop equality."""

import math

import pytest
import torch

from es_l2l.snn import LSNNParams, lsnn_step, pseudo_derivative, rollout, spike, zero_state

HALF = 1.0 / math.log(2.0)  # tau with exp(-1 / tau) = 0.5


def three_neurons() -> LSNNParams:
    """Neuron 0: LIF driven by input; 1: ALIF (beta = 3) with the same drive; 2: LIF fed only by 0."""
    w_rec = torch.zeros(1, 3, 3)
    w_rec[0, 0, 2] = 2.0  # pre 0 -> post 2
    return LSNNParams(
        w_in=torch.tensor([[[2.4, 2.4, 0.0]]]),
        w_rec=w_rec,
        w_out=torch.ones(1, 3, 1),
        b_out=torch.zeros(1, 1),
        alpha=torch.full((1, 3), 0.5),
        rho=torch.full((1, 3), 0.5),
        b0=torch.ones(1, 3),
        beta=torch.tensor([[0.0, 3.0, 0.0]]),
        kappa=torch.full((1, 1), 0.5),
    )


def test_hand_computed_trace():
    """Worked by hand from DESIGN.md with alpha = rho = 0.5, b0 = 1, n_ref = 1, I = 2.4 on neurons 0, 1.

    Neuron 0 (LIF) spikes every other step (the refractory step in between); neuron 1 (ALIF)
    is held back by its threshold rising to 2.5 after each spike and decaying by half per step;
    neuron 2 integrates neuron 0's spikes one step late and fires when v > A strictly.
    """
    params = three_neurons()
    state = zero_state(1, 1, 3)
    x = torch.ones(1, 1)  # one input, always on
    spikes, v, thr1 = [], [], []
    for _ in range(10):
        i_in = (x @ params.w_in[0]).unsqueeze(0)  # (1, 1, 3)
        z, state = lsnn_step(i_in, state, params, n_ref=1)
        spikes.append(z[0, 0].tolist())
        v.append(state.v[0, 0].tolist())
        thr1.append(1.0 + 3.0 * state.b[0, 0, 1].item())
    spike_times = [[t for t in range(10) if spikes[t][j]] for j in range(3)]
    assert spike_times[0] == [1, 3, 5, 7, 9]  # LIF: refractory gap of one step
    assert spike_times[1] == [1, 5, 9]  # ALIF: adaptation stretches the period to 4
    assert spike_times[2] == [5, 9]  # recurrent input, strict threshold (v = A at t=3 is no spike)
    expected_v = {
        0: [1.2, 1.8, 1.1, 1.75, 1.075, 1.7375, 1.06875],
        1: [1.2, 1.8, -0.4, 1.0, 1.7, 2.05, -0.36875, 1.015625, 1.7078125],
        2: [0.0, 0.0, 1.0, 0.5, 1.25, 0.625, 0.3125, 0.15625, 1.078125],
    }
    for j, trace in expected_v.items():
        assert [v[t][j] for t in range(len(trace))] == pytest.approx(trace, abs=1e-6)
    # Threshold of the ALIF neuron: jumps by beta * (1 - rho) = 1.5 one step after a spike, then halves back.
    assert thr1[:9] == pytest.approx([1.0, 1.0, 2.5, 1.75, 1.375, 1.1875, 2.59375, 1.796875, 1.3984375])


def test_refractory_blocks_exactly_n_ref_steps():
    params = three_neurons()._replace(w_in=torch.tensor([[[50.0, 0.0, 0.0]]]))  # drive far above threshold
    for n_ref in (0, 2, 4):
        x = torch.ones(1, 20, 1)
        out = rollout(params, x, n_ref=n_ref, record_spikes=True)
        times = out.spikes[0, 0, :, 0].nonzero().flatten().tolist()
        gaps = {b - a for a, b in zip(times, times[1:])}
        assert gaps == {n_ref + 1}


def random_params(pop, n_in=5, n=12, seed=0) -> LSNNParams:
    g = torch.Generator().manual_seed(seed)
    w_rec = torch.randn(pop, n, n, generator=g) * 0.6
    w_rec = w_rec * (1 - torch.eye(n))
    return LSNNParams(
        w_in=torch.randn(pop, n_in, n, generator=g),
        w_rec=w_rec,
        w_out=torch.randn(pop, n, 2, generator=g),
        b_out=torch.randn(pop, 2, generator=g),
        alpha=torch.exp(-1 / (10 + 20 * torch.rand(pop, n, generator=g))),
        rho=torch.exp(-1 / (100 + 500 * torch.rand(pop, n, generator=g))),
        b0=0.01 + 0.05 * torch.rand(pop, n, generator=g),
        beta=torch.cat([torch.zeros(pop, n // 2), 1.7 * torch.ones(pop, n - n // 2)], 1),
        kappa=torch.full((pop, 1), math.exp(-1 / 20)),
    )


def test_population_batch_equals_loop_over_members():
    pop, batch, steps = 5, 3, 60
    params = random_params(pop)
    x = (torch.rand(batch, steps, 5, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    together = rollout(params, x, n_ref=2, record_spikes=True)
    assert together.spike_count.sum() > 20  # the comparison is not between silent networks
    for p in range(pop):
        alone = rollout(LSNNParams(*[t[p : p + 1] for t in params]), x, n_ref=2, record_spikes=True)
        assert torch.equal(alone.spikes, together.spikes[p : p + 1])
        torch.testing.assert_close(alone.y, together.y[p : p + 1])


def test_per_member_inputs_and_chunking_agree():
    pop, batch, steps = 3, 2, 40
    params = random_params(pop, seed=3)
    x = (torch.rand(batch, steps, 5, generator=torch.Generator().manual_seed(4)) < 0.3).float()
    shared = rollout(params, x, n_ref=1)
    per_member = rollout(params, x.expand(pop, -1, -1, -1), n_ref=1, chunk_bytes=1)  # one step per chunk
    torch.testing.assert_close(shared.y, per_member.y)
    assert torch.equal(shared.spike_count, per_member.spike_count)


def test_readout_is_low_pass_filtered_spikes():
    params = three_neurons()
    x = torch.ones(1, 12, 1)
    out = rollout(params, x, n_ref=1, record_spikes=True)
    zf, expected = torch.zeros(3), []
    for t in range(12):
        zf = 0.5 * zf + 0.5 * out.spikes[0, 0, t]
        expected.append(zf.sum())  # w_out = ones, b_out = 0
    torch.testing.assert_close(out.y[0, 0, :, 0], torch.stack(expected))


def test_pseudo_derivative_formula_and_autograd():
    v = torch.linspace(-2, 2, 41, requires_grad=True)
    z = spike(v, 0.3)
    assert torch.equal(z.detach(), (v > 0).float())
    z.sum().backward()
    expected = 0.3 * torch.clamp(1 - v.detach().abs(), min=0)
    torch.testing.assert_close(v.grad, expected)
    torch.testing.assert_close(pseudo_derivative(torch.tensor([0.0, 0.5, -0.5, 1.5]), 0.3), torch.tensor([0.3, 0.15, 0.15, 0.0]))


def test_gradient_flows_through_rollout_to_all_weights():
    params = random_params(2)
    leaves = LSNNParams(*[t.clone().requires_grad_(True) for t in params])
    x = (torch.rand(2, 30, 5, generator=torch.Generator().manual_seed(5)) < 0.3).float()
    out = rollout(leaves, x, n_ref=1)
    out.y.pow(2).mean().backward()
    for name in ("w_in", "w_rec", "w_out", "b0"):
        grad = getattr(leaves, name).grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize("grad", [False, True])
def test_rollout_owns_the_no_autapse_rule(grad):
    """A w_rec with a nonzero diagonal simulates as if the diagonal were zero, with and without gradients."""
    params = random_params(2)
    eye = torch.eye(params.w_rec.shape[-1], dtype=torch.bool)
    clean = params._replace(w_rec=params.w_rec.masked_fill(eye, 0.0))
    self_fed = params._replace(w_rec=clean.w_rec + 5.0 * eye)  # strong autapses, if they were simulated
    x = (torch.rand(3, 60, 5, generator=torch.Generator().manual_seed(2)) < 0.2).float()
    if grad:
        self_fed = self_fed._replace(w_rec=self_fed.w_rec.clone().requires_grad_(True))
    out, ref = rollout(self_fed, x, n_ref=1, record_spikes=True), rollout(clean, x, n_ref=1, record_spikes=True)
    assert torch.equal(out.spikes, ref.spikes) and torch.allclose(out.y, ref.y)
    if grad:
        out.y.sum().backward()
        assert not torch.diagonal(self_fed.w_rec.grad, dim1=-2, dim2=-1).any()  # no gradient into weights the model has not
