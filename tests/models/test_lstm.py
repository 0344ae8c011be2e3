import pytest
import torch

from es_l2l.families.store_recall import task as store_recall
from es_l2l.families.store_recall.config import StoreRecallTaskConfig
from es_l2l.models.lstm import (
    LSTMParams,
    init_lstm,
    lsnn_weight_count,
    lstm_hidden_for,
    lstm_param_count,
    lstm_rollout,
)
from es_l2l.seeds import STREAM_INIT, STREAM_TRAIN, generator


def _torch_lstm(params: LSTMParams, member: int) -> tuple[torch.nn.LSTM, torch.nn.Linear]:
    n_in, four_h = params.w_ih.shape[1:]
    hidden, n_out = params.w_out.shape[1:]
    lstm = torch.nn.LSTM(n_in, hidden, batch_first=True)
    lin = torch.nn.Linear(hidden, n_out)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(params.w_ih[member].T)
        lstm.weight_hh_l0.copy_(params.w_hh[member].T)
        lstm.bias_ih_l0.copy_(params.b[member])
        lstm.bias_hh_l0.zero_()
        lin.weight.copy_(params.w_out[member].T)
        lin.bias.copy_(params.b_out[member])
    return lstm, lin


def test_equals_torch_lstm():
    gen = torch.Generator().manual_seed(0)
    params = init_lstm(1, 5, 7, 3, gen, forget_bias=1.0)
    params = params._replace(b_out=torch.randn(1, 3, generator=gen))
    x = torch.randn(4, 30, 5, generator=gen)
    lstm, lin = _torch_lstm(params, 0)
    with torch.no_grad():
        expected = lin(lstm(x)[0])  # (B, T, n_out)
        got = lstm_rollout(params, x)
    assert got.shape == (1, 4, 30, 3)
    assert torch.allclose(got[0], expected, atol=1e-5, rtol=0)
    steps = torch.tensor([0, 9, 29])
    assert torch.allclose(lstm_rollout(params, x, steps)[0], expected[:, steps], atol=1e-5, rtol=0)


def test_population_members_are_independent_lstms():
    gen = torch.Generator().manual_seed(1)
    params = init_lstm(3, 4, 6, 2, gen)
    x = torch.randn(2, 12, 4, generator=gen)
    y = lstm_rollout(params, x)
    for p in range(3):
        one = LSTMParams(*(t[p : p + 1] for t in params))
        assert torch.allclose(y[p : p + 1], lstm_rollout(one, x), atol=1e-6)
    # per-member inputs (P, B, T, n_in) take the bmm path
    xs = torch.randn(3, 2, 12, 4, generator=gen)
    y2 = lstm_rollout(params, xs)
    for p in range(3):
        one = LSTMParams(*(t[p : p + 1] for t in params))
        assert torch.allclose(y2[p], lstm_rollout(one, xs[p])[0], atol=1e-6)


def test_parameter_counts():
    lstm, lin = torch.nn.LSTM(10, 8), torch.nn.Linear(8, 3)
    torch_count = sum(p.numel() for p in lstm.parameters()) + sum(p.numel() for p in lin.parameters())
    assert lstm_param_count(10, 8, 3) == torch_count - 4 * 8  # one bias instead of two
    params = init_lstm(2, 10, 8, 3, torch.Generator().manual_seed(0))
    assert sum(t[0].numel() for t in params) == lstm_param_count(10, 8, 3)
    budget = lsnn_weight_count(100, 20, 2)  # the reference store-recall LSNN: 10 LIF + 10 ALIF
    assert budget == 100 * 20 + 20 * 19 + 20 * 2 + 2
    h = lstm_hidden_for(budget, 100, 2)
    assert lstm_param_count(100, h, 2) <= budget < lstm_param_count(100, h + 1, 2)
    assert lstm_hidden_for(1, 100, 2) == 1


