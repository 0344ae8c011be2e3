"""What ``es-l2l compare`` shows for the maze family: validation reward over training, test reward,
moves to the first goal and per later trip, and the random, explorer and oracle agents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from es_l2l.families.maze.evaluate import OBJECTIVE
from es_l2l.families.maze.report import LSNN_TRAINED
from es_l2l.families.maze.report import baseline_rows as maze_baselines
from es_l2l.tracking.metric_keys import comparison_key, key_name, predictor
from es_l2l.reporting.plots import pyplot, save_figure
from es_l2l.seeds import STREAM_VALIDATION
from es_l2l.reporting.tables import NOT_REACHED, Comparison, comparison_title, default_target, plot_validation, row_head

MAZE_COLUMNS = [
    ("name", "config"),
    ("outer", "outer loop"),
    ("generations", "gens/steps"),
    ("train_s", "train s"),
    ("neuron_steps", "neuron-steps"),
    ("final_val_reward", "final val reward"),
    ("best_val_reward", "best val reward"),
    ("test_reward", "test reward"),
    ("test_reward_other_policy", "test reward, other action rule"),
    ("test_first_find", "moves to 1st goal"),
    ("test_later_trip", "moves / later trip"),
    ("s_to_target", "s to target"),
    ("neuron_steps_to_target", "steps to target"),
]
MAZE_PRINTED = ("name", "outer", "generations", "train_s", "best_val_reward", "test_reward", "test_reward_other_policy", "test_first_find", "test_later_trip", "s_to_target")


def maze_rows(children: list, target: float) -> list[dict[str, Any]]:
    rows = []
    for c in children:
        if c.outcome is None:
            continue
        vals = [h for h in c.outcome.result.history if "val_reward" in h]
        test = c.outcome.report.rows[LSNN_TRAINED]
        hit = next((h for h in vals if OBJECTIVE.reached(h["val_reward"], target)), None)
        rows.append(
            {
                **row_head(c, vals),
                "final_val_reward": vals[-1]["val_reward"],
                "best_val_reward": max(h["val_reward"] for h in vals),
                "test_reward": test["reward"],
                "test_reward_other_policy": c.outcome.report.detail.alt["reward"] if c.outcome.report.detail.alt else NOT_REACHED,
                "test_first_find": test["first_find"],
                "test_later_trip": test["later_trip"],
                "s_to_target": hit["elapsed_s"] if hit else NOT_REACHED,
                "neuron_steps_to_target": float(hit["neuron_steps"]) if hit else NOT_REACHED,
            }
        )
    return rows


def maze_verdict(rows: list[dict[str, Any]], report, budget_text: str) -> str:
    """Who earned most reward at equal budget, and where each stands against the baselines."""
    ranked = sorted(rows, key=lambda r: -r["test_reward"])
    order = ", then ".join(f"{r['name']} ({r['outer']}, {r['test_reward']:.2f})" for r in ranked)
    parts = [f"At equal budget ({budget_text} each), highest mean test reward per episode: {order}."]
    for agent in ("random", "explorer", "oracle"):
        value = report.metrics[agent]["reward"]
        won = [r["name"] for r in rows if r["test_reward"] > value]
        parts.append(f"Beat the {agent} agent ({value:.2f}): {', '.join(won) or 'none'}.")
    half = report.halfway
    parts.append(f"Reached halfway from random to explorer ({half:.2f}): {', '.join(r['name'] for r in rows if r['test_reward'] >= half) or 'none'}.")
    return " ".join(parts)


def plot_maze_comparison(children: list, val_baselines: dict[str, dict], path: Path, title: str) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), dpi=110)
    plot_validation(axes, children, "val_reward")
    for (name, row), color in zip(val_baselines.items(), ("C7", "C5", "C6")):
        for ax in axes:
            ax.axhline(row["reward"], color=color, ls="--", lw=1, label=f"{name} ({row['reward']:.2f})")
    axes[0].set_xlabel("training wall time (s)")
    axes[1].set_xlabel("simulated neuron-steps")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("validation reward per episode")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


def summarise(plan, children: list) -> Comparison:
    """Table, verdict, figure and metrics of a maze comparison (the shell logs them to the parent run)."""
    first = plan.configs[0]
    done = [c for c in children if c.outcome is not None]
    report = done[0].outcome.report.detail  # the same held-out test mazes for every child
    target = default_target(OBJECTIVE, plan, done)
    rows = maze_rows(children, target)
    base = []
    for name, m in report.metrics.items():
        if name != LSNN_TRAINED:
            base.append({"name": name, "outer": "baseline", "test_reward": m["reward"], "test_first_find": m["first_find"], "test_later_trip": m["later_trip"]})
    text = maze_verdict(rows, report, plan.budget_text)
    title = comparison_title(plan, "validation reward", f"{target:.2f}")
    metrics = {"val/target": target}
    for r in rows:
        metrics.update({comparison_key(key_name(r["name"]), k): float(r[k]) for k in ("test_reward", "best_val_reward", "final_val_reward", "train_s", "neuron_steps")})
    metrics.update({comparison_key(f"baseline/{predictor(b['name'])}", "test_reward"): b["test_reward"] for b in base})
    draw = lambda path: plot_maze_comparison(children, maze_baselines(first.task, first.run.seed, first.run.validation_tasks, STREAM_VALIDATION), path, title)
    return Comparison(rows + base, text, title, MAZE_COLUMNS, MAZE_PRINTED, winner=max(rows, key=lambda r: r["test_reward"])["name"],
                      metrics=metrics, figures={"comparison.png": draw})
