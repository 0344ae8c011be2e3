"""The forward that shares the centre equals simulating each member's explicit matrix W + a b^T."""

import math

import pytest
import torch

from es_l2l.snn import LSNNParams, decay, lowrank_kernel, rollout
from es_l2l.snn.lowrank import NO_FACTORS, LowRankFactors, explicit_params, lowrank_rollout
from es_l2l.snn.lsnn import step_rollout

P, B, T, N_IN, N, N_OUT, R = 6, 3, 80, 5, 12, 2, 2


def setup(dtype, rank=R, sigma=0.3):
    g = torch.Generator().manual_seed(0)
    randn = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    rand = lambda *s: torch.rand(*s, generator=g, dtype=dtype)  # noqa: E731
    center = LSNNParams(
        w_in=2.0 * randn(1, N_IN, N) / math.sqrt(N_IN),
        w_rec=randn(1, N, N) / math.sqrt(N),
        w_out=randn(1, N, N_OUT),
        b_out=randn(P, N_OUT),
        alpha=decay(15 + 10 * rand(P, N)),
        rho=decay(torch.cat([torch.full((P, N // 2), 20.0, dtype=dtype), 100 + 100 * rand(P, N - N // 2)], 1)),
        b0=0.03 + 0.02 * rand(P, N),
        beta=torch.cat([torch.zeros(P, N // 2, dtype=dtype), 1.5 * torch.ones(P, N - N // 2, dtype=dtype)], 1),
        kappa=torch.full((P, 1), math.exp(-1 / 20), dtype=dtype),
    )
    s = sigma / math.sqrt(rank)
    factors = LowRankFactors(s * randn(P, N_IN, rank), randn(P, N, rank), s * randn(P, N, rank), randn(P, N, rank),
                             s * randn(P, N, rank), randn(P, N_OUT, rank))
    x = (rand(B, T, N_IN) < 0.2).to(dtype)
    return center, factors, x


def test_lowrank_forward_equals_the_explicit_matrices_in_float64():
    center, factors, x = setup(torch.float64)
    low = lowrank_rollout(center, factors, x, n_ref=2, backend="torch")
    ref = step_rollout(explicit_params(center, factors), x, n_ref=2)  # the reference step graph, P matrices
    assert ref.spike_count.sum() > 50  # the members spike, so the recurrent corrections are exercised
    assert torch.equal(low.spike_count, ref.spike_count)
    assert torch.allclose(low.y, ref.y, atol=1e-12, rtol=0)
    # and the corrections matter: the centre alone gives other numbers
    assert not torch.allclose(lowrank_rollout(center, NO_FACTORS, x, n_ref=2, backend="torch").y, ref.y, atol=1e-3)


@pytest.mark.parametrize("rank", [1, 4])
def test_lowrank_forward_equals_the_production_forward_to_float32_rounding(rank):
    center, factors, x = setup(torch.float32, rank)
    low = lowrank_rollout(center, factors, x, n_ref=2, chunk_bytes=P * B * N * 4 * 7, backend="torch")  # several chunks
    ref = rollout(explicit_params(center, factors), x, n_ref=2)  # the no-grad production path (C kernel where built)
    assert torch.equal(low.spike_count, ref.spike_count)
    assert torch.allclose(low.y, ref.y, atol=2e-5, rtol=1e-5)


@pytest.mark.skipif(lowrank_kernel.load() is None, reason="no C compiler")
@pytest.mark.parametrize("threshold", [0.0, 1.0])  # the centre's W_rec z dense whenever a unit spiked, or always event-driven
@pytest.mark.parametrize("rank", [1, 4])
def test_the_c_kernel_equals_the_explicit_matrices_to_float32_rounding(rank, threshold):
    center, factors, x = setup(torch.float32, rank)
    ref = rollout(explicit_params(center, factors), x, n_ref=2)
    steps = torch.tensor([5, 40, T - 1])
    low = lowrank_kernel.kernel_lowrank_rollout(center, factors, x, n_ref=2, readout_steps=steps, event_threshold=threshold)
    assert ref.spike_count.sum() > 50 and torch.equal(low.spike_count, ref.spike_count)
    assert torch.allclose(low.y, ref.y[:, :, steps], atol=2e-6, rtol=1e-5)
    auto = lowrank_rollout(center, factors, x, n_ref=2)  # CPU float32: the kernel
    assert torch.equal(auto.spike_count, ref.spike_count) and torch.allclose(auto.y, ref.y, atol=2e-6, rtol=1e-5)
    # no corrections: every member runs the centre's network (pure batch inference)
    centre_only = lowrank_rollout(center, NO_FACTORS, x, n_ref=2)
    assert torch.allclose(centre_only.y, rollout(explicit_params(center, NO_FACTORS), x, n_ref=2).y, atol=2e-6, rtol=1e-5)
