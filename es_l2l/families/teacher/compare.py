"""What ``es-l2l compare`` shows for the teacher family: validation MSE over training, test MSE per
trial index, time and compute to a target MSE, every baseline on the same held-out tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from es_l2l.families.teacher.baselines import baseline_mse_per_trial
from es_l2l.families.teacher.evaluate import OBJECTIVE, episode_metrics, task_batch
from es_l2l.families.teacher.report import LSNN_TRAINED, LSNN_UNTRAINED, curves_csv
from es_l2l.tracking.metric_keys import comparison_key, key_name, predictor
from es_l2l.reporting.plots import pyplot, save_figure
from es_l2l.seeds import STREAM_VALIDATION, SeedKey
from es_l2l.reporting.tables import (
    Comparison,
    comparison_title,
    default_target,
    plot_validation,
    row_head,
    to_target,
    validation_history,
)

KEY = OBJECTIVE.key


def summary_rows(children: list, target: float) -> list[dict[str, Any]]:
    """One row per finished child: the comparison's table."""
    rows = []
    for c in children:
        if c.outcome is None:
            continue
        vals = validation_history(c.outcome, KEY)
        test = c.outcome.report.rows[LSNN_TRAINED]
        seconds, steps = to_target(c.outcome, OBJECTIVE, target)
        rows.append(
            {
                **row_head(c, vals),
                "final_val_mse_late": vals[-1]["val_mse_late"],
                "best_val_mse_late": min(h["val_mse_late"] for h in vals),
                "test_mse_late": test["test_mse_late"],
                "test_mse_first": test["test_mse_first"],
                "test_mse_last": test["test_mse_last"],
                "s_to_target": seconds,
                "neuron_steps_to_target": steps,
            }
        )
    return rows

COLUMNS = [
    ("name", "config"),
    ("outer", "outer loop"),
    ("generations", "gens/steps"),
    ("train_s", "train s"),
    ("neuron_steps", "neuron-steps"),
    ("final_val_mse_late", "final val MSE"),
    ("best_val_mse_late", "best val MSE"),
    ("test_mse_late", "test MSE (late)"),
    ("test_mse_first", "test first"),
    ("test_mse_last", "test last"),
    ("s_to_target", "s to target"),
    ("neuron_steps_to_target", "steps to target"),
]

def baseline_rows(report) -> list[dict[str, Any]]:
    rows = []
    for name, m in report.metrics.items():
        if name == LSNN_TRAINED:
            continue
        label = report.label(name)
        rows.append({"name": label, "outer": "baseline", **{k: m[k] for k in ("test_mse_late", "test_mse_first", "test_mse_last")}})
    return rows

PRINTED = ("name", "outer", "generations", "train_s", "neuron_steps", "best_val_mse_late", "test_mse_late", "test_mse_last", "s_to_target")

