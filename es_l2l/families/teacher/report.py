"""Held-out test report: the meta-trained network (LSNN, LIF network or LSTM) beside the untrained one and every baseline.

All predictors are scored on the same fixed test tasks (a stream separate from the training
and validation tasks, so model selection never sees them). With ``task.frequent_targets`` the
report adds the frequent-vs-fresh split of :mod:`es_l2l.families.teacher.groups`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from es_l2l.families.base import HeldOut
from es_l2l.families.teacher.baselines import (
    baseline_predictions,
    family_mean,
    linear_share,
    mse_per_trial,
    predict_running_mean,
    within_share,
)
from es_l2l.families.teacher.episode_plot import episode_trace, plot_episode
from es_l2l.families.teacher.evaluate import (
    LSNN_TRAINED,
    LSNN_UNTRAINED,
    OBJECTIVE,
    episode_metrics,
    evaluate_params,
    model_name,
    task_batch,
    window,
)
from es_l2l.families.teacher.groups import GroupSplit, group_split, plot_groups
from es_l2l.tracking.metric_keys import withheld, withheld_key
from es_l2l.reporting.plots import pyplot, save_figure
from es_l2l.seeds import STREAM_TEST, SeedKey
from es_l2l.reporting.stats import paired_normal_interval

if TYPE_CHECKING:
    from es_l2l.context import RunContext
    from es_l2l.families.teacher.config import TeacherConfig
    from es_l2l.families.base import Decoder


@dataclass
class HeldOutReport:
    curves: dict[str, torch.Tensor]  # name -> (n_trials,) MSE per trial index
    metrics: dict[str, dict[str, float]]  # name -> {mse, mse_late, mse_first, mse_last}
    within_share: float
    linear_share: float
    n_tasks: int
    # the trained LSNN minus the running mean, per-episode MSE over the second half: mean, 95% CI
    paired: dict[str, float] = field(default_factory=dict)
    episode: dict | None = None  # the trained network on test episode 0 (episode_plot.episode_trace)
    groups: GroupSplit | None = None  # with task.frequent_targets: frequent vs fresh target networks
    model: str = "LSNN"  # the trained model kind in words (evaluate.model_name): what the report shows

    def label(self, name: str) -> str:
        """A predictor's shown name: the trained and untrained network named by the model kind."""
        return self.model + name.removeprefix("LSNN") if name in (LSNN_TRAINED, LSNN_UNTRAINED) else name

    def beaten(self) -> dict[str, bool]:
        """Baseline key -> whether the meta-trained network has lower MSE over the late trials."""
        mine = self.metrics[LSNN_TRAINED]["test_mse_late"]
        return {k: mine < m["test_mse_late"] for k, m in self.metrics.items() if k != LSNN_TRAINED}

    def score(self) -> float:
        """The trained network's test MSE over the second half of each episode (the objective's metric)."""
        return self.metrics[LSNN_TRAINED]["test_mse_late"]

    def verdict(self) -> str:
        return verdict(self)

    def to_csv(self) -> str:
        """MSE per trial index, one column per predictor."""
        return curves_csv({self.label(k): v for k, v in self.curves.items()})

    def test_metrics(self) -> dict[str, float]:
        """The MLflow keys: ``withheld/<predictor>/<metric>`` per predictor, the paired difference to the
        running mean, the task family's statistics and, with frequent targets, the group split."""
        out = {withheld("family", "within_task_share"): self.within_share, withheld("family", "linear_fit_share"): self.linear_share}
        for name, m in self.metrics.items():
            out.update({withheld_key(name, k.removeprefix("test_")): v for k, v in m.items()})
        out.update({withheld("model_minus_running_mean", k): v for k, v in self.paired.items()})
        if self.groups is not None:
            out.update(self.groups.test_metrics())
        return out

    def closing(self, result) -> str:
        """The last line: the validation over training (when there was training) and the test score."""
        if result is None:  # es-l2l evaluate: no training history
            return f"test MSE over late trials: {self.score():.4f}"
        return (
            OBJECTIVE.progress("MSE over late trials", result.history, result.best_generation) + "; "
            f"test MSE over late trials: {self.score():.4f} (generation 0: {self.metrics[LSNN_UNTRAINED]['test_mse_late']:.4f})"
        )


def held_out(task: TeacherConfig, ctx: RunContext, genome: Decoder, initial: torch.Tensor, trained: torch.Tensor) -> HeldOut:
    """The teacher family's held-out report as the shell prints and logs it."""
    report = held_out_report(task, ctx, genome, initial, trained)
    figures = {"mse_per_trial.png": lambda path, history: plot_curves(report, path, f"{ctx.name}: held-out tasks")}
    artifacts = {"mse_per_trial.csv": report.to_csv()}
    printed = [
        summary_table(report),
        f"family: {report.within_share:.0%} of target variance lies within tasks; a linear fit explains "
        f"{report.linear_share:.0%} of it.",
    ]
    if report.episode is not None:
        figures["typical_episode.png"] = lambda path, history: plot_episode(task, report.episode, path, ctx.name)
    if report.groups is not None:
        title = f"{ctx.name}: frequent vs fresh target networks"
        figures["mse_per_trial_groups.png"] = lambda path, history: plot_groups(report.groups, path, title)
        artifacts["mse_per_trial_groups.csv"] = report.groups.to_csv()
        printed.append(report.groups.table())
    return HeldOut(rows=report.metrics, score=report.score(), verdict=verdict(report), beats=report.beaten(),
                   metrics=report.test_metrics(), figures=figures, artifacts=artifacts, printed=printed,
                   closing=report.closing, detail=report)


