"""Fail before work, in one line: checks that run before Ray starts or an MLflow run exists.

* :func:`probe_tracking`: the tracking store answers within a few seconds (an HTTP GET on a
  server's ``/health``; a SQLite file's folder exists and the database is initialised once, under
  a file lock, so that two first runs in a fresh folder both succeed).
* :func:`check_memory`: the run's largest allocations fit in the memory available.
* :func:`check_cpus`: the Ray cluster has the CPUs the actors reserve (otherwise Ray leaves them
  pending forever, without a word).
* :func:`attach_address` / :func:`ray_init_error`: ``RAY_ADDRESS`` (set by ``ray job submit``)
  attaches to that cluster; a missing or wrong Ray token is named as such.
* :func:`job_tracking_uri`: inside a Ray job on an attached cluster, a run without a tracking
  server URI is refused (its SQLite file would vanish with the job's temporary working folder).
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from es_l2l.config import ExperimentConfig
from es_l2l.models import get_model
from es_l2l.errors import ClusterError

PROBE_TIMEOUT_S = 5.0
# MLflow's HTTP client retries for minutes by default; these make an outage show within seconds
# (es_l2l.spool then keeps the metrics until the server is back). The user's own values win.
HTTP_CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                   "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


class PreflightError(ClusterError):
    """The run cannot work as configured; said in one sentence before anything starts."""


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


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
    from es_l2l.redact import redact_uri

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

FLOAT = 4  # bytes


def episode_steps(cfg: ExperimentConfig) -> int:
    from es_l2l.families import family_of

    return family_of(cfg.task).episode_steps(cfg.task)


def estimate_bytes(cfg: ExperimentConfig, dim: int) -> dict[str, int]:
    """The run's largest allocations (bytes), by what holds them: the outer loop's (its population,
    its gradient graphs) and the validation's."""
    from es_l2l.outer.shell import loop_of, setting_of

    setting = setting_of(cfg)
    out = dict(loop_of(cfg).memory(setting, dim))
    out["validation state (tasks x N x 8 floats)"] = cfg.run.validation_tasks * setting.neurons() * 8 * FLOAT
    return out


def available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return None


def _gib(b: float) -> str:
    return f"{b / 2**30:.1f} GiB"


def check_memory(cfg: ExperimentConfig, dim: int, available: int | None = None) -> None:
    """Raise :class:`PreflightError` with the numbers when the estimate exceeds the memory available."""
    if cfg.run.device == "cuda":
        return  # the big arrays live on the GPUs; Ray and torch report those shortfalls themselves
    available = available_bytes() if available is None else available
    if not available:
        return
    parts = estimate_bytes(cfg, dim)
    total = sum(parts.values())
    if total <= available:
        return
    biggest = max(parts, key=parts.get)
    from es_l2l.outer.shell import loop_of, setting_of

    loop, setting = loop_of(cfg), setting_of(cfg)
    popsize = loop.popsize(setting)
    members = f"P={popsize}, " if popsize else ""
    lower = f"{loop.popsize_key}, " if popsize and loop.popsize_key else ""
    raise PreflightError(
        f"this run needs about {_gib(total)} of memory but {_gib(available)} is available (largest: {biggest} = "
        f"{_gib(parts[biggest])}, with {members}D={dim}, "
        f"B={cfg.task.batch_size}, N={setting.neurons()}, T={episode_steps(cfg)}); lower {lower}"
        "task.batch_size or the network size"
    )


# --- Ray ----------------------------------------------------------------------------------------


def attach_address(cfg: ExperimentConfig) -> str | None:
    """Where to attach: ``run.address``, else ``RAY_ADDRESS`` (``ray job submit`` sets it), else None (local)."""
    return cfg.run.address or os.environ.get("RAY_ADDRESS") or None


AUTH_HINTS = ("authentication", "unauthenticated", "invalidauthtoken", "auth token", "auth_token", "invalid token",
              "token is missing")


@contextlib.contextmanager
def captured_stderr_fd():
    """Redirect file descriptor 2 (where Ray's C++ core logs, bypassing Python) to a temporary file;
    yields a function returning what was written so far. Restored (and not replayed) on exit."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)

        def read() -> str:
            tmp.flush()
            tmp.seek(0)
            return tmp.read().decode("utf-8", "replace")

        try:
            yield read
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def ray_init_error(address: str, exc: BaseException, logged: str = "") -> ClusterError | None:
    """A :class:`ClusterError` naming a missing or wrong Ray token, when that is what ``ray.init``
    raised or what Ray's core logged while it tried (``logged``)."""
    text = f"{type(exc).__name__}: {exc}\n{logged}".lower()
    if type(exc).__name__ == "AuthenticationError" or any(h in text for h in AUTH_HINTS):
        return ClusterError(
            f"the Ray cluster at '{address}' requires an authentication token and this process has none or a wrong one; "
            "set RAY_AUTH_TOKEN (or put the cluster's token in ~/.ray/auth_token) and RAY_AUTH_MODE=token"
        )
    return None


def local_ray_token(cfg: ExperimentConfig, always: bool = False) -> bool:
    """Token authentication for the local Ray this run will start (unless the user configured Ray auth).

    Ray 2.60 advertises the node IP we give it (127.0.0.1) but several of its servers (GCS, raylet,
    core workers, dashboard agent) still listen on all interfaces, on random ports (docs/failures.md).
    With ``RAY_AUTH_MODE=token`` and a random ``RAY_AUTH_TOKEN`` (inherited by Ray's processes), nobody
    without the token can use them. Ray reads these when it is imported, so this runs before any
    import of ray (the CLI calls it first); returns whether it set them. ``always``: whatever the config
    (``es-l2l tune`` runs every trial on Ray). Without a token Ray 2.60 turns token authentication on
    by itself, with a token it writes to ``~/.ray/auth_token`` and leaves there.
    """
    import sys

    if attach_address(cfg) or not always and not needs_ray(cfg):
        return False
    if "ray" in sys.modules or any(k in os.environ for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        return False
    import secrets

    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    return True


def needs_ray(cfg: ExperimentConfig) -> bool:
    """Whether a run of ``cfg`` starts Ray (its outer loop's evaluation actors or workers)."""
    from es_l2l.outer.shell import loop_of, setting_of

    return loop_of(cfg).needs_ray(setting_of(cfg))


def check_cpus(cfg: ExperimentConfig, n_workers: int) -> None:
    """More CPUs asked for than the cluster has in all (not merely free now): :class:`CapacityError`,
    one line with the numbers, before any MLflow run exists (exit 2)."""
    import ray

    from es_l2l.errors import CapacityError

    need = n_workers * cfg.run.cpus_per_worker
    have = float(ray.cluster_resources().get("CPU", 0.0))
    if need > have + 1e-9:
        where = f"the Ray cluster at '{attach_address(cfg)}'" if attach_address(cfg) else "the local Ray"
        raise CapacityError(
            f"{n_workers} worker(s) x run.cpus_per_worker={cfg.run.cpus_per_worker:g} need {need:g} CPUs but {where} has "
            f"{have:g}, so the actors would wait forever; lower --workers or run.cpus_per_worker, or add nodes"
        )


def in_ray_job() -> bool:
    return bool(os.environ.get("RAY_JOB_ID") or os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"))


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


def preflight(cfg: ExperimentConfig, dim: int) -> None:
    """Every check that needs no Ray: tracking store, memory, Ray-job tracking. Raises :class:`PreflightError`."""
    job_tracking_uri(cfg)
    check_memory(cfg, dim)
    probe_tracking(tracking_uri(cfg))