def plot_comparison(children: list, val_baselines: dict[str, float], report, target: float, path: Path, title: str) -> Path:
    """Validation MSE against training seconds and against neuron-steps, and the test MSE per trial index."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), dpi=110)
    names = [n for n in report.curves if n != LSNN_TRAINED]
    colors = {n: ("gray" if n == LSNN_UNTRAINED else f"C{j + 3}") for j, n in enumerate(names)}
    plot_validation(axes[:2], children, KEY)
    for i, c in enumerate(ch for ch in children if ch.outcome is not None):
        curve = c.outcome.report.detail.curves[LSNN_TRAINED]
        axes[2].plot(range(1, len(curve) + 1), curve.numpy(), color=f"C{i}", lw=2, label=f"{c.name} ({c.outer})")
    for name, value in val_baselines.items():
        for ax in axes[:2]:
            ax.axhline(value, color=colors.get(name, "black"), ls="--", lw=1, label=name)
    for name in names:
        curve = report.curves[name]
        ls = ":" if name == LSNN_UNTRAINED else "--"
        axes[2].plot(range(1, len(curve) + 1), curve.numpy(), color=colors[name], ls=ls, lw=1.2, label=name)
    for ax in axes[:2]:
        ax.axhline(target, color="black", lw=0.6, alpha=0.5)
    axes[0].set_xlabel("training wall time (s)")
    axes[1].set_xlabel("simulated neuron-steps")
    axes[1].set_xscale("log")
    axes[2].set_xlabel("trial index within the episode")
    axes[0].set_ylabel("validation MSE, second half of episodes")
    axes[2].set_ylabel("test MSE (best genome)")
    for ax in axes:
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)

def verdict(rows: list[dict[str, Any]], report, budget_text: str) -> str:
    """Who won at equal budget, and which baselines each outer loop beats."""
    if not rows:
        return "No outer loop finished."
    ranked = sorted(rows, key=lambda r: r["test_mse_late"])
    order = ", then ".join(f"{r['name']} ({r['outer']}, {r['test_mse_late']:.4f})" for r in ranked)
    base = {name: m["test_mse_late"] for name, m in report.metrics.items()}
    fam, run = base.get("family mean", float("inf")), base.get("running mean", 0.0)
    beat_fam = [r["name"] for r in rows if r["test_mse_late"] < fam]
    beat_run = [r["name"] for r in rows if r["test_mse_late"] < run]
    baselines = {k: v for k, v in base.items() if k not in (LSNN_TRAINED, LSNN_UNTRAINED)}  # the first child's LSNN is not one
    strongest_name, strongest = min(baselines.items(), key=lambda kv: kv[1])
    beat_strongest = [r["name"] for r in rows if r["test_mse_late"] < strongest]
    return (
        f"At equal budget ({budget_text} each), lowest test MSE over the second half of each episode: {order}. "
        f"Beat the family mean ({fam:.4f}): {', '.join(beat_fam) or 'none'}. "
        f"Beat the running mean ({run:.4f}), i.e. learned more than each task's offset: {', '.join(beat_run) or 'none'}. "
        f"The strongest baseline, {strongest_name} ({strongest:.4f}), is beaten by {', '.join(beat_strongest) or 'none'}."
    )

def summarise(plan, children: list) -> Comparison:
    """Table, verdict, figure, curves and metrics of a teacher comparison (the shell logs them to the parent run)."""
    first = plan.configs[0]
    done = [c for c in children if c.outcome is not None]
    report = done[0].outcome.report.detail  # the same held-out test tasks for every child
    tasks = task_batch(first.task, SeedKey(first.run.seed, STREAM_VALIDATION), first.run.validation_tasks)
    val_curves = baseline_mse_per_trial(first.task, tasks, first.run.seed)
    val_baselines = {k: episode_metrics(v, "val")["val_mse_late"] for k, v in val_curves.items()}
    target = default_target(OBJECTIVE, plan, done)
    rows = summary_rows(children, target)
    text = verdict(rows, report, plan.budget_text)
    title = comparison_title(plan, "validation MSE", f"{target:.4f}")
    curves = {c.name: c.outcome.report.detail.curves[LSNN_TRAINED] for c in done}
    curves.update({k: v for k, v in report.curves.items() if k != LSNN_TRAINED})
    metrics = {"val/target": target}
    for r in rows:
        metrics.update({comparison_key(key_name(r["name"]), k): float(r[k]) for k in ("test_mse_late", "best_val_mse_late", "final_val_mse_late", "train_s", "neuron_steps")})
    metrics.update({comparison_key(f"baseline/{predictor(k)}", "test_mse_late"): m["test_mse_late"] for k, m in report.metrics.items()})
    return Comparison(
        rows + baseline_rows(report), text, title, COLUMNS, PRINTED,
        winner=min(rows, key=lambda r: r["test_mse_late"])["name"], metrics=metrics,
        figures={"comparison.png": lambda path: plot_comparison(children, val_baselines, report, target, path, title)},
        artifacts={"mse_per_trial.csv": curves_csv(curves)},
    )
