"""MLflow adapter: one run per experiment, subscribed to the outer loop's status dict.

Uses an explicit ``MlflowClient`` (no global active run). Default store: a SQLite file
``./mlflow.db`` with artifacts under ``./mlruns``; ``tracking.uri`` or ``MLFLOW_TRACKING_URI``
points at a tracking server instead.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

from es_l2l.config import ExperimentConfig
from es_l2l.tracking.preflight import tracking_uri# noqa: F401  (re-exported: where a run logs)
from es_l2l.tracking.metric_keys import old_name, report_key, status_key
from es_l2l.tracking.redact import has_credentials, redact_uri


def ui_command(uri: str) -> str:
    uri = redact_uri(uri)
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000  # then open http://127.0.0.1:5000"


class MlflowRun:
    """Owns one MLflow run; call it with a status dict to log that generation's metrics in one batch.

    Creating (or reopening) the run needs the store; after that, an outage does not stop training:
    metrics, tags, artifacts and the final status wait in a local spool (es_l2l.tracking.spool) and go out
    when the store is back, or with ``es-l2l sync``. A reopened run (``run_id``) skips the
    generations it already holds, so a resumed run logs every step once.

    Metric keys are grouped here, and only here (:mod:`es_l2l.tracking.metric_keys`): the status dict's
    ``fitness_mean`` is logged as ``train/fitness_mean``, ``val_mse_late`` as ``val/mse_late``, a
    report's ``running_mean.test_mse_late`` as ``withheld/running_mean/mse_late``. A reopened run that
    was begun under the flat names of older versions keeps logging those, so its charts stay whole.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
        log_config: bool = True,
        run_id: str | None = None,
    ):
        from es_l2l.tracking.preflight import get_or_create_experiment, open_client
        from es_l2l.tracking.redact import safe_flat, safe_yaml
        from es_l2l.tracking.spool import Spool

        self.uri = tracking_uri(cfg)
        if has_credentials(self.uri):  # MLflow prints "View run ... at: <uri>" with the URI as given
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        self.client = open_client(self.uri)  # a new SQLite store is created under a file lock
        self.logged_through = -1  # generations up to this one are in the run already (resume)
        self.flat = False  # True: a reopened run that logged the flat names of older versions keeps them
        from es_l2l.tracking.checkpoint import DRIVER_TAG, ResumeError, driver_lock

        self.driver = f"{socket.gethostname()} {os.getpid()}"
        if run_id is not None:  # reopen a run to continue it (es-l2l run --resume)
            self.run_id = run_id
            self.lock = driver_lock(run_id)  # one driver per run: a second resume on this machine is refused
            if self.lock is None:
                raise ResumeError(f"MLflow run '{run_id}' is being resumed or run by another process on this machine; "
                                  "wait for it, or stop it and resume then")
            run = self.client.get_run(run_id)
            self.experiment_id = run.info.experiment_id
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, DRIVER_TAG, self.driver)
            self.spool = Spool(self.run_id, self.uri)
            old = STEP_METRIC in run.data.metrics or bool(self.spool.spooled_steps(STEP_METRIC))
            self.flat = old and status_key(STEP_METRIC) not in run.data.metrics
            self.spool.try_flush(self.client)  # what the killed driver spooled goes out first
            step_key = self.status_key(STEP_METRIC)
            steps = [m.step for m in self.client.get_metric_history(run_id, step_key)]
            self.logged_through = max([*steps, *self.spool.spooled_steps(step_key)], default=-1)
            return
        root = None if self.uri.startswith(("http://", "https://")) else Path(cfg.tracking.artifact_root).resolve().as_uri()
        exp_id = get_or_create_experiment(self.client, cfg.tracking.experiment, root, self.uri)
        self.experiment_id = exp_id
        run = self.client.create_run(exp_id, run_name=run_name or cfg.tracking.run_name or cfg.name,
                                     tags={**(tags or {}), DRIVER_TAG: self.driver})
        self.run_id = run.info.run_id
        self.lock = driver_lock(self.run_id)
        self.spool = Spool(self.run_id, self.uri)
        from mlflow.entities import Param

        if not log_config:
            return
        params = [Param(k, str(v)[:500]) for k, v in safe_flat(cfg).items()]  # no credentials in params
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        self.log_text(safe_yaml(cfg), "config.yaml")

    def __call__(self, status: dict) -> None:
        from mlflow.entities import Metric

        step, now = int(status["generation"]), int(time.time() * 1000)
        if step <= self.logged_through:
            return  # logged before the driver was killed: the resumed run repeats it exactly, log it once
        metrics = [
            Metric(self.status_key(k), float(v), now, step)
            for k, v in status.items()
            if k != "generation" and isinstance(v, (int, float))
        ]
        self.spool.send(self.client, "metrics", metrics=metrics)

    def status_key(self, key: str) -> str:
        """The MLflow key of a status-dict entry: ``train/...`` or ``val/...``."""
        return key if self.flat else status_key(key)

    def log_metrics(self, values: dict[str, float], step: int = 0) -> None:
        """Log a held-out report's flat metrics (as ``withheld/<predictor>/<metric>``) or keys already grouped."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        key = (lambda k: k) if self.flat else report_key
        metrics = [Metric(key(k), float(v), now, step) for k, v in values.items() if isinstance(v, (int, float))]
        if step <= self.logged_through:  # a resumed run: the killed driver may have logged these already (under
            # today's key, or under its name before the held-out group's rename when that driver was older)
            metrics = [m for m in metrics if not any(self._has_step(k, step) for k in (m.key, old_name(m.key)) if k)]
        self.spool.send(self.client, "metrics", metrics=metrics)

    def _has_step(self, key: str, step: int) -> bool:
        try:
            with self.spool.held():
                return any(m.step == step for m in self.client.get_metric_history(self.run_id, key))
        except Exception:  # the store is down: log it (a duplicate beats a gap)
            return False

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.spool.send(self.client, "artifact", path=str(path), artifact_path=artifact_path)

    def log_text(self, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(text)
            self.log_artifact(path)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.spool.send(self.client, "tag", key=k, value=str(v))

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run ended; when the store is still down, say (one line) how to upload the spool later."""
        from es_l2l.tracking.checkpoint import release_driver_lock

        self.spool.send(self.client, "status", status=status)
        release_driver_lock(self.run_id, self.lock)
        if self.spool.pending and not self.spool.try_flush(self.client):
            import sys

            print(f"the tracking store at {redact_uri(self.uri)} is still unreachable: the run's remaining metrics, "
                  f"artifacts and its {status} status are kept in {self.spool.dir}; upload them later with: "
                  f"es-l2l sync {self.spool.dir}", file=sys.stderr)


# in every generation's status (generation 0 included): its history (as train/elapsed_s) lists the logged steps
STEP_METRIC = "elapsed_s"
