"""Held-out sequential-MNIST report: test accuracy of the trained network on the test split beside
the untrained one, chance, and a static-image baseline (nearest class mean of the train split's
pixels, which sees the whole image at once), plus a spike raster of one digit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from es_l2l.families.base import HeldOut
from es_l2l.families.classification import CHANCE, TRAINED, UNTRAINED, classification_held_out, network_raster
from es_l2l.families.smnist import task as sm
from es_l2l.families.smnist.evaluate import OBJECTIVE, evaluate_batch, split
from es_l2l.tracking.metric_keys import TRAINED as TRAINED_KEY
from es_l2l.tracking.metric_keys import withheld

if TYPE_CHECKING:
    from es_l2l.context import RunContext
    from es_l2l.families.smnist.config import SMNISTTaskConfig
    from es_l2l.families.base import Decoder

CENTROID = "nearest class mean (static image)"
CHUNK = 250


def nearest_class_mean(task) -> float:
    """Test accuracy of the nearest class mean of the train split's images (Euclidean, raw pixels)."""
    train, test = split(task, "train"), split(task, "test")
    means = np.stack([train.images[train.labels == c].mean(axis=0) for c in range(10)])
    d = ((test.images[:, None, :] - means[None]) ** 2).sum(axis=-1)
    return float((d.argmin(axis=1) == test.labels).mean())


@torch.no_grad()
def held_out_report(task: SMNISTTaskConfig, ctx: RunContext, genome: Decoder, initial: torch.Tensor, trained: torch.Tensor) -> tuple[dict[str, float], list[float], int]:
    """Accuracy per predictor, the trained network's accuracy per digit class, and the number of test digits."""
    test = split(task, "test")
    params = genome.params(torch.stack([trained, initial]).to(ctx.device, torch.float32))
    right = []
    for batch in sm.iterate(task, test, CHUNK):
        ev, _ = evaluate_batch(ctx, params, batch)
        right.append(ev.right.cpu())
    right = torch.cat(right, dim=1)  # (2, n)
    labels = torch.from_numpy(test.labels)
    per_class = [float(right[0][labels == c].mean()) for c in range(10)]
    acc = {TRAINED: float(right[0].mean()), UNTRAINED: float(right[1].mean()), CHANCE: 0.1,
           CENTROID: nearest_class_mean(task)}
    return acc, per_class, len(test)


def held_out(task: SMNISTTaskConfig, ctx: RunContext, genome: Decoder, initial: torch.Tensor, trained: torch.Tensor) -> HeldOut:
    """The sequential-MNIST report as the shell prints and logs it (a classification report)."""
    acc, per_class, n = held_out_report(task, ctx, genome, initial, trained)
    figures = {"raster.png": lambda path, history: raster(task, ctx, genome, trained, path)} if ctx.model.spiking else {}
    return classification_held_out(
        ctx.name, {who: {"accuracy": a} for who, a in acc.items()}, OBJECTIVE, [("accuracy", "accuracy")],
        title=f"Sequential MNIST: {n} held-out test digits", scored=f"test accuracy {acc[TRAINED]:.2%} on {n} held-out digits",
        what="accuracy", trained_metrics={withheld(TRAINED_KEY, f"accuracy_digit_{d}"): a for d, a in enumerate(per_class)},
        figures=figures,
    )


def raster(task: SMNISTTaskConfig, ctx: RunContext, genome: Decoder, vector: torch.Tensor, path) -> Path:
    """The trained LSNN on the first test digit: inputs, spikes, ALIF thresholds, readout."""
    test = split(task, "test")
    batch = sm.make_batch(task, test, torch.arange(1))
    cue = task.n_steps() - task.cue_window
    title = f"{ctx.name}: first test digit (label {int(batch.labels[0])}); readout: class probabilities"
    return network_raster(ctx, genome, vector, batch.x, path, title, [(cue * ctx.sim.dt, "cue")])
