"""Held-out test report: the meta-trained LSNN beside the untrained one and every baseline.

All predictors are scored on the same fixed test tasks (a stream separate from the training
and validation tasks, so model selection never sees them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from es_l2l.config import ExperimentConfig
from es_l2l.fitness import evaluate_params, task_batch
from es_l2l.genome import Genome
from es_l2l.outer.loop import episode_metrics, held_out_test_keys, window
from es_l2l.tasks.teacher_baselines import baseline_mse_per_trial, linear_share, within_share

LSNN_TRAINED, LSNN_UNTRAINED = "LSNN meta-trained", "LSNN generation 0"


def save_figure(fig, path) -> Path:
    """Lay out, write and close a matplotlib figure; returns its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


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
    tasks = task_batch(cfg, held_out_test_keys(cfg), cfg.run.validation_tasks)
    params = genome.params(torch.stack([initial, trained]).to(cfg.run.device))
    ev = evaluate_params(cfg, params, tasks)
    curves = {LSNN_TRAINED: ev.mse_per_trial[1].cpu(), LSNN_UNTRAINED: ev.mse_per_trial[0].cpu()}
    curves.update(baseline_mse_per_trial(cfg.task, tasks, cfg.run.seed))
    metrics = {name: episode_metrics(c, "test") for name, c in curves.items()}
    return HeldOutReport(curves, metrics, within_share(tasks), linear_share(tasks), tasks.batch)


def family_report(cfg: ExperimentConfig, genome: Genome, initial: torch.Tensor, trained: torch.Tensor):
    """The held-out report of ``cfg``'s task family: :class:`HeldOutReport` or :class:`es_l2l.maze_report.MazeReport`."""
    if cfg.family == "maze":
        from es_l2l.maze_report import maze_report

        return maze_report(cfg, genome, initial, trained)
    return held_out_report(cfg, genome, initial, trained)


def plot_curves(report: HeldOutReport, path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
