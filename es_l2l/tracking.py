"""MLflow adapter: one run per experiment, subscribed to the outer loop's status dict.

Uses an explicit ``MlflowClient`` (no global active run). Default store: a SQLite file
``./mlflow.db`` with artifacts under ``./mlruns``; ``tracking.uri`` or ``MLFLOW_TRACKING_URI``
points at a tracking server instead.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from es_l2l.config import ExperimentConfig


def tracking_uri(cfg: ExperimentConfig) -> str:
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000  # then open http://127.0.0.1:5000"


class MlflowRun:
    """Owns one MLflow run; call it with a status dict to log that generation's metrics in one batch."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
        log_config: bool = True,
        run_id: str | None = None,
    ):
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(cfg)
        self.client = MlflowClient(tracking_uri=self.uri)
        if run_id is not None:  # reopen a run to continue it (es-l2l run --resume)
            self.run_id = run_id
            self.experiment_id = self.client.get_run(run_id).info.experiment_id
            self.client.update_run(run_id, status="RUNNING")
            return
        exp = self.client.get_experiment_by_name(cfg.tracking.experiment)
        if exp is None:
            root = None if self.uri.startswith(("http://", "https://")) else Path(cfg.tracking.artifact_root).resolve().as_uri()
            exp_id = self.client.create_experiment(cfg.tracking.experiment, artifact_location=root)
        else:
            exp_id = exp.experiment_id
        self.experiment_id = exp_id
        run = self.client.create_run(exp_id, run_name=run_name or cfg.tracking.run_name or cfg.name, tags=tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        if not log_config:
            return
        params = [Param(k, str(v)[:500]) for k, v in cfg.flat().items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        self.log_text(cfg.to_yaml(), "config.yaml")

    def __call__(self, status: dict) -> None:
        from mlflow.entities import Metric

        step, now = int(status["generation"]), int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, step)
            for k, v in status.items()
            if k != "generation" and isinstance(v, (int, float))
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_metrics(self, values: dict[str, float], step: int = 0) -> None:
        self({"generation": step, **values})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(text)
            self.log_artifact(path)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)
