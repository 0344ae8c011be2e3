"""Comparison tables (markdown, CSV, terminal) and the rows every family's comparison starts with.

Used by ``es-l2l compare`` and by each family's own comparison summary; knows no family: rows
are dicts, columns are ``(key, title)`` pairs, and "better" comes from the family's objective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from es_l2l.reporting.plots import pyplot, save_figure

NOT_REACHED = float("nan")


@dataclass
class Comparison:
    """What a family's comparison summary hands back to ``es-l2l compare``, as data: the shell
    (:func:`es_l2l.reporting.log_comparison`) logs it to the parent run and prints it."""

    rows: list[dict[str, Any]]
    verdict: str
    title: str
    columns: list[tuple[str, str]]
    printed: tuple[str, ...]  # the column keys the terminal shows (comparison.md has them all)
    winner: str | None = None  # the ``winner`` tag (with ``verdict``); None: neither tag
    metrics: dict[str, float] = field(default_factory=dict)  # the parent run's grouped metric keys
    figures: dict[str, Callable[[Path], object]] = field(default_factory=dict)  # file name -> draw(path)
    artifacts: dict[str, str] = field(default_factory=dict)  # further files: name -> text


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "not reached"
        return f"{v:.3g}" if abs(v) >= 1e4 else f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "| " + " | ".join("---" if k in ("name", "outer") else "---:" for k, _ in columns) + " |"
    body = ["| " + " | ".join(fmt(r[k]) if k in r else "" for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body]) + "\n"


def csv_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    lines = [",".join(k for k, _ in columns)]
    lines += [",".join(str(r.get(k, "")) for k, _ in columns) for r in rows]
    return "\n".join(lines) + "\n"


def rich_table(rows: list[dict[str, Any]], title: str, columns: list[tuple[str, str]], printed: tuple[str, ...]):
    """The table's main columns for the terminal (comparison.md in the parent run has them all)."""
    from rich.table import Table

    table = Table(title=title)
    cols = [(k, t) for k, t in columns if k in printed]
    for k, t in cols:
        table.add_column(t, justify="left" if k in ("name", "outer") else "right")
    for r in rows:
        table.add_row(*(fmt(r[k]) if k in r else "" for k, _ in cols), style="bold" if r["outer"] != "baseline" else None)
    return table


def validation_history(outcome, key: str) -> list[dict]:
    """The status dicts of a finished run that carry the validation metric ``key``."""
    return [h for h in outcome.result.history if key in h]


def to_target(outcome, objective, target: float) -> tuple[float, float]:
    """Training seconds and neuron-steps at which validation first reached ``target``."""
    for h in validation_history(outcome, objective.key):
        if objective.reached(h[objective.key], target):
            return h["elapsed_s"], float(h["neuron_steps"])
    return NOT_REACHED, NOT_REACHED


def row_head(c, vals: list[dict]) -> dict[str, Any]:
    """The columns every family's summary row starts with: who, how long, how much simulated."""
    return {
        "name": c.name,
        "outer": c.outer,
        "generations": c.outcome.result.generations,
        "train_s": vals[-1]["elapsed_s"],
        "neuron_steps": float(vals[-1]["neuron_steps"]),
    }


def default_target(objective, plan, done: list) -> float:
    """The comparison's target: the plan's, else the worst child's best validation value."""
    if plan.target is not None:
        return plan.target
    return objective.worst([objective.best(h[objective.key] for h in validation_history(c.outcome, objective.key)) for c in done])


GENERIC_COLUMNS = [
    ("name", "config"),
    ("outer", "outer loop"),
    ("generations", "gens/steps"),
    ("train_s", "train s"),
    ("neuron_steps", "neuron-steps"),
    ("final_val", "final val"),
    ("best_val", "best val"),
    ("test", "test"),
    ("s_to_target", "s to target"),
    ("neuron_steps_to_target", "steps to target"),
]
GENERIC_PRINTED = ("name", "outer", "generations", "train_s", "best_val", "test", "s_to_target")


def generic_comparison(objective, plan, children: list) -> Comparison:
    """A comparison for any family: validation objective over training, the report's test score
    (:attr:`HeldOut.score`) and the verdict by the objective's direction."""
    done = [c for c in children if c.outcome is not None]
    target = default_target(objective, plan, done)
    rows = []
    for c in done:
        vals = validation_history(c.outcome, objective.key)
        seconds, steps = to_target(c.outcome, objective, target)
        rows.append({
            **row_head(c, vals),
            "final_val": vals[-1][objective.key],
            "best_val": objective.best(h[objective.key] for h in vals),
            "test": c.outcome.report.score,
            "s_to_target": seconds,
            "neuron_steps_to_target": steps,
        })
    ranked = sorted(rows, key=lambda r: -r["test"] if objective.maximize else r["test"])
    order = ", then ".join(f"{r['name']} ({r['outer']}, {objective.fmt(r['test'])})" for r in ranked)
    way = "highest" if objective.maximize else "lowest"
    text = f"At equal budget ({plan.budget_text} each), {way} test {objective.label.removeprefix('val ')}: {order or 'none'}."
    title = comparison_title(plan, objective.label, objective.fmt(target))

    def draw(path: Path) -> Path:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        plot_validation([ax], done, objective.key)
        ax.set_xlabel("training wall time (s)")
        ax.set_ylabel(objective.label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.suptitle(title)
        return save_figure(fig, path)

    return Comparison(rows, text, title, GENERIC_COLUMNS, GENERIC_PRINTED, winner=ranked[0]["name"] if rows else None,
                      figures={"comparison.png": draw})


def plot_validation(axes, children: list, key: str) -> None:
    """Each finished child's validation ``key`` against training seconds on ``axes[0]`` and, where a
    second axis is given, against simulated neuron-steps on ``axes[1]`` (from the first step: a log
    axis has no place for 0); colours ``C0``, ``C1``, ... in the children's order."""
    for i, c in enumerate(ch for ch in children if ch.outcome is not None):
        vals = validation_history(c.outcome, key)
        label = f"{c.name} ({c.outer})"
        axes[0].plot([h["elapsed_s"] for h in vals], [h[key] for h in vals], color=f"C{i}", lw=2, marker=".", label=label)
        if len(axes) > 1:
            later = [h for h in vals if h["neuron_steps"] > 0]
            axes[1].plot([h["neuron_steps"] for h in later], [h[key] for h in later], color=f"C{i}", lw=2, marker=".", label=label)


def comparison_title(plan, label: str, target: str) -> str:
    """A comparison's title: the arms, the budget and the target (``label``: the objective's, e.g. ``val MSE(late)``)."""
    return f"{' vs '.join(c.name for c in plan.configs)}: {plan.budget_text} each; target {label} {target}"
