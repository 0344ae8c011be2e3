"""Store-recall sequences (working memory; Bellec et al. 2018, Fig. 3), vectorised over a batch.

A sequence is ``n_symbols`` frames of ``symbol_ms`` steps. The ``n_in`` input neurons are split
into 4 groups (``numpy.array_split`` order): bit 0, bit 1, STORE, RECALL. An active group fires
Poisson spikes at ``rate_hz`` for the whole frame, the others are silent.

* A STORE frame shows the STORE cue together with the bit to remember (group 0 or 1).
* A RECALL frame shows the RECALL cue only; the network must output the bit of the STORE frame
  before it (the readout over the frame's last ``window_ms`` steps, 2 classes).
* Every other frame shows a random distractor bit (``distractors=True``) or nothing.

Several bits: ``n_stores`` store-recall pairs follow one another in the sequence (sequential
stores, 4 input groups whatever ``n_stores``): pair ``r`` occupies frames ``store_r`` ..
``recall_r = store_r + delay_r`` and ``recall_r < store_{r+1}``. Delays are uniform in
``[min_delay, max_delay]`` symbols, independently per pair; the ``n_symbols - sum(delay_r + 1)``
spare frames are spread before, between and after the pairs by ``n_stores`` sorted uniform cut
points (for one pair: the store frame is uniform over the frames where its recall still fits).

Randomness: each sequence consumes one row of ``torch.rand(batch, row_size(task), generator=gen)``
(its structure first, then its spike uniforms), so ``sample(task, gen, B)`` equals ``B`` calls of
``sample(task, gen, 1)`` on the same generator, concatenated (the test checks it).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from es_l2l.families.store_recall.config import StoreRecallTaskConfig

GROUP_BIT0, GROUP_BIT1, GROUP_STORE, GROUP_RECALL = 0, 1, 2, 3
CUE_NONE, CUE_STORE, CUE_RECALL = 0, 1, 2
NO_BIT = -1


class Batch(NamedTuple):
    """``B`` store-recall sequences with ``R = n_stores`` recalls each."""

    x: torch.Tensor  # (B, T, n_in) float32 input spikes
    targets: torch.Tensor  # (B, R) long: the bit to output at each recall
    store_symbol: torch.Tensor  # (B, R) long: frame index of each STORE
    recall_symbol: torch.Tensor  # (B, R) long: frame index of each RECALL
    delay_ms: torch.Tensor  # (B, R) long: (recall - store) * symbol_ms
    bits: torch.Tensor  # (B, n_symbols) long: bit shown in each frame, NO_BIT (-1) if none
    cues: torch.Tensor  # (B, n_symbols) long: CUE_NONE / CUE_STORE / CUE_RECALL
    recall_steps: torch.Tensor  # (B, R, W) long: the readout steps of each recall window
    recall_mask: torch.Tensor  # (B, T) bool: True on the recall windows' steps

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def n_recalls(self) -> int:
        return self.targets.shape[1]


def neuron_groups(n_in: int) -> torch.Tensor:
    """Group (0 bit 0, 1 bit 1, 2 store, 3 recall) of each input neuron: (n_in,) long."""
    parts = np.array_split(np.arange(n_in), 4)
    return torch.cat([torch.full((len(p),), g, dtype=torch.long) for g, p in enumerate(parts)])


def row_size(task: StoreRecallTaskConfig) -> int:
    """Uniforms one sequence consumes: delays, cut points, bits, spikes."""
    return 2 * task.n_stores + task.n_symbols + task.n_steps * task.n_in


def _uniform_int(u: torch.Tensor, low: torch.Tensor | int, n: torch.Tensor | int) -> torch.Tensor:
    """``low + floor(u * n)`` for u in [0, 1), kept below ``low + n`` against float rounding."""
    n = torch.as_tensor(n)
    k = torch.floor(u.double() * n.double()).long()
    return low + torch.minimum(k, n - 1)


def structure(task: StoreRecallTaskConfig, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Store frames, delays (symbols) and per-frame bits from the first uniforms of each row.

    ``u``: (B, 2R + n_symbols). Returns store (B, R), delay (B, R), bits (B, n_symbols), all long.
    """
    r = task.n_stores
    delay = _uniform_int(u[:, :r], task.min_delay, task.max_delay - task.min_delay + 1)  # (B, R)
    slack = task.n_symbols - (delay + 1).sum(dim=1, keepdim=True)  # (B, 1) >= 0 by the config check
    cuts = _uniform_int(u[:, r : 2 * r], 0, slack + 1).sort(dim=1).values  # (B, R) in [0, slack]
    before = torch.cumsum(delay + 1, dim=1) - (delay + 1)  # frames used by earlier pairs
    store = cuts + before
    bits = (u[:, 2 * r : 2 * r + task.n_symbols] < 0.5).long()
    return store, delay, bits