def test_bptt_lowers_the_loss_on_a_tiny_store_recall_batch():
    cfg = StoreRecallTaskConfig(n_symbols=4, symbol_ms=5, min_delay=1, max_delay=3, n_in=8, rate_hz=400.0,
                                batch_size=32)
    batch = store_recall.sample(cfg, generator(0, STREAM_TRAIN, 0), cfg.batch_size)
    steps, index = store_recall.readout_union(batch)
    params = init_lstm(2, cfg.n_in, 16, 2, generator(0, STREAM_INIT), forget_bias=1.0)
    leaves = [t.clone().requires_grad_(True) for t in params]
    opt = torch.optim.Adam(leaves, lr=0.03)

    def loss_fn():
        y = lstm_rollout(LSTMParams(*leaves), batch.x, steps)
        return store_recall.cross_entropy(store_recall.gather_recall(y, index), batch.targets)  # (P,)

    first = loss_fn().detach()
    for _ in range(40):
        opt.zero_grad()
        loss_fn().sum().backward()
        opt.step()
    last = loss_fn().detach()
    assert (last < 0.5 * first).all(), (first, last)
    y = lstm_rollout(LSTMParams(*leaves), batch.x, steps)
    assert (store_recall.recall_error(store_recall.gather_recall(y, index), batch.targets) < 0.2).all()


@pytest.mark.parametrize("shared", [True, False])
def test_gradients_reach_every_parameter(shared):
    gen = torch.Generator().manual_seed(2)
    leaves = [t.requires_grad_(True) for t in init_lstm(2, 3, 4, 2, gen)]
    x = torch.randn(2, 5, 3, generator=gen) if shared else torch.randn(2, 2, 5, 3, generator=gen)
    lstm_rollout(LSTMParams(*leaves), x).pow(2).sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in leaves)


@pytest.mark.parametrize("shared", [True, False])
def test_torch_lstm_path_equals_the_cell_outputs_and_gradients(shared):
    """One member runs on torch's fused LSTM; it equals the batched cell (the population path) to
    float32 rounding, forward and backward, on random weights of a size where gates saturate."""
    from es_l2l.models.lstm import _flushes_denormals, cell_lstm_hidden, torch_lstm_hidden

    gen = torch.Generator().manual_seed(3)
    n_in, hidden, n_out, batch, steps = 6, 9, 3, 5, 40
    params = LSTMParams(*(torch.randn(1, *shape, generator=gen) * scale for shape, scale in [
        ((n_in, 4 * hidden), 0.8), ((hidden, 4 * hidden), 0.6), ((4 * hidden,), 1.0), ((hidden, n_out), 0.5), ((n_out,), 0.3)]))
    x = torch.randn(batch, steps, n_in, generator=gen) if shared else torch.randn(1, batch, steps, n_in, generator=gen)
    keep = torch.arange(steps)
    for where in (None, torch.tensor([30, 0, 7, 7, 39])):  # unsorted, repeated: kept ascending, once
        grads = []
        for hidden_of in (torch_lstm_hidden, lambda p, xx: cell_lstm_hidden(p, xx, keep)):
            leaves = [t.clone().requires_grad_(True) for t in params]
            xl = x.clone().requires_grad_(True)
            h = hidden_of(LSTMParams(*leaves), xl)  # (1, B, T, H)
            assert h.shape == (1, batch, steps, hidden)
            k = keep if where is None else torch.tensor([0, 7, 30, 39])
            y = torch.matmul(h[:, :, k], leaves[3].unsqueeze(1)) + leaves[4][:, None, None, :]
            w = torch.randn(y.shape, generator=torch.Generator().manual_seed(9))
            (y * w).sum().backward()
            grads.append((y.detach(), xl.grad, *[t.grad for t in leaves]))
        assert not _flushes_denormals()  # the backward's flush-to-zero does not outlive it
        for a, b in zip(*grads):
            assert torch.allclose(a, b, atol=2e-5, rtol=1e-4), (a - b).abs().max()
        assert grads[0][0].abs().max() > 0.1 and grads[0][1].abs().max() > 0.01  # not vacuous
        # lstm_rollout picks the fused path for P = 1 and the cell for P > 1: same numbers
        y1 = lstm_rollout(params, x, where)
        two = LSTMParams(*(torch.cat([t, t]) for t in params))
        y2 = lstm_rollout(two, x if shared else torch.cat([x, x]), where)
        assert y1.shape == (1, batch, steps if where is None else 4, n_out)
        assert torch.allclose(y1, grads[0][0], atol=1e-6) and torch.allclose(y2[1:], y1, atol=2e-5, rtol=1e-4)
