"""Held-out sequential-MNIST report: test accuracy of the trained network on the test split beside
the untrained one, chance, and a static-image baseline (nearest class mean of the train split's
pixels, which sees the whole image at once), plus a spike raster of one digit."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from es_l2l.families.smnist import task as sm
from es_l2l.families.smnist.evaluate import OBJECTIVE, evaluate_batch, split
from es_l2l.plots import raster_figure

if TYPE_CHECKING:
    from es_l2l.context import RunContext
    from es_l2l.families.smnist.config import SMNISTTaskConfig
    from es_l2l.families.base import Decoder

TRAINED, UNTRAINED, CHANCE, CENTROID = "trained", "untrained (generation 0)", "chance", "nearest class mean (static image)"
CHUNK = 250


@dataclass
class SMNISTReport:
    accuracy: dict[str, float]
    n_digits: int
    name: str
    per_class: list[float]
    trained_vector: torch.Tensor | None = field(default=None, repr=False)

    def score(self) -> float:
        return self.accuracy[TRAINED]

    def beaten(self) -> dict[str, bool]:
        return {k: self.score() > v for k, v in self.accuracy.items() if k != TRAINED}

    def flat_metrics(self) -> dict[str, float]:
        out = {"test_accuracy": self.score()}
        out.update({f"{k.split(' (')[0].replace(' ', '_')}.test_accuracy": v for k, v in self.accuracy.items() if k != TRAINED})
        out.update({f"test_accuracy_digit_{d}": a for d, a in enumerate(self.per_class)})
        return out

    def verdict(self) -> str:
        won = [k for k, v in self.beaten().items() if v]
        lost = [k for k, v in self.beaten().items() if not v]
        return (f"{self.name}: test accuracy {self.score():.2%} on {self.n_digits} held-out digits; "
                f"beats: {', '.join(won) or 'none'}; does not beat: {', '.join(lost) or 'none'}.")

    def print(self, console, result) -> None:
        from rich.table import Table

        table = Table(title=f"Sequential MNIST: {self.n_digits} held-out test digits")
        table.add_column("predictor")
        table.add_column("accuracy", justify="right")
        for k, v in self.accuracy.items():
            table.add_row(k, f"{v:.2%}", style="bold" if k == TRAINED else None)
        console.print(table)
        console.print(self.verdict())
        if result is not None:
            console.print(OBJECTIVE.progress("accuracy", result.history, result.best_generation))

    def log(self, tracker, task: SMNISTTaskConfig, ctx: RunContext, genome: Decoder, result) -> None:
        tracker.log_metrics(self.flat_metrics(), step=result.generations)
        if ctx.model.spiking and self.trained_vector is not None:
            with tempfile.TemporaryDirectory() as tmp:
                tracker.log_artifact(raster(task, ctx, genome, self.trained_vector, Path(tmp) / "raster.png"))
        tags = {f"beats.{k.split(' (')[0].replace(' ', '_')}": str(v).lower() for k, v in self.beaten().items()}
        tracker.set_tags(tags | {"verdict": self.verdict()[:5000]})


def nearest_class_mean(task) -> float:
    """Test accuracy of the nearest class mean of the train split's images (Euclidean, raw pixels)."""
    train, test = split(task, "train"), split(task, "test")
    means = np.stack([train.images[train.labels == c].mean(axis=0) for c in range(10)])
    d = ((test.images[:, None, :] - means[None]) ** 2).sum(axis=-1)
    return float((d.argmin(axis=1) == test.labels).mean())


@torch.no_grad()
def held_out_report(task: SMNISTTaskConfig, ctx: RunContext, genome: Decoder, initial: torch.Tensor, trained: torch.Tensor) -> SMNISTReport:
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
    return SMNISTReport(acc, len(test), ctx.name, per_class, trained)


@torch.no_grad()
def raster(task: SMNISTTaskConfig, ctx: RunContext, genome: Decoder, vector: torch.Tensor, path) -> Path:
    """The trained LSNN on the first test digit: inputs, spikes, ALIF thresholds, readout."""
    from es_l2l.snn import threshold_trace

    test = split(task, "test")
    batch = sm.make_batch(task, test, torch.arange(1))
    params = genome.params(vector.unsqueeze(0).to(ctx.device, torch.float32))
    out = ctx.simulate(params, batch.x, record_spikes=True)
    n_lif = ctx.model_cfg.n_lif
    thr = threshold_trace(params, out.spikes[0, 0])[:, n_lif:].cpu() if ctx.model_cfg.n_alif else None
    probs = torch.softmax(out.y[0, 0], dim=-1).cpu()
    cue = task.n_steps() - task.cue_window
    title = f"{ctx.name}: first test digit (label {int(batch.labels[0])}); readout: class probabilities"
    return raster_figure(path, out.spikes[0, 0].cpu(), thr, n_lif, inputs=batch.x[0], readout=probs, title=title,
                         marks=[(cue * ctx.sim.dt, "cue")], dt=ctx.sim.dt)
