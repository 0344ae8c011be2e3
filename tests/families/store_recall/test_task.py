import pytest
import torch
from pydantic import ValidationError

from es_l2l.families.store_recall import task
from es_l2l.families.store_recall.config import StoreRecallTaskConfig
from es_l2l.seeds import STREAM_TRAIN, generator


def small(**kw) -> StoreRecallTaskConfig:
    base = dict(n_symbols=12, symbol_ms=20, min_delay=1, max_delay=5, n_in=20, rate_hz=200.0)
    base.update(kw)
    return StoreRecallTaskConfig(**base)


def frame_spikes(cfg, batch):
    """Spikes per (sequence, frame, group): (B, S, 4)."""
    groups = task.neuron_groups(cfg.n_in)
    per_frame = batch.x.view(batch.batch, cfg.n_symbols, cfg.symbol_ms, cfg.n_in).sum(2)  # (B, S, n_in)
    return torch.stack([per_frame[..., groups == g].sum(-1) for g in range(4)], dim=-1)


@pytest.mark.parametrize("n_stores", [1, 2])
def test_target_is_the_bit_shown_with_store_and_recall_shows_only_its_cue(n_stores):
    cfg = small(n_stores=n_stores, max_delay=4, symbol_ms=50, rate_hz=400.0)
    b = task.sample(cfg, generator(0, STREAM_TRAIN, 0), 64)
    counts = frame_spikes(cfg, b)  # at 400 Hz x 50 ms x 5 neurons an active group never stays silent here
    rows = torch.arange(b.batch)[:, None]
    at_store = counts[rows, b.store_symbol]  # (B, R, 4)
    assert (at_store[..., task.GROUP_STORE] > 0).all() and (at_store[..., task.GROUP_RECALL] == 0).all()
    # the stored bit's group fires with STORE, the other bit's group is silent
    assert (at_store.gather(-1, b.targets.unsqueeze(-1)).squeeze(-1) > 0).all()
    assert (at_store.gather(-1, (1 - b.targets).unsqueeze(-1)).squeeze(-1) == 0).all()
    at_recall = counts[rows, b.recall_symbol]
    assert (at_recall[..., task.GROUP_RECALL] > 0).all()
    assert (at_recall[..., :3] == 0).all()
    # the recorded frame structure agrees with the spikes
    assert (b.cues.gather(1, b.store_symbol) == task.CUE_STORE).all()
    assert (b.cues.gather(1, b.recall_symbol) == task.CUE_RECALL).all()
    assert torch.equal(b.bits.gather(1, b.store_symbol), b.targets)
    assert ((b.cues == task.CUE_STORE).sum(1) == n_stores).all()
    # distractors: every other frame shows exactly one bit group
    other = b.cues == task.CUE_NONE
    shown = (counts[..., :2] > 0).sum(-1)
    assert (shown[other] == 1).all()


def test_no_distractors_leaves_other_frames_silent():
    cfg = small(distractors=False)
    b = task.sample(cfg, generator(1, STREAM_TRAIN, 0), 16)
    counts = frame_spikes(cfg, b)
    assert (counts[b.cues == task.CUE_NONE] == 0).all()


