"""Held-out test report: the meta-trained LSNN beside the untrained one and every baseline.

All predictors are scored on the same fixed test tasks (a stream separate from the training
and validation tasks, so model selection never sees them).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from es_l2l.families.teacher.baselines import baseline_mse_per_trial, linear_share, within_share
from es_l2l.families.teacher.evaluate import episode_metrics, evaluate_params, task_batch, window
from es_l2l.plots import pyplot, save_figure
from es_l2l.seeds import STREAM_TEST

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig
    from es_l2l.genome import Genome

LSNN_TRAINED, LSNN_UNTRAINED = "LSNN meta-trained", "LSNN generation 0"


@dataclass
class HeldOutReport:
    curves: dict[str, torch.Tensor]  # name -> (n_trials,) MSE per trial index
    metrics: dict[str, dict[str, float]]  # name -> {mse, mse_late, mse_first, mse_last}
    within_share: float
    linear_share: float
    n_tasks: int

    def beaten(self) -> dict[str, bool]:
        """Baseline name -> whether the meta-trained LSNN has lower MSE over the late trials."""
        mine = self.metrics[LSNN_TRAINED]["test_mse_late"]
        return {k: mine < m["test_mse_late"] for k, m in self.metrics.items() if k != LSNN_TRAINED}

    def score(self) -> float:
        """The trained network's test MSE over the second half of each episode (the objective's metric)."""
        return self.metrics[LSNN_TRAINED]["test_mse_late"]

    def verdict(self) -> str:
        return verdict(self)

    def print(self, console, result) -> None:
        """Table, family statistics, verdict and the validation summary line, to the terminal."""
        console.print(summary_table(self))
        console.print(
            f"family: {self.within_share:.0%} of target variance lies within tasks; a linear fit explains "
            f"{self.linear_share:.0%} of it."
        )
        console.print(verdict(self))
        if result is None:  # es-l2l evaluate: no training history
            console.print(f"test MSE over late trials: {self.score():.4f}")
            return
        vals = [h for h in result.history if "val_mse_late" in h]
        console.print(
            f"validation MSE over late trials: {vals[0]['val_mse_late']:.4f} at generation 0 -> "
            f"{vals[-1]['val_mse_late']:.4f} at generation {vals[-1]['generation']} "
            f"(best {min(h['val_mse_late'] for h in vals):.4f} at generation {result.best_generation}); "
            f"test MSE over late trials: {self.score():.4f} (generation 0: {self.metrics[LSNN_UNTRAINED]['test_mse_late']:.4f})"
        )

    def log(self, tracker, cfg: ExperimentConfig, genome: Genome, result) -> None:
        """Plot, per-trial CSV, test metrics and verdict tags into the MLflow run."""
        with tempfile.TemporaryDirectory() as tmp:
            tracker.log_artifact(plot_curves(self, Path(tmp) / "mse_per_trial.png", f"{cfg.name}: held-out tasks"))
        tracker.log_text(self.to_csv(), "mse_per_trial.csv")
        tracker.log_metrics(self.flat_metrics(), step=result.generations)
        tags = {f"beats.{k}": str(v).lower() for k, v in self.beaten().items()}
        tracker.set_tags(tags | {"verdict": verdict(self)[:5000]})

    def to_csv(self) -> str:
        """MSE per trial index, one column per predictor."""
        return curves_csv(self.curves)

    def flat_metrics(self) -> dict[str, float]:
        out = {"family_within_task_share": self.within_share, "family_linear_fit_share": self.linear_share}
        for name, m in self.metrics.items():
            slug = name.lower().replace(" ", "_").replace("-", "_")
            out.update({f"{slug}.{k}": v for k, v in m.items()})
        return out


def curves_csv(curves: dict[str, torch.Tensor]) -> str:
    """Named (n_trials,) MSE curves as CSV: a ``trial`` column, then one column per name."""
    lines = ["trial," + ",".join(curves)]
    for i in range(len(next(iter(curves.values())))):
        lines.append(f"{i + 1}," + ",".join(f"{float(c[i]):.6f}" for c in curves.values()))
    return "\n".join(lines) + "\n"


@torch.no_grad()
def held_out_report(cfg: ExperimentConfig, genome: Genome, initial: torch.Tensor, trained: torch.Tensor) -> HeldOutReport:
    tasks = task_batch(cfg, (cfg.run.seed, STREAM_TEST), cfg.run.validation_tasks)
    params = genome.params(torch.stack([initial, trained]).to(cfg.run.device))
    ev = evaluate_params(cfg, params, tasks)
    curves = {LSNN_TRAINED: ev.mse_per_trial[1].cpu(), LSNN_UNTRAINED: ev.mse_per_trial[0].cpu()}
    curves.update(baseline_mse_per_trial(cfg.task, tasks, cfg.run.seed))
    metrics = {name: episode_metrics(c, "test") for name, c in curves.items()}
    return HeldOutReport(curves, metrics, within_share(tasks), linear_share(tasks), tasks.batch)


def plot_curves(report: HeldOutReport, path: str | Path, title: str = "") -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    styles = {LSNN_TRAINED: dict(color="C3", lw=2.5), LSNN_UNTRAINED: dict(color="C3", lw=1.2, ls=":")}
    baseline_colors = iter(["C0", "C1", "C2", "C4", "C5", "C6"])
    for name, curve in report.curves.items():
        style = styles.get(name) or dict(color=next(baseline_colors), lw=1.2, ls="--")
        ax.plot(range(1, len(curve) + 1), curve.numpy(), label=name, **style)
    ax.set_xlabel("trial index within the episode")
    ax.set_ylabel(f"MSE on {report.n_tasks} held-out tasks")
    ax.set_yscale("log")
    ax.set_title(title or "Learning from a teacher: error within an episode")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def verdict(report: HeldOutReport) -> str:
    """One plain sentence on which baselines the meta-trained LSNN beats."""
    beats = report.beaten()
    won = [k for k, v in beats.items() if v]
    lost = [k for k, v in beats.items() if not v]
    m = report.metrics[LSNN_TRAINED]
    learns = m["test_mse_last"] < m["test_mse_first"]
    parts = [
        f"Over the second half of each episode the meta-trained LSNN beats: {', '.join(won) or 'none'}",
        f"it does not beat: {', '.join(lost) or 'none'}.",
    ]
    parts.append(
        "Its error falls within an episode (last trials below first trials)."
        if learns
        else "Its error does not fall within an episode."
    )
    if not beats.get("family mean", True):
        parts.append("Not beating the family mean means it has not learned even each task's offset.")
    elif not beats.get("running mean", True):
        parts.append("Beating the family mean but not the running mean means it tracks each task's offset, not the function's shape.")
    else:
        parts.append("Beating the running mean means it learns more of each function than its offset.")
    return "; ".join(parts[:2]) + " " + " ".join(parts[2:])


def summary_table(report: HeldOutReport, k_window: int | None = None):
    from rich.table import Table

    n = len(next(iter(report.curves.values())))
    k = k_window or window(n)
    table = Table(title=f"Held-out test tasks ({report.n_tasks} episodes x {n} trials)")
    table.add_column("predictor")
    for col in ("all trials", "second half", f"first {k}", f"last {k}"):
        table.add_column(f"MSE {col}", justify="right")
    for name, m in report.metrics.items():
        style = "bold" if name == LSNN_TRAINED else None
        table.add_row(
            name,
            *(f"{m[key]:.4f}" for key in ("test_mse", "test_mse_late", "test_mse_first", "test_mse_last")),
            style=style,
        )
    return table
