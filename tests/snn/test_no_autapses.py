"""The no-autapse rule holds in every simulator: a w_rec with a nonzero diagonal simulates as the
same network without it (es_l2l.snn.types.no_autapses, applied where each simulator takes its
parameters)."""

import pytest
import torch

from es_l2l.snn import LSNNParams, SimOptions, grad_kernel, kernel, lsnn_step, zero_state
from es_l2l.snn.closed_loop import Stepper
from es_l2l.snn.fast import KernelLoop, fast_rollout
from es_l2l.snn.fused_grad import fused_rollout
from es_l2l.snn.lsnn import input_current, rollout, step_rollout
from tests.snn.test_lsnn import random_params

N_REF = 1
needs_kernel = pytest.mark.skipif(kernel.load() is None, reason=str(kernel.why_not()))
needs_grad_kernel = pytest.mark.skipif(grad_kernel.load() is None, reason=str(grad_kernel.why_not()))


def pair():
    """(clean, self_fed): the same networks, the second with strong autapses on the diagonal."""
    params = random_params(2)
    eye = torch.eye(params.w_rec.shape[-1], dtype=torch.bool)
    clean = params._replace(w_rec=params.w_rec.masked_fill(eye, 0.0))
    return clean, clean._replace(w_rec=clean.w_rec + 5.0 * eye)


X = (torch.rand(3, 60, 5, generator=torch.Generator().manual_seed(2)) < 0.2).float()


def naive(params: LSNNParams, x: torch.Tensor) -> torch.Tensor:
    """Spikes (P, B, T, N) of lsnn_step applied to ``params`` as given (autapses simulated)."""
    state = zero_state(params.w_in.shape[0], x.shape[0], params.w_in.shape[-1])
    out = []
    for i_in in input_current(x, params.w_in).unbind(2):
        z, state = lsnn_step(i_in, state, params, n_ref=N_REF)
        out.append(z)
    return torch.stack(out, dim=2)


def test_the_autapses_would_change_the_spikes():
    """Not vacuous: simulated as given, the self-fed networks spike differently."""
    clean, self_fed = pair()
    ref = naive(clean, X)
    assert ref.sum() > 20 and not torch.equal(naive(self_fed, X), ref)


SIMULATORS = {
    "step_rollout dense": lambda p: step_rollout(p, X, n_ref=N_REF, record_spikes=True),
    "step_rollout event": lambda p: step_rollout(p, X, n_ref=N_REF, record_spikes=True, recurrent="event"),
    "fast_rollout inplace dense": lambda p: fast_rollout(p, X, n_ref=N_REF, record_spikes=True, fused="inplace",
                                                         recurrent="dense"),
    "fast_rollout inplace event": lambda p: fast_rollout(p, X, n_ref=N_REF, record_spikes=True, fused="inplace",
                                                         recurrent="event"),
    "fast_rollout kernel": pytest.param(lambda p: fast_rollout(p, X, n_ref=N_REF, record_spikes=True, fused="kernel"),
                                        marks=needs_kernel),
    "rollout": lambda p: rollout(p, X, n_ref=N_REF, record_spikes=True),
}


@pytest.mark.parametrize("simulate", SIMULATORS.values(), ids=SIMULATORS.keys())
def test_rollouts_ignore_the_diagonal(simulate):
    clean, self_fed = pair()
    with torch.no_grad():
        ref, out = simulate(clean), simulate(self_fed)
    assert torch.equal(ref.spikes, naive(clean, X))  # the no-autapse result
    assert torch.equal(out.spikes, ref.spikes) and torch.equal(out.y, ref.y)
    assert torch.equal(out.spike_count, ref.spike_count)


@needs_kernel
def test_kernel_loop_ignores_the_diagonal():
    clean, self_fed = pair()
    runs = []
    for params in (clean, self_fed):
        loop = KernelLoop(params, X.shape[0], n_ref=N_REF)
        zf1, s1 = loop.advance(X[:, :25], keep=[True] * 25, record_spikes=True)  # a closed loop, in two chunks
        zf2, s2 = loop.advance(X[:, 25:], keep=[True] * 35, record_spikes=True)
        runs.append((torch.cat([s1, s2], dim=2), torch.cat([zf1, zf2], dim=2)))
    assert torch.equal(runs[0][0], naive(clean, X))
    assert torch.equal(runs[1][0], runs[0][0]) and torch.equal(runs[1][1], runs[0][1])


@pytest.mark.parametrize("grad", [False, True])
def test_stepper_ignores_the_diagonal(grad):
    clean, self_fed = pair()
    spikes = []
    for params in (clean, self_fed):
        if grad:
            params = params._replace(w_rec=params.w_rec.clone().requires_grad_(True))
        stepper = Stepper(params, X.shape[0], SimOptions(N_REF, 0.3, 1.0, "auto"))
        spikes.append(torch.cat([stepper.advance(X[:, :25], True), stepper.advance(X[:, 25:], True)], dim=2).detach())
    assert torch.equal(spikes[0], naive(clean, X)) and torch.equal(spikes[1], spikes[0])


@needs_grad_kernel
def test_fused_recording_forward_and_its_gradients_ignore_the_diagonal():
    clean, self_fed = pair()
    results = []
    for params in (clean, self_fed):
        w_rec = params.w_rec.clone().requires_grad_(True)
        w_in = params.w_in.clone().requires_grad_(True)
        out = fused_rollout(params._replace(w_rec=w_rec, w_in=w_in), X, n_ref=N_REF)
        out.y.pow(2).sum().backward()
        results.append((out.y.detach(), out.spike_count, w_in.grad, w_rec.grad))
    (y0, c0, gi0, gr0), (y1, c1, gi1, gr1) = results
    ref = step_rollout(clean, X, n_ref=N_REF)
    assert torch.allclose(y0, ref.y, atol=1e-5) and torch.equal(c0, ref.spike_count)
    assert torch.equal(y1, y0) and torch.equal(c1, c0) and torch.equal(gi1, gi0)
    off = ~torch.eye(gr0.shape[-1], dtype=torch.bool)
    assert torch.equal(gr1[:, off], gr0[:, off]) and gr0[:, off].abs().sum() > 0
    assert not torch.diagonal(gr1, dim1=-2, dim2=-1).any()  # no gradient into weights the model does not have
