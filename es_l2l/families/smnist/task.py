"""Sequential-MNIST batches and metrics (the pure parts a TaskFamily will wrap).

The prediction of a digit is the readout averaged over the last ``readout_window`` steps (the
second half of the cue window by default, as the reference's ``tf_downsample(...)[:, -1]``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F

from es_l2l.families.smnist.config import SMNISTTaskConfig
from es_l2l.families.smnist.data import Digits
from es_l2l.families.smnist.encode import encode, readout_steps


class SMNISTBatch(NamedTuple):
    x: torch.Tensor  # (B, T, n_in) float32 input spikes
    labels: torch.Tensor  # (B,) long
    index: torch.Tensor  # (B,) long: which digits of the split
    readout_steps: torch.Tensor  # (W,) long, shared by the batch

    @property
    def batch(self) -> int:
        return self.x.shape[0]


def make_batch(task: SMNISTTaskConfig, digits: Digits, index: torch.Tensor) -> SMNISTBatch:
    idx = index.cpu().numpy()
    x = encode(task, torch.from_numpy(digits.images[idx]))
    return SMNISTBatch(x=x, labels=torch.from_numpy(digits.labels[idx]).long(), index=index,
                       readout_steps=readout_steps(task, digits.images.shape[1]))


def sample(task: SMNISTTaskConfig, digits: Digits, gen: torch.Generator, batch: int) -> SMNISTBatch:
    """``batch`` digits drawn uniformly with replacement; a pure function of the generator's state."""
    return make_batch(task, digits, torch.randint(len(digits), (batch,), generator=gen))


def iterate(task: SMNISTTaskConfig, digits: Digits, batch: int) -> Iterator[SMNISTBatch]:
    """The whole split in its order, ``batch`` digits at a time (the last batch may be smaller)."""
    for start in range(0, len(digits), batch):
        yield make_batch(task, digits, torch.arange(start, min(start + batch, len(digits))))


def class_logits(y: torch.Tensor) -> torch.Tensor:
    """Readout at the W readout steps (P, B, W, 10) -> its mean (P, B, 10)."""
    return y.mean(dim=2)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per member: (P, B, W, 10), labels (B,) -> (P,)."""
    z = class_logits(logits)
    tgt = labels.to(z.device).expand(z.shape[0], -1)
    return F.cross_entropy(z.flatten(0, 1), tgt.flatten(), reduction="none").view(tgt.shape).mean(dim=1)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of digits classified right per member: (P, B, W, 10), labels (B,) -> (P,)."""
    return (class_logits(logits).argmax(dim=-1) == labels.to(logits.device)).float().mean(dim=1)


__all__ = ["SMNISTBatch", "accuracy", "class_logits", "cross_entropy", "iterate", "make_batch", "sample"]
