"""What the two classification families (store-recall, sequential MNIST) share: the family object
and the held-out report. Each family supplies only what differs: its config, objective and
evaluation, its rows (predictor -> error rates or accuracies), its sentence and its pictures.

The trained network is scored beside the untrained one (generation 0), chance and the family's
own baselines on the same held-out inputs; what it beats follows from the objective's direction.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from es_l2l.families.base import HeldOut, Objective, TaskFamily
from es_l2l.tracking.metric_keys import TRAINED as TRAINED_KEY
from es_l2l.tracking.metric_keys import withheld, withheld_key

if TYPE_CHECKING:
    from es_l2l.context import RunContext
    from es_l2l.families.base import Decoder

TRAINED, UNTRAINED, CHANCE = "trained", "untrained (generation 0)", "chance"


class ClassificationFamily(TaskFamily):
    """A family whose network answers a class at cue steps: any model kind, through :func:`es_l2l.models.simulate`."""

    shared_inputs = True
    metric: str = ""  # the evaluation's field and the objective's metric ("recall_error", "accuracy")
    report_module: str = ""  # a module with ``held_out(task, ctx, genome, initial, trained) -> HeldOut``
    evaluate_params: Callable = None  # the family's ``evaluate_params(task, ctx, params, key, batch)``

    def io_sizes(self, task) -> tuple[int, int]:
        return task.n_inputs, task.n_outputs

    def evaluate(self, task, ctx, params, key, batch):
        return type(self).evaluate_params(task, ctx, params, key, batch)

    def validation_metrics(self, ev) -> dict[str, float]:
        return {
            f"val_{self.metric}": float(getattr(ev, self.metric)[0]),
            "val_cross_entropy": float(ev.cross_entropy[0]),
            "val_rate_hz": float(ev.rate_hz[0]),
        }

    def report(self, task, ctx, genome, initial, trained):
        return importlib.import_module(self.report_module).held_out(task, ctx, genome, initial, trained)


def pct(x: float) -> str:
    return "n/a" if x != x else f"{x:.2%}"


def slug(who: str) -> str:
    """A predictor's ``beats.<slug>`` tag name: its printed name without the parenthesis, spaces as ``_``."""
    return who.split(" (")[0].replace(" ", "_")


def classification_held_out(
    name: str,
    rows: dict[str, dict[str, float]],
    objective: Objective,
    columns: list[tuple[str, str]],
    title: str,
    scored: str,
    what: str,
    trained_metrics: dict[str, float] | None = None,
    printed: list | None = None,
    figures: dict | None = None,
    artifacts: dict | None = None,
) -> HeldOut:
    """The held-out report of a classification family.

    ``rows``: predictor -> {metric: value}, the trained network under :data:`TRAINED`; ``columns``:
    (metric, printed title) of the table titled ``title``; ``scored``: the trained network's result
    in words (the verdict's first clause, after the run's ``name``); ``what``: the objective's
    metric in the closing line; ``trained_metrics``: further ``withheld/model/<metric>`` values;
    ``printed``: lines after the table.
    """
    from rich.table import Table

    metric = objective.key.removeprefix("val_")
    score = rows[TRAINED][metric]
    beats = {who: objective.better(score, m[metric]) for who, m in rows.items() if who != TRAINED}
    won = [k for k, v in beats.items() if v]
    lost = [k for k, v in beats.items() if not v]
    verdict = f"{name}: {scored}; beats: {', '.join(won) or 'none'}; does not beat: {', '.join(lost) or 'none'}."
    metrics = {withheld(TRAINED_KEY, k): v for k, v in rows[TRAINED].items()}
    metrics.update(trained_metrics or {})
    metrics.update({withheld_key(who, k): v for who, m in rows.items() if who != TRAINED for k, v in m.items()})
    table = Table(title=title)
    table.add_column("predictor")
    for _, header in columns:
        table.add_column(header, justify="right")
    for who, m in rows.items():
        table.add_row(who, *(pct(m[k]) for k, _ in columns), style="bold" if who == TRAINED else None)

    def closing(result) -> str | None:
        return None if result is None else objective.progress(what, result.history, result.best_generation)

    return HeldOut(rows=rows, score=score, verdict=verdict, beats={slug(k): v for k, v in beats.items()}, metrics=metrics,
                   figures=figures or {}, artifacts=artifacts or {}, printed=[table, *(printed or [])], closing=closing)


@torch.no_grad()
def network_raster(ctx: RunContext, genome: Decoder, vector: torch.Tensor, x: torch.Tensor, path: Path, title: str,
                   marks: list[tuple[float, str]], readout_from: int = 0) -> Path:
    """The network ``vector`` on one input sequence ``x`` (1, T, n_in): inputs, spikes, ALIF thresholds and
    the softmax readout (classes from ``readout_from`` on)."""
    from es_l2l.reporting.plots import raster_figure
    from es_l2l.snn import threshold_trace

    params = genome.params(vector.unsqueeze(0).to(ctx.device, torch.float32))
    out = ctx.simulate(params, x, record_spikes=True)
    n_lif = ctx.model_cfg.n_lif
    thr = threshold_trace(params, out.spikes[0, 0])[:, n_lif:].cpu() if ctx.model_cfg.n_alif else None
    probs = torch.softmax(out.y[0, 0], dim=-1)[:, readout_from:].cpu()
    return raster_figure(path, out.spikes[0, 0].cpu(), thr, n_lif, inputs=x[0], readout=probs, title=title, marks=marks, dt=ctx.sim.dt)
