"""``es-l2l compare``: several outer loops on the same budget, as child runs of one MLflow parent.

Every child is an ordinary run (``run_experiment``) whose budget is the same number of training
seconds or simulated neuron-steps; children run one after another so that each has the whole
machine. All children share the task family, the seed and so the validation and test tasks; the
parent gets the learning curves of every child in one plot, a table (final and best validation
MSE, test MSE per trial index, time and compute to a target MSE) and the baselines on the same
held-out tasks.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from es_l2l.config import ConfigError, ExperimentConfig, build_config, load_config, read_yaml
from es_l2l.report import LSNN_TRAINED, LSNN_UNTRAINED, curves_csv, save_figure

NOT_REACHED = float("nan")


class CompareError(RuntimeError):
    """A comparison could not finish every child; the message says which and why."""


@dataclass
class Plan:
    configs: list[ExperimentConfig]
    budget: tuple[str, float]  # ("seconds" | "neuron_steps", amount)
    target_mse: float | None = None
    sources: list[str] = field(default_factory=list)

    @property
    def budget_text(self) -> str:
        kind, amount = self.budget
        return f"{amount:g} s of training" if kind == "seconds" else f"{amount:.3g} neuron-steps"


COMPARE_KEYS = {"configs", "budget_seconds", "budget_neuron_steps", "target_mse", "set"}


def resolve_plan(
    paths: list[str],
    overrides: list[str],
    budget_seconds: float | None,
    budget_neuron_steps: float | None,
    target_mse: float | None,
) -> Plan:
    """Experiment configs with the budget applied, checked to be comparable (ConfigError otherwise).

    Compared configs must share the task family (all but ``task.batch_size``, the training batch
    per step), the seed and the number of held-out tasks, so that they meet the same validation
    and test episodes, and the tracking store.
    """
    sources, overrides = [Path(p) for p in paths], list(overrides)
    if len(sources) == 1 and "configs" in (tree := read_yaml(sources[0], "configs/compare_teacher.yaml")):
        unknown = set(tree) - COMPARE_KEYS
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(sorted(unknown))} in comparison file '{sources[0]}'; allowed: {', '.join(sorted(COMPARE_KEYS))}")
        base = sources[0].parent
        sources = [base / p for p in tree["configs"]]
        if budget_seconds is None and budget_neuron_steps is None:
            budget_seconds, budget_neuron_steps = tree.get("budget_seconds"), tree.get("budget_neuron_steps")
        target_mse = target_mse if target_mse is not None else tree.get("target_mse")
        overrides = list(tree.get("set") or []) + overrides
    if budget_seconds is not None and budget_neuron_steps is not None:
        raise ConfigError("give one budget, seconds or neuron-steps, not both")
    if budget_seconds is None and budget_neuron_steps is None:
        raise ConfigError("compare needs a budget: pass --budget-seconds S or --budget-neuron-steps N")
    budget = ("seconds", float(budget_seconds)) if budget_seconds is not None else ("neuron_steps", float(budget_neuron_steps))
    if budget[1] <= 0:
        raise ConfigError(f"the budget must be positive, got {budget[1]:g}")
    if len(sources) < 1:
        raise ConfigError("compare needs at least one experiment config")
    limit = [f"run.max_seconds={budget[1]}", "run.max_neuron_steps=null"] if budget[0] == "seconds" else [
        f"run.max_neuron_steps={int(budget[1])}", "run.max_seconds=null"
    ]
    configs = []
    for src in sources:
        cfg = load_config(src, overrides)
        configs.append(build_config(cfg.model_dump(), ["run.generations=1000000000", *limit]))
    first = configs[0]
    for src, cfg in zip(sources, configs):
        for what, mine, theirs in (
            ("task", cfg.task.model_copy(update={"batch_size": 0}), first.task.model_copy(update={"batch_size": 0})),
            ("run.seed", cfg.run.seed, first.run.seed),
            ("run.validation_tasks", cfg.run.validation_tasks, first.run.validation_tasks),
            ("tracking.uri", cfg.tracking.uri, first.tracking.uri),
            ("tracking.experiment", cfg.tracking.experiment, first.tracking.experiment),
        ):
            if mine != theirs:
                raise ConfigError(f"'{src}' differs from '{sources[0]}' in {what}; compared runs must share it so they meet the same held-out tasks")
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"two configs share the name '{max(set(names), key=names.count)}'; give each compared config its own name")
    return Plan(configs, budget, target_mse, [str(s) for s in sources])


@dataclass
class Child:
    name: str
    outer: str
    run_id: str | None
    outcome: Any = None  # experiment.Outcome
    error: str | None = None


def _validation_history(outcome) -> list[dict]:
    return [h for h in outcome.result.history if "val_mse_late" in h]


def _to_target(outcome, target: float) -> tuple[float, float]:
    for h in _validation_history(outcome):
        if h["val_mse_late"] <= target:
            return h["elapsed_s"], float(h["neuron_steps"])
    return NOT_REACHED, NOT_REACHED


def _row_head(c: Child, vals: list[dict]) -> dict[str, Any]:
    """The columns every family's summary row starts with: who, how long, how much simulated."""
    return {
        "name": c.name,
        "outer": c.outer,
        "generations": c.outcome.result.generations,
        "train_s": vals[-1]["elapsed_s"],
        "neuron_steps": float(vals[-1]["neuron_steps"]),
    }