def late_per_episode(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) MSE over the second half of each episode (predictions and targets (B, n_trials))."""
    return (pred - y).pow(2)[:, y.shape[1] // 2 :].mean(dim=1)


def curves_csv(curves: dict[str, torch.Tensor]) -> str:
    """Named (n_trials,) MSE curves as CSV: a ``trial`` column, then one column per name."""
    lines = ["trial," + ",".join(curves)]
    for i in range(len(next(iter(curves.values())))):
        lines.append(f"{i + 1}," + ",".join(f"{float(c[i]):.6f}" for c in curves.values()))
    return "\n".join(lines) + "\n"


@torch.no_grad()
def held_out_report(task: TeacherConfig, ctx: RunContext, genome: Decoder, initial: torch.Tensor, trained: torch.Tensor) -> HeldOutReport:
    tasks = task_batch(task, SeedKey(ctx.seed, STREAM_TEST), ctx.validation_tasks)
    params = genome.params(torch.stack([initial, trained]).to(ctx.device))
    ev = evaluate_params(task, ctx, params, tasks)
    curves = {LSNN_TRAINED: ev.mse_per_trial[1].cpu(), LSNN_UNTRAINED: ev.mse_per_trial[0].cpu()}
    baselines = baseline_predictions(task, tasks, ctx.seed)
    curves.update(mse_per_trial(baselines, tasks.y))
    metrics = {name: episode_metrics(c, "test") for name, c in curves.items()}
    running = predict_running_mean(tasks.y, family_mean(task, ctx.seed))
    paired = paired_normal_interval(late_per_episode(ev.predictions[1].cpu(), tasks.y), late_per_episode(running, tasks.y)).as_dict()
    episode = episode_trace(task, ctx, genome.params(trained.unsqueeze(0).to(ctx.device)), tasks, 0)
    groups = None
    if task.frequent_targets:  # the frequent-targets experiment: frequent vs fresh networks
        lsnn = {LSNN_TRAINED: ev.predictions[1].cpu(), LSNN_UNTRAINED: ev.predictions[0].cpu()}
        groups = group_split(task, ctx, genome, initial, trained, tasks, baselines | lsnn)
    return HeldOutReport(
        curves, metrics, within_share(tasks), linear_share(tasks), tasks.batch, paired, episode, groups, model_name(ctx)
    )


def plot_curves(report: HeldOutReport, path: str | Path, title: str = "") -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    styles = {LSNN_TRAINED: dict(color="C3", lw=2.5), LSNN_UNTRAINED: dict(color="C3", lw=1.2, ls=":")}
    baseline_colors = iter(["C0", "C1", "C2", "C4", "C5", "C6"])
    for name, curve in report.curves.items():
        style = styles.get(name) or dict(color=next(baseline_colors), lw=1.2, ls="--")
        ax.plot(range(1, len(curve) + 1), curve.numpy(), label=report.label(name), **style)
    ax.set_xlabel("trial index within the episode")
    ax.set_ylabel(f"MSE on {report.n_tasks} held-out tasks")
    ax.set_yscale("log")
    ax.set_title(title or "Learning from a teacher: error within an episode")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def verdict(report: HeldOutReport) -> str:
    """One plain sentence on which baselines the meta-trained network beats."""
    beats = report.beaten()
    won = [report.label(k) for k, v in beats.items() if v]
    lost = [report.label(k) for k, v in beats.items() if not v]
    m = report.metrics[LSNN_TRAINED]
    learns = m["test_mse_last"] < m["test_mse_first"]
    parts = [
        f"Over the second half of each episode the meta-trained {report.model} beats: {', '.join(won) or 'none'}",
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
    out = "; ".join(parts[:2]) + " " + " ".join(parts[2:])
    out += " " + paired_sentence(report.paired, report.model) if report.paired else ""
    return out + (" " + report.groups.verdict() if report.groups is not None else "")


def paired_sentence(p: dict[str, float], model: str = "LSNN") -> str:
    """The paired comparison with the running mean, in words."""
    if p["hi"] < 0:
        how = "below the running mean, outside the 95% CI"
    elif p["lo"] > 0:
        how = "above the running mean, outside the 95% CI"
    else:
        how = "not distinguishable from the running mean at 95%"
    return (
        f"Per-episode MSE over the second half, {model} minus running mean: {p['mean']:+.4f} "
        f"(95% CI {p['lo']:+.4f} to {p['hi']:+.4f}, {int(p['n'])} episodes): {how}."
    )


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
            report.label(name),
            *(f"{m[key]:.4f}" for key in ("test_mse", "test_mse_late", "test_mse_first", "test_mse_last")),
            style=style,
        )
    return table
