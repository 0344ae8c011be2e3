"""The fused C BPTT (recording forward + backward) gives autograd's gradients through step_rollout."""

import math

import pytest
import torch

from es_l2l.snn import LSNNParams, grad_kernel
from es_l2l.snn.fused_grad import fused_rollout, supports, why_unsupported
from es_l2l.snn.lsnn import step_rollout

pytestmark = pytest.mark.skipif(grad_kernel.load() is None, reason=str(grad_kernel.why_not()))

FIELDS = LSNNParams._fields


def network(pop=2, n=20, n_in=5, b0=0.03, beta=1.7, lif_only=False, seed=0, n_out=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    beta_v = torch.zeros(pop, n) if lif_only else torch.cat([torch.zeros(pop, n // 2), torch.full((pop, n - n // 2), beta)], 1)
    p = LSNNParams(
        w_in=torch.randn(pop, n_in, n, generator=g) / math.sqrt(n_in),
        w_rec=torch.randn(pop, n, n, generator=g) / math.sqrt(n) * (1 - torch.eye(n)),
        w_out=torch.randn(pop, n, n_out, generator=g) / math.sqrt(n),
        b_out=torch.randn(pop, n_out, generator=g),
        alpha=torch.exp(-1 / (10 + 20 * torch.rand(pop, n, generator=g))),
        rho=torch.exp(-1 / (50 + 500 * torch.rand(pop, n, generator=g))),
        b0=b0 * (0.5 + torch.rand(pop, n, generator=g)),
        beta=beta_v,
        kappa=torch.exp(-1 / (10 + 20 * torch.rand(pop, 1, generator=g))),
    )
    return LSNNParams(*[t.to(dtype) for t in p])


def inputs(batch=3, steps=60, n_in=5, p=0.15, seed=1, pop=None, dtype=torch.float64):
    shape = (batch, steps, n_in) if pop is None else (pop, batch, steps, n_in)
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < p).to(dtype)


def leaves(params):
    return LSNNParams(*[t.detach().clone().requires_grad_(True) for t in params])


def mse_loss(out, target_steps=None):
    y = out.y if target_steps is None else out.y[:, :, target_steps]
    return (y - 0.3).pow(2).mean() + 1e-3 * (out.spike_count - 2.0).pow(2).mean()


def ce_loss(out):
    logits = out.y[:, :, -1]  # (P, B, n_out) at the last step
    labels = torch.arange(logits.shape[1]) % logits.shape[-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.repeat(logits.shape[0]))


def grads(fn, params, x, loss_fn, *, mask=None, **kw):
    p = leaves(params)
    model = p if mask is None else p._replace(w_rec=p.w_rec * mask)
    out = fn(model, x, **kw)
    loss = loss_fn(out)
    return out, loss.detach(), dict(zip(FIELDS, torch.autograd.grad(loss, list(p))))


def assert_grads_equal(ref, got, rtol):
    for name in FIELDS:
        a, b = ref[name], got[name]
        scale = a.abs().max().clamp(min=1e-12)
        err = ((a - b).abs().max() / scale).item()
        assert err <= rtol, f"{name}: max |diff| / max |grad| = {err:.3g} > {rtol:g}"


REGIMES = {  # (b0, beta, lif_only): firing regime and threshold adaptation
    "sparse": dict(b0=0.15),
    "busy": dict(b0=0.003),
    "lif_only": dict(b0=0.03, lif_only=True),
    "alif_large_beta": dict(b0=0.02, beta=8.0),
}


def _rate(out, params, x):
    return out.spike_count.mean().item() / x.shape[-2]


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("n_ref", [0, 3])
def test_gradients_equal_autograd_float64(regime, n_ref):
    params, x = network(**REGIMES[regime]), inputs()
    kw = dict(n_ref=n_ref, gamma=0.3, dt=1.0, readout_steps=torch.tensor([5, 20, 41, 59]))
    ref_out, ref_loss, ref = grads(step_rollout, params, x, lambda o: mse_loss(o, [1, 3]), **kw)
    out, loss, got = grads(fused_rollout, params, x, lambda o: mse_loss(o, [1, 3]), **kw)
    rate = _rate(ref_out, params, x)
    assert {"sparse": rate < 0.03, "busy": rate > 0.08}.get(regime, 0.0 < rate < 0.5), rate
    assert torch.equal(out.spike_count, ref_out.spike_count)
    torch.testing.assert_close(out.y, ref_out.y, rtol=1e-12, atol=1e-12)
    assert_grads_equal(ref, got, 1e-10)


@pytest.mark.parametrize("dt", [0.5, 2.0])
def test_masked_w_rec_dt_and_cross_entropy_float64(dt):
    """Zeros in w_rec from a mask applied upstream (as the genome and DEEP R do): the leaf's
    gradient goes through the mask as autograd's does; dt != 1; cross-entropy at the last step."""
    params, x = network(n=24, seed=3), inputs(seed=4)
    mask = (torch.rand(2, 24, 24, generator=torch.Generator().manual_seed(5)) < 0.4).double() * (1 - torch.eye(24))
    kw = dict(n_ref=2, dt=dt, readout_steps=torch.arange(0, 60, 7))
    ref_out, _, ref = grads(step_rollout, params, x, ce_loss, mask=mask, **kw)
    out, _, got = grads(fused_rollout, params, x, ce_loss, mask=mask, **kw)
    assert torch.equal(out.spike_count, ref_out.spike_count)
    assert_grads_equal(ref, got, 1e-10)
    assert (got["w_rec"][mask.expand_as(got["w_rec"]) == 0] == 0).all()


@pytest.mark.parametrize("regime", ["sparse", "busy", "alif_large_beta"])
def test_gradients_equal_autograd_float32(regime):
    params, x = network(dtype=torch.float32, **REGIMES[regime]), inputs(dtype=torch.float32)
    kw = dict(n_ref=2, readout_steps=torch.tensor([10, 30, 59]))
    ref_out, _, ref = grads(step_rollout, params, x, mse_loss, **kw)
    out, _, got = grads(fused_rollout, params, x, mse_loss, **kw)
    assert torch.equal(out.spike_count, ref_out.spike_count)
    torch.testing.assert_close(out.y, ref_out.y, rtol=1e-5, atol=1e-6)
    # float32 sums of ~10^4 terms in a different order (autograd's BLAS against the kernel's loops; the
    # order depends on the CPU's vector width): 1.04e-5 measured on an AVX2-only Xeon, under 1e-5 on
    # AVX-512 machines. The float64 tests above pin the arithmetic itself at 1e-10.
    assert_grads_equal(ref, got, 2e-5)


def test_population_equals_per_member_loop_and_per_member_inputs():
    params, x = network(pop=3, b0=0.02), inputs(pop=3)
    kw = dict(n_ref=1, readout_steps=torch.tensor([30, 59]))
    _, _, batched = grads(fused_rollout, params, x, lambda o: o.y.pow(2).sum(), **kw)
    for m in range(3):
        member = LSNNParams(*[t[m : m + 1] for t in params])
        _, _, one = grads(fused_rollout, member, x[m], lambda o: o.y.pow(2).sum(), **kw)
        _, _, ref = grads(step_rollout, member, x[m : m + 1], lambda o: o.y.pow(2).sum(), **kw)
        assert_grads_equal(ref, one, 1e-10)
        assert_grads_equal(one, {k: v[m : m + 1] for k, v in batched.items()}, 1e-12)


def test_thread_split_of_rows_gives_the_same_gradients():
    """P < threads splits a member's rows into groups; the per-group sums fold to the same gradient."""
    params, x = network(pop=1, b0=0.02), inputs(batch=5)
    kw = dict(n_ref=2, readout_steps=torch.tensor([59]))
    old = torch.get_num_threads()
    try:
        res = []
        for threads in (1, 3):
            torch.set_num_threads(threads)
            res.append(grads(fused_rollout, params, x, lambda o: o.y.pow(2).sum(), **kw)[2])
    finally:
        torch.set_num_threads(old)
    assert_grads_equal(res[0], res[1], 1e-12)


def test_recorded_bytes_match_the_docstring():
    """v every step, b every CHECKPOINT steps (reals), spikes as bits in whole 64-bit words per row."""
    every = grad_kernel.CHECKPOINT
    for n, steps, dtype in ((20, 60, torch.float32), (70, 37, torch.float32), (20, 60, torch.float64)):
        params, x = network(n=n, dtype=dtype), inputs(steps=steps, dtype=dtype)
        stats = {}
        fused_rollout(leaves(params), x, n_ref=1, stats=stats)
        real = dtype.itemsize
        per = real * (1 + math.ceil(steps / every) / steps) + 8 * math.ceil(n / 64) / n
        assert stats["recorded_bytes"] == grad_kernel.recorded_bytes(2, 3, n, steps, real)
        assert stats["recorded_bytes"] / stats["neuron_steps"] == pytest.approx(per)
        assert grad_kernel.bytes_per_neuron_step(n, steps, real) == pytest.approx(per)
    assert grad_kernel.bytes_per_neuron_step(220, 784) == pytest.approx(4.40, abs=0.005)


@pytest.mark.parametrize("steps", [16, 33, 47])
def test_segment_boundaries_of_the_b_checkpoints(steps):
    """b is recomputed per segment of CHECKPOINT steps: T a multiple of it, one past, and a
    backward starting mid-segment (last readout at T - 5) all give autograd's gradients."""
    params, x = network(b0=0.02, beta=3.0), inputs(steps=steps)
    for ro in (torch.tensor([steps - 1]), torch.tensor([steps // 2, steps - 5])):
        kw = dict(n_ref=2, readout_steps=ro)
        _, _, ref = grads(step_rollout, params, x, lambda o: o.y.pow(2).sum(), **kw)
        _, _, got = grads(fused_rollout, params, x, lambda o: o.y.pow(2).sum(), **kw)
        assert_grads_equal(ref, got, 1e-10)


def test_adam_training_follows_the_autograd_curve():
    """20 Adam steps on w_in, w_rec, w_out, b_out, b0: fused and autograd give the same losses."""
    base, x = network(pop=1, n=16, b0=0.02), inputs(batch=4, steps=40)
    target = torch.sin(torch.linspace(0, 3, 40)).view(1, 1, 40, 1)
    curves = {}
    for name, fn in (("autograd", step_rollout), ("fused", fused_rollout)):
        p = leaves(base)
        trained = [p.w_in, p.w_rec, p.w_out, p.b_out, p.b0]
        opt = torch.optim.Adam(trained, lr=1e-2)
        losses = []
        for _ in range(20):
            opt.zero_grad()
            loss = (fn(p, x, n_ref=2).y[..., :1] - target).pow(2).mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        curves[name] = torch.tensor(losses)
    assert curves["autograd"][-1] < curves["autograd"][0]
    torch.testing.assert_close(curves["fused"], curves["autograd"], rtol=1e-9, atol=1e-12)


def test_supports_says_why_not():
    params, x = network(), inputs()
    assert supports(params, x)
    assert "inputs" in why_unsupported(params, x.clone().requires_grad_(True))
    mixed = params._replace(w_in=params.w_in.float())
    assert "float32 or float64" in why_unsupported(mixed, x)
    with pytest.raises(RuntimeError):
        fused_rollout(mixed, x, n_ref=0)
