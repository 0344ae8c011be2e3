"""Checks of the tracking store before any run exists, in one line each.

* :func:`probe_tracking`: the tracking store answers within a few seconds (an HTTP GET on a
  server's ``/health``; a SQLite file's folder exists and the database is initialised once, under
  a file lock, so that two first runs in a fresh folder both succeed).
* :func:`get_or_create_experiment`: the run's experiment, declared a model-training experiment.
* :func:`job_tracking_uri`: inside a Ray job on an attached cluster, a run without a tracking
  server URI is refused (its SQLite file would vanish with the job's temporary working folder).
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from es_l2l.errors import PreflightError

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig
from es_l2l.cluster.preflight import in_ray_job

PROBE_TIMEOUT_S = 5.0
# MLflow's HTTP client retries for minutes by default; these make an outage show within seconds
# (es_l2l.tracking.spool then keeps the metrics until the server is back). The user's own values win.
HTTP_CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                   "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def is_server(uri: str) -> bool:
    """A tracking server (MLflow's REST API, Databricks), not a store this process opens itself."""
    return is_http(uri) or uri.startswith("databricks")


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?")[0])


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock on ``path`` (created if needed), held for the block."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def store_lock(uri: str):
    """The lock that serialises creating a SQLite store (and experiments in it); a no-op elsewhere."""
    db = sqlite_path(uri)
    return file_lock(db.with_name(db.name + ".lock")) if db is not None else contextlib.nullcontext()


def probe_tracking(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise :class:`PreflightError` (one line, credentials redacted) when the store does not answer."""
    from es_l2l.tracking.redact import redact_uri

    shown = redact_uri(uri)
    if is_http(uri):
        for key, value in HTTP_CLIENT_ENV.items():
            os.environ.setdefault(key, value)
        if shown != uri:  # MLflow prints "View run ... at: <uri>" with the URI as given
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(uri)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port else ""
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        req = urllib.request.Request(base + "/health")
        user = parts.username or os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = parts.password or os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if user and password:
            import base64

            req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        try:
            with urllib.request.build_opener().open(req, timeout=timeout) as resp:
                resp.read(1024)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise PreflightError(
                    f"the MLflow tracking server at {shown} refused the credentials (HTTP {exc.code}); set "
                    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
                ) from None
            if exc.code >= 500:
                raise PreflightError(f"the MLflow tracking server at {shown} answers HTTP {exc.code}; check the server") from None
            # 404 & co.: a server without /health (a proxy path): it answered; its API says whether it is MLflow
        except (urllib.error.URLError, OSError, ValueError) as exc:
            why = getattr(exc, "reason", None) or exc
            raise PreflightError(
                f"the MLflow tracking server at {shown} does not answer within {timeout:g} s ({why}); start it, "
                "or fix tracking.uri / MLFLOW_TRACKING_URI"
            ) from None
        _check_mlflow_api(base, req.headers, shown, timeout)
        return
    db = sqlite_path(uri)
    if db is None:
        return  # databricks, postgres...: MLflow's own errors apply
    if not db.parent.is_dir():
        raise PreflightError(f"the folder of the tracking database {db} does not exist; create it or fix tracking.uri")
    if not os.access(db.parent, os.W_OK):
        raise PreflightError(f"the folder of the tracking database {db} is not writable; fix its permissions or tracking.uri")
    # the database itself is created with the run (get_or_create_experiment, under store_lock): no file
    # appears for a run that fails its other checks


def _check_mlflow_api(base: str, headers: dict, shown: str, timeout: float) -> None:
    """Raise :class:`PreflightError` unless ``base`` answers MLflow's REST API with JSON (any HTTP server
    answers ``/health``; a web server that is not MLflow used to end in a traceback deep in MLflow)."""
    import json

    req = urllib.request.Request(base + "/api/2.0/mlflow/experiments/search?max_results=1", headers=dict(headers))
    try:
        with urllib.request.build_opener().open(req, timeout=timeout) as resp:
            body = resp.read(1 << 16)
        json.loads(body.decode("utf-8"))
        return
    except urllib.error.HTTPError as exc:
        code = exc.code
        if code in (401, 403):
            raise PreflightError(
                f"the MLflow tracking server at {shown} refused the credentials (HTTP {code}); set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
            ) from None
        why = f"HTTP {code} for MLflow's REST API"
    except (urllib.error.URLError, OSError) as exc:
        raise PreflightError(
            f"the MLflow tracking server at {shown} does not answer MLflow's REST API within {timeout:g} s "
            f"({getattr(exc, 'reason', None) or exc}); check the server, or fix tracking.uri / MLFLOW_TRACKING_URI"
        ) from None
    except ValueError:  # not JSON (UnicodeDecodeError, JSONDecodeError)
        why = "its REST API does not answer JSON"
    raise PreflightError(f"the server at {shown} is not an MLflow tracking server ({why}); fix tracking.uri / "
                         "MLFLOW_TRACKING_URI (an MLflow server's address, e.g. http://HOST:5000)")


def open_client(uri: str):
    """An ``MlflowClient``; a SQLite store is created (or migrated) under a file lock, so that two
    first runs in a fresh folder do not race on creating its tables."""
    from mlflow.tracking import MlflowClient

    with store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        if sqlite_path(uri) is not None:
            client.search_experiments(max_results=1)
    return client


# MLflow 3.x's UI opens an experiment in its GenAI view (traces, evaluations) unless the experiment
# says it holds model-training runs; a tag the user set already is left as it is.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_TAGS = {EXPERIMENT_KIND_TAG: "custom_model_development"}


def get_or_create_experiment(client, name: str, artifact_location: str | None, uri: str) -> str:
    """The experiment's id; two runs creating it at once both get it (one creates, the other finds).

    For a SQLite store, the first call also creates (or migrates) the database: under the lock, so
    that two first runs in a fresh folder do not race on creating its tables."""
    from mlflow.exceptions import MlflowException

    with store_lock(uri):
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_TAGS)
            except MlflowException:  # RESOURCE_ALREADY_EXISTS from a concurrent creator on a server
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if EXPERIMENT_KIND_TAG not in exp.tags:  # made by an older es-l2l: say what it is, once
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_TAGS[EXPERIMENT_KIND_TAG])
        return exp.experiment_id


def tracking_uri(cfg: ExperimentConfig) -> str:
    """Where a run logs: ``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else ``./mlflow.db``."""
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


# --- memory -----------------------------------------------------------------------------------


def job_tracking_uri(cfg: ExperimentConfig) -> None:
    """Inside a Ray job with neither ``tracking.uri`` nor ``MLFLOW_TRACKING_URI``: refuse.

    The job's working directory is a temporary copy Ray unpacked on the cluster (and deletes), so a
    default ``./mlflow.db`` there would be lost with the job. Say so instead of logging into it.
    """
    if cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or not in_ray_job():
        return
    if "runtime_resources" not in str(Path.cwd()) and "working_dir_files" not in str(Path.cwd()):
        return  # `ray job submit` without --working-dir: the driver runs in a real folder
    raise PreflightError(
        "this run is a Ray job with neither tracking.uri nor MLFLOW_TRACKING_URI, so it would log into a SQLite file in "
        f"the job's temporary working folder ({Path.cwd()}), which Ray deletes; pass --set tracking.uri=http://HOST:5000 "
        "(a tracking server the cluster can reach) or --runtime-env-json '{\"env_vars\": {\"MLFLOW_TRACKING_URI\": ...}}'"
    )