def frame_groups(task: StoreRecallTaskConfig, store: torch.Tensor, delay: torch.Tensor, bits: torch.Tensor):
    """Cues and shown bits per frame, and which of the 4 groups is active: (B, S), (B, S), (B, S, 4)."""
    batch = store.shape[0]
    recall = store + delay
    cues = torch.zeros(batch, task.n_symbols, dtype=torch.long)
    cues.scatter_(1, store, CUE_STORE)
    cues.scatter_(1, recall, CUE_RECALL)
    show = (cues == CUE_STORE) | ((cues == CUE_NONE) & task.distractors)
    shown = torch.where(show, bits, torch.full_like(bits, NO_BIT))
    active = torch.stack([shown == 0, shown == 1, cues == CUE_STORE, cues == CUE_RECALL], dim=-1)
    return cues, shown, active


def recall_windows(task: StoreRecallTaskConfig, recall: torch.Tensor) -> torch.Tensor:
    """Readout steps of each recall: the last ``window_ms`` steps of the frame, (B, R) -> (B, R, W)."""
    w = task.window_ms
    start = recall * task.symbol_ms + (task.symbol_ms - w)
    return start.unsqueeze(-1) + torch.arange(w)


def sample(task: StoreRecallTaskConfig, gen: torch.Generator, batch: int) -> Batch:
    """``batch`` sequences; a pure function of the generator's state (CPU generator)."""
    u = torch.rand(batch, row_size(task), generator=gen)
    head = 2 * task.n_stores + task.n_symbols
    store, delay, bits = structure(task, u[:, :head])
    cues, shown, active = frame_groups(task, store, delay, bits)
    groups = neuron_groups(task.n_in)
    p = task.rate_hz * 1e-3  # per 1 ms step
    on = active[:, :, groups]  # (B, S, n_in) bool
    on = on.repeat_interleave(task.symbol_ms, dim=1)  # (B, T, n_in)
    x = ((u[:, head:].view(batch, task.n_steps, task.n_in) < p) & on).to(torch.float32)
    recall = store + delay
    steps = recall_windows(task, recall)
    mask = torch.zeros(batch, task.n_steps, dtype=torch.bool)
    mask.scatter_(1, steps.flatten(1), True)
    return Batch(
        x=x,
        targets=bits.gather(1, store),
        store_symbol=store,
        recall_symbol=recall,
        delay_ms=delay * task.symbol_ms,
        bits=shown,
        cues=cues,
        recall_steps=steps,
        recall_mask=mask,
    )


def readout_union(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The steps to ask a rollout for, shared by the batch, and where each sequence's windows are.

    Returns ``steps`` (K,) sorted unique recall steps of the whole batch (pass as a rollout's
    ``readout_steps``) and ``index`` (B, R * W) into them: ``gather_recall(y, index)`` picks each
    sequence's own recall windows out of the rollout's (P, B, K, n_out) readout.
    """
    flat = batch.recall_steps.flatten(1)  # (B, R*W)
    steps = torch.unique(flat)  # sorted
    return steps, torch.searchsorted(steps, flat)


def gather_recall(y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(P, B, K, n_out) readout at the union steps, (B, R*W) index -> (P, B, R*W, n_out)."""
    pop, _, _, n_out = y.shape
    idx = index.to(y.device)[None, :, :, None].expand(pop, -1, -1, n_out)
    return y.gather(2, idx)


def recall_logits(logits: torch.Tensor, n_recalls: int) -> torch.Tensor:
    """Average each recall's window: (P, B, R * W, 2) -> (P, B, R, 2) (W = K / R consecutive steps)."""
    pop, batch, k, n_out = logits.shape
    if k % n_recalls:
        raise ValueError(f"{k} readout steps do not split into {n_recalls} recall windows")
    return logits.reshape(pop, batch, n_recalls, k // n_recalls, n_out).mean(dim=3)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per member: logits (P, B, K, 2) over the recall windows (K = R * W,
    each window's logits averaged first, as the reference does), targets (B, R) -> (P,)."""
    z = recall_logits(logits, targets.shape[1])  # (P, B, R, 2)
    tgt = targets.to(z.device).expand(z.shape[0], -1, -1)
    return F.cross_entropy(z.flatten(0, 2), tgt.flatten(), reduction="none").view(tgt.shape).mean(dim=(1, 2))


def recall_error(logits_at_recall: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction of wrong recalls per member: argmax of each window's mean logits, (P, B, K, 2),
    targets (B, R) -> (P,)."""
    z = recall_logits(logits_at_recall, targets.shape[1])
    return (z.argmax(dim=-1) != targets.to(z.device)).float().mean(dim=(1, 2))


__all__ = [
    "Batch",
    "CUE_NONE",
    "CUE_RECALL",
    "CUE_STORE",
    "NO_BIT",
    "cross_entropy",
    "frame_groups",
    "gather_recall",
    "neuron_groups",
    "readout_union",
    "recall_error",
    "recall_logits",
    "recall_windows",
    "row_size",
    "sample",
    "structure",
]