def summary_rows(children: list[Child], target: float) -> list[dict[str, Any]]:
    """One row per finished child: the comparison's table."""
    rows = []
    for c in children:
        if c.outcome is None:
            continue
        vals = _validation_history(c.outcome)
        test = c.outcome.report.metrics[LSNN_TRAINED]
        seconds, steps = _to_target(c.outcome, target)
        rows.append(
            {
                **_row_head(c, vals),
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


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "not reached"
        return f"{v:.3g}" if abs(v) >= 1e4 else f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


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
        label = "LSNN generation 0" if name == LSNN_UNTRAINED else name
        rows.append({"name": label, "outer": "baseline", **{k: m[k] for k in ("test_mse_late", "test_mse_first", "test_mse_last")}})
    return rows


def markdown_table(rows: list[dict[str, Any]], columns=None) -> str:
    columns = columns or COLUMNS
    head = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "| " + " | ".join("---" if k in ("name", "outer") else "---:" for k, _ in columns) + " |"
    body = ["| " + " | ".join(_fmt(r[k]) if k in r else "" for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body]) + "\n"


def csv_table(rows: list[dict[str, Any]], columns=None) -> str:
    columns = columns or COLUMNS
    lines = [",".join(k for k, _ in columns)]
    lines += [",".join(str(r.get(k, "")) for k, _ in columns) for r in rows]
    return "\n".join(lines) + "\n"


PRINTED = ("name", "outer", "generations", "train_s", "neuron_steps", "best_val_mse_late", "test_mse_late", "test_mse_last", "s_to_target")


def rich_table(rows: list[dict[str, Any]], title: str, columns=None, printed=PRINTED) -> Table:
    """The table's main columns for the terminal (comparison.md in the parent run has them all)."""
    table = Table(title=title)
    cols = [(k, t) for k, t in columns or COLUMNS if k in printed]
    for k, t in cols:
        table.add_column(t, justify="left" if k in ("name", "outer") else "right")
    for r in rows:
        table.add_row(*(_fmt(r[k]) if k in r else "" for k, _ in cols), style="bold" if r["outer"] != "baseline" else None)
    return table


def plot_comparison(children: list[Child], val_baselines: dict[str, float], report, target: float, path: Path, title: str) -> Path:
    """Validation MSE against training seconds and against neuron-steps, and the test MSE per trial index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), dpi=110)
    names = [n for n in report.curves if n != LSNN_TRAINED]
    colors = {n: ("gray" if n == LSNN_UNTRAINED else f"C{j + 3}") for j, n in enumerate(names)}
    for i, c in enumerate(ch for ch in children if ch.outcome is not None):
        vals = _validation_history(c.outcome)
        mse = [h["val_mse_late"] for h in vals]
        label = f"{c.name} ({c.outer})"
        axes[0].plot([h["elapsed_s"] for h in vals], mse, color=f"C{i}", lw=2, marker=".", label=label)
        later = [h for h in vals if h["neuron_steps"] > 0]  # the log axis has no place for step 0
        axes[1].plot([h["neuron_steps"] for h in later], [h["val_mse_late"] for h in later], color=f"C{i}", lw=2, marker=".", label=label)
        curve = c.outcome.report.curves[LSNN_TRAINED]
        axes[2].plot(range(1, len(curve) + 1), curve.numpy(), color=f"C{i}", lw=2, label=label)
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


def compare(plan: Plan, console: Console) -> int:
    """Run every child under the plan's budget, then log the comparison to the parent run."""
    from es_l2l.distributed import ClusterError
    from es_l2l.experiment import RunFailed, quiet_libraries, run_experiment
    from es_l2l.redact import safe_yaml
    from es_l2l.tracking import MlflowRun, ui_command

    first = plan.configs[0]
    names = [c.name for c in plan.configs]
    parent = MlflowRun(
        first,
        run_name="compare " + " vs ".join(names),
        tags={"es_l2l.compare": "parent", "es_l2l.budget": plan.budget_text},
        log_config=False,
    )
    quiet_libraries()
    console.print(f"[bold]es-l2l compare[/] {' vs '.join(names)} at {plan.budget_text} each; MLflow parent run {parent.run_id}")
    from mlflow.entities import Param

    params = [Param("budget_kind", plan.budget[0]), Param("budget", str(plan.budget[1])), Param("children", ",".join(names))]
    parent.client.log_batch(parent.run_id, params=params)
    for cfg in plan.configs:
        parent.log_text(safe_yaml(cfg), f"{cfg.name}.yaml")  # tracking.uri without credentials
    children: list[Child] = []
    try:
        for cfg in plan.configs:
            child = Child(cfg.name, cfg.outer, None)
            try:
                child.outcome = run_experiment(cfg, console, tags={"mlflow.parentRunId": parent.run_id, "es_l2l.compare": "child"})
                child.run_id = child.outcome.run_id
            except (ClusterError, RunFailed) as exc:
                child.error, child.run_id = str(exc), getattr(exc, "run_id", None)
                console.print(f"[red]{cfg.name} failed:[/] {exc}")
            children.append(child)
        done = [c for c in children if c.outcome is not None]
        if not done:
            parent.end("FAILED")
            raise CompareError("no compared run finished: " + "; ".join(f"{c.name}: {c.error}" for c in children))
        summarise = _summarise_maze if first.family == "maze" else _summarise_teacher
        table_rows, text, title, columns, printed = summarise(plan, children, parent)
    except KeyboardInterrupt:
        parent.end("KILLED")
        raise
    failed = [c for c in children if c.error]
    parent.end("FAILED" if failed else "FINISHED")
    console.print(rich_table(table_rows, title, columns, printed))
    console.print(text)
    console.print(f"MLflow parent run id: {parent.run_id}\nbrowse it:            {ui_command(parent.uri)}")
    if failed:
        raise CompareError("; ".join(f"{c.name} failed: {c.error}" for c in failed) + f" (the other runs and the parent run {parent.run_id} are logged)")
    return 0


def _summarise_teacher(plan: Plan, children: list[Child], parent):
    """Table, verdict, figure and metrics of a teacher comparison, logged to the parent run."""
    from es_l2l.fitness import task_batch
    from es_l2l.outer.loop import episode_metrics
    from es_l2l.tasks.base import STREAM_VALIDATION
    from es_l2l.tasks.teacher_baselines import baseline_mse_per_trial

    first, names = plan.configs[0], [c.name for c in plan.configs]
    done = [c for c in children if c.outcome is not None]
    report = done[0].outcome.report  # the same held-out test tasks for every child
    tasks = task_batch(first, (first.run.seed, STREAM_VALIDATION), first.run.validation_tasks)
    val_curves = baseline_mse_per_trial(first.task, tasks, first.run.seed)
    val_baselines = {k: episode_metrics(v, "val")["val_mse_late"] for k, v in val_curves.items()}
    best_vals = [min(h["val_mse_late"] for h in _validation_history(c.outcome)) for c in done]
    target = plan.target_mse if plan.target_mse is not None else max(best_vals)
    rows = summary_rows(children, target)
    table_rows = rows + baseline_rows(report)
    text = verdict(rows, report, plan.budget_text)
    title = f"{' vs '.join(names)}: {plan.budget_text} each; target validation MSE {target:.4f}"
    with tempfile.TemporaryDirectory() as tmp:
        parent.log_artifact(plot_comparison(children, val_baselines, report, target, Path(tmp) / "comparison.png", title))
    parent.log_text(markdown_table(table_rows) + "\n" + text + "\n", "comparison.md")
    parent.log_text(csv_table(table_rows), "comparison.csv")
    curves = {c.name: c.outcome.report.curves[LSNN_TRAINED] for c in done}
    curves.update({k: v for k, v in report.curves.items() if k != LSNN_TRAINED})
    parent.log_text(curves_csv(curves), "mse_per_trial.csv")
    metrics = {"target_mse": target}
    for r in rows:
        metrics.update({f"{r['name']}.{k}": float(r[k]) for k in ("test_mse_late", "best_val_mse_late", "final_val_mse_late", "train_s", "neuron_steps")})
    metrics.update({f"baseline.{k.replace(' ', '_')}.test_mse_late": m["test_mse_late"] for k, m in report.metrics.items()})
    parent.log_metrics(metrics)
    winner = min(rows, key=lambda r: r["test_mse_late"])
    parent.set_tags({"winner": winner["name"], "verdict": text[:5000]})
    return table_rows, text, title, COLUMNS, PRINTED


# --- the maze family: reward per episode, higher is better ----------------------------------------

MAZE_COLUMNS = [
    ("name", "config"),
    ("outer", "outer loop"),
    ("generations", "gens/steps"),
    ("train_s", "train s"),
    ("neuron_steps", "neuron-steps"),
    ("final_val_reward", "final val reward"),
    ("best_val_reward", "best val reward"),
    ("test_reward", "test reward"),
    ("test_first_find", "moves to 1st goal"),
    ("test_later_trip", "moves / later trip"),
    ("s_to_target", "s to target"),
    ("neuron_steps_to_target", "steps to target"),
]
MAZE_PRINTED = ("name", "outer", "generations", "train_s", "best_val_reward", "test_reward", "test_first_find", "test_later_trip", "s_to_target")


def _maze_rows(children: list[Child], target: float) -> list[dict[str, Any]]:
    rows = []
    for c in children:
        if c.outcome is None:
            continue
        vals = [h for h in c.outcome.result.history if "val_reward" in h]
        test = c.outcome.report.metrics[LSNN_TRAINED]
        hit = next((h for h in vals if h["val_reward"] >= target), None)
        rows.append(
            {
                **_row_head(c, vals),
                "final_val_reward": vals[-1]["val_reward"],
                "best_val_reward": max(h["val_reward"] for h in vals),
                "test_reward": test["reward"],
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


def plot_maze_comparison(children: list[Child], val_baselines: dict[str, dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), dpi=110)
    for i, c in enumerate(ch for ch in children if ch.outcome is not None):
        vals = [h for h in c.outcome.result.history if "val_reward" in h]
        label = f"{c.name} ({c.outer})"
        axes[0].plot([h["elapsed_s"] for h in vals], [h["val_reward"] for h in vals], color=f"C{i}", lw=2, marker=".", label=label)
        later = [h for h in vals if h["neuron_steps"] > 0]
        axes[1].plot([h["neuron_steps"] for h in later], [h["val_reward"] for h in later], color=f"C{i}", lw=2, marker=".", label=label)
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


def _summarise_maze(plan: Plan, children: list[Child], parent):
    """Table, verdict, figure and metrics of a maze comparison, logged to the parent run."""
    from es_l2l.maze_report import baseline_rows as maze_baselines
    from es_l2l.tasks.base import STREAM_VALIDATION

    first = plan.configs[0]
    done = [c for c in children if c.outcome is not None]
    report = done[0].outcome.report  # the same held-out test mazes for every child
    best_vals = [max(h["val_reward"] for h in c.outcome.result.history if "val_reward" in h) for c in done]
    target = plan.target_mse if plan.target_mse is not None else min(best_vals)
    rows = _maze_rows(children, target)
    base = []
    for name, m in report.metrics.items():
        if name != LSNN_TRAINED:
            base.append({"name": name, "outer": "baseline", "test_reward": m["reward"], "test_first_find": m["first_find"], "test_later_trip": m["later_trip"]})
    text = maze_verdict(rows, report, plan.budget_text)
    title = f"{' vs '.join(c.name for c in plan.configs)}: {plan.budget_text} each; target validation reward {target:.2f}"
    with tempfile.TemporaryDirectory() as tmp:
        parent.log_artifact(plot_maze_comparison(children, maze_baselines(first, STREAM_VALIDATION), Path(tmp) / "comparison.png", title))
    parent.log_text(markdown_table(rows + base, MAZE_COLUMNS) + "\n" + text + "\n", "comparison.md")
    parent.log_text(csv_table(rows + base, MAZE_COLUMNS), "comparison.csv")
    metrics = {"target_reward": target}
    for r in rows:
        metrics.update({f"{r['name']}.{k}": float(r[k]) for k in ("test_reward", "best_val_reward", "final_val_reward", "train_s", "neuron_steps")})
    metrics.update({f"baseline.{b['name'].replace(' ', '_')}.test_reward": b["test_reward"] for b in base})
    parent.log_metrics(metrics)
    parent.set_tags({"winner": max(rows, key=lambda r: r["test_reward"])["name"], "verdict": text[:5000]})
    return rows + base, text, title, MAZE_COLUMNS, MAZE_PRINTED
