"""A run's held-out report, for every family alike: the terminal, and the MLflow run (test metrics,
``beats.*`` and ``verdict`` tags, figures, text artifacts, the ``held_out.json`` table and the
run's description)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

VERDICT_CHARS = 5000  # an MLflow tag value's limit is larger; a verdict is a paragraph, not a page
NOTE_CHARS = 50000  # the run description (mlflow.note.content)


def print_held_out(console, held, result) -> None:
    """The summary table and what the family prints around the verdict, then its closing line
    (``result``: the outer loop's RunResult; ``None`` when ``es-l2l evaluate`` scores a checkpoint)."""
    for item in held.printed:
        console.print(item)
    console.print(held.verdict)
    for line in held.notes:
        console.print(line)
    last = held.closing(result) if held.closing is not None else None
    if last:
        console.print(last)


def log_held_out(tracker, held, result) -> None:
    """Figures, text artifacts, the test metrics at the last generation's step, and the tags."""
    history = result.history if result is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        for name, draw in held.figures.items():
            path = Path(tmp) / name
            draw(path, history)
            tracker.log_artifact(path)
    for name, text in held.artifacts.items():
        tracker.log_text(text, name)
    tracker.log_metrics(held.metrics, step=result.generations)
    tags = {f"beats.{k}": str(v).lower() for k, v in held.beats.items()} | held.tags
    tracker.set_tags(tags | {"verdict": held.verdict[:VERDICT_CHARS]})


def description(summary: str, held) -> str:
    """The run page's text (``mlflow.note.content``, markdown): the run's one-line summary, the held-out
    table (the rows' metrics as columns) and the verdict."""
    lines = [f"**{summary}**", ""]
    if held.rows:
        keys = columns(held.rows)
        lines += ["| predictor | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys)]
        lines += [f"| {name} | " + " | ".join(f"{m[k]:.4g}" if k in m else "" for k in keys) + " |" for name, m in held.rows.items()]
    lines += ["", held.verdict]
    return "\n".join(lines)[:NOTE_CHARS]


def columns(rows: dict[str, dict[str, float]]) -> list[str]:
    """The metric names of the rows, first row's order first."""
    keys: list[str] = []
    for m in rows.values():
        keys += [k for k in m if k not in keys]
    return keys


def log_summary_table(tracker, held, summary: str) -> None:
    """``held_out.json`` (an MLflow table, one row per predictor) and the run's description."""
    if held.rows:
        keys = columns(held.rows)
        log_table(tracker, ["predictor", *keys],
                  [[name, *(float(m[k]) if k in m else None for k in keys)] for name, m in held.rows.items()], "held_out.json")
    tracker.set_tags({"mlflow.note.content": description(summary, held)})


def log_table(tracker, columns: list[str], data: list[list], name: str) -> None:
    """An MLflow table artifact (what ``MlflowClient.log_table`` writes: pandas' split JSON and the
    ``mlflow.loggedArtifacts`` tag), logged through the tracker so that an outage spools it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/{name}"
        with open(path, "w") as f:
            json.dump({"columns": columns, "data": data}, f)
        tracker.log_artifact(path)
    tracker.set_tags({"mlflow.loggedArtifacts": json.dumps([{"path": name, "type": "table"}])})