@pytest.mark.parametrize("n_stores", [1, 3])
def test_delays_and_positions_within_range(n_stores):
    cfg = small(n_symbols=20, n_stores=n_stores, min_delay=2, max_delay=5, symbol_ms=4, n_in=4)
    b = task.sample(cfg, generator(2, STREAM_TRAIN, 0), 2000)
    delay = b.recall_symbol - b.store_symbol
    assert torch.equal(b.delay_ms, delay * cfg.symbol_ms)
    assert delay.min() == 2 and delay.max() == 5
    assert set(delay.unique().tolist()) == {2, 3, 4, 5}
    assert (b.store_symbol >= 0).all() and (b.recall_symbol < cfg.n_symbols).all()
    if n_stores > 1:  # pairs follow one another, never overlap
        assert (b.store_symbol[:, 1:] > b.recall_symbol[:, :-1]).all()
    else:  # one pair: the store frame takes every position where its recall fits
        assert set(b.store_symbol.unique().tolist()) == set(range(cfg.n_symbols - cfg.min_delay))
    # recall windows: the last window_ms steps of each recall frame, and the mask marks exactly them
    assert b.recall_steps.shape == (2000, n_stores, cfg.window_ms)
    assert torch.equal(b.recall_steps[..., 0] // cfg.symbol_ms, b.recall_symbol)
    assert int(b.recall_mask.sum()) == 2000 * n_stores * cfg.window_ms
    assert b.recall_mask.gather(1, b.recall_steps.flatten(1)).all()


def test_long_delays_of_seconds():
    cfg = StoreRecallTaskConfig(n_symbols=12, symbol_ms=200, min_delay=5, max_delay=11, n_in=8, readout_ms=50)
    assert cfg.expected_delay_ms == 1600.0
    b = task.sample(cfg, generator(3, STREAM_TRAIN, 0), 8)
    assert b.x.shape == (8, 2400, 8) and b.x.dtype == torch.float32
    assert (b.delay_ms >= 1000).all() and (b.delay_ms <= 2200).all()
    assert b.recall_steps.shape == (8, 1, 50)
    assert torch.equal(b.recall_steps[:, 0, -1] + 1, (b.recall_symbol[:, 0] + 1) * 200)


def test_batched_sampling_equals_a_loop_of_single_samples():
    cfg = small(n_stores=2)
    batched = task.sample(cfg, generator(4, STREAM_TRAIN, 7), 5)
    gen = generator(4, STREAM_TRAIN, 7)
    singles = [task.sample(cfg, gen, 1) for _ in range(5)]
    for name, value in batched._asdict().items():
        assert torch.equal(value, torch.cat([getattr(s, name) for s in singles])), name


def test_deterministic_per_seed():
    cfg = small()
    a = task.sample(cfg, generator(5, STREAM_TRAIN, 0), 8)
    b = task.sample(cfg, generator(5, STREAM_TRAIN, 0), 8)
    c = task.sample(cfg, generator(6, STREAM_TRAIN, 0), 8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.x, c.x)


def test_active_neurons_fire_at_the_configured_rate():
    cfg = small(symbol_ms=100, rate_hz=50.0, n_in=100)
    b = task.sample(cfg, generator(7, STREAM_TRAIN, 0), 32)
    groups = task.neuron_groups(cfg.n_in)
    _, _, active = task.frame_groups(cfg, b.store_symbol, b.recall_symbol - b.store_symbol,
                                     b.bits.clamp(min=0))
    on = active[:, :, groups].repeat_interleave(cfg.symbol_ms, dim=1)
    assert (b.x[~on] == 0).all()
    rate = b.x[on].mean().item() * 1000
    assert 45 < rate < 55


def test_readout_union_gathers_each_sequences_windows():
    cfg = small(n_stores=2, max_delay=3, readout_ms=5)
    b = task.sample(cfg, generator(8, STREAM_TRAIN, 0), 6)
    steps, index = task.readout_union(b)
    assert torch.equal(steps, steps.sort().values) and len(steps.unique()) == len(steps)
    y = steps.float()[None, None, :, None].expand(3, 6, -1, 2)  # readout value = its step
    picked = task.gather_recall(y, index)
    assert picked.shape == (3, 6, 2 * 5, 2)
    assert torch.equal(picked[0, :, :, 0].long(), b.recall_steps.flatten(1))


def test_metrics_on_hand_made_logits():
    targets = torch.tensor([[0, 1], [1, 1]])  # B=2, R=2
    good = torch.zeros(1, 2, 2, 3, 2)  # P=1, W=3
    good[0, 0, 0, :, 0] = 5.0
    good[0, 0, 1, :, 1] = 5.0
    good[0, 1, :, :, 1] = 5.0
    bad = -good
    logits = torch.cat([good, bad]).flatten(2, 3)  # (P=2, B, R*W, 2)
    assert torch.equal(task.recall_error(logits, targets), torch.tensor([0.0, 1.0]))
    ce = task.cross_entropy(logits, targets)
    assert ce.shape == (2,) and ce[0] < 0.01 and ce[1] > 4.9
    # the window mean decides: one wrong step out of three does not flip the recall
    mixed = good.clone()
    mixed[0, 0, 0, 0] = torch.tensor([0.0, 6.0])
    assert task.recall_error(mixed.flatten(2, 3), targets).item() == 0.0
    half = torch.zeros(1, 2, 2, 2)
    assert torch.allclose(task.cross_entropy(half, targets), torch.log(torch.tensor([2.0])))


def test_lsnn_rollout_reads_the_recall_windows():
    from es_l2l.snn.lsnn import LSNNParams, rollout

    cfg = small(n_stores=2, max_delay=3, readout_ms=4)
    b = task.sample(cfg, generator(9, STREAM_TRAIN, 0), 4)
    g = torch.Generator().manual_seed(0)
    pop, n = 2, 10
    params = LSNNParams(
        w_in=torch.randn(pop, cfg.n_in, n, generator=g), w_rec=torch.zeros(pop, n, n),
        w_out=torch.randn(pop, n, 2, generator=g), b_out=torch.zeros(pop, 2),
        alpha=torch.full((pop, n), 0.95), rho=torch.full((pop, n), 0.999), b0=torch.full((pop, n), 0.01),
        beta=torch.full((pop, n), 1.7), kappa=torch.full((pop, 1), 0.95))
    steps, index = task.readout_union(b)
    y = rollout(params, b.x, n_ref=3, readout_steps=steps).y
    full = rollout(params, b.x, n_ref=3).y
    logits = task.gather_recall(y, index)
    assert torch.allclose(logits, task.gather_recall(full, b.recall_steps.flatten(1)))
    assert task.recall_error(logits, b.targets).shape == (pop,)


def test_config_rejects_bad_values():
    with pytest.raises(ValidationError):
        StoreRecallTaskConfig(n_symbols=6, max_delay=5, n_stores=2)  # pairs do not fit
    with pytest.raises(ValidationError):
        StoreRecallTaskConfig(min_delay=4, max_delay=3)
    with pytest.raises(ValidationError):
        StoreRecallTaskConfig(unknown=1)
    with pytest.raises(ValidationError):
        StoreRecallTaskConfig(symbol_ms=10, readout_ms=20)
    cfg = StoreRecallTaskConfig()
    assert (cfg.n_steps, cfg.n_inputs, cfg.n_outputs, cfg.window_ms) == (2400, 100, 2, 200)
