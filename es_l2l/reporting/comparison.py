"""A comparison's summary (``es-l2l compare``), for every family alike: the parent run's figures,
``comparison.md`` and ``comparison.csv``, further artifacts, metrics and ``winner``/``verdict``
tags, and the table on the terminal."""

from __future__ import annotations

import tempfile
from pathlib import Path

from es_l2l.reporting.held_out import VERDICT_CHARS
from es_l2l.reporting.tables import csv_table, markdown_table, rich_table


def comparison_markdown(comparison) -> str:
    """The table (every column) and the verdict, as the parent run's ``comparison.md`` and description hold them."""
    return markdown_table(comparison.rows, comparison.columns) + "\n" + comparison.verdict + "\n"


def log_comparison(parent, comparison) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, draw in comparison.figures.items():
            parent.log_artifact(draw(Path(tmp) / name))
    parent.log_text(comparison_markdown(comparison), "comparison.md")
    parent.log_text(csv_table(comparison.rows, comparison.columns), "comparison.csv")
    for name, text in comparison.artifacts.items():
        parent.log_text(text, name)
    if comparison.metrics:
        parent.log_metrics(comparison.metrics)
    if comparison.winner is not None:
        parent.set_tags({"winner": comparison.winner, "verdict": comparison.verdict[:VERDICT_CHARS]})


def print_comparison(console, comparison) -> None:
    console.print(rich_table(comparison.rows, comparison.title, comparison.columns, comparison.printed))
    console.print(comparison.verdict)
