"""A tracking outage does not stop training: what cannot reach MLflow waits in a local spool.

:class:`Spool` keeps, under ``./.es_l2l_spool/<run_id>/``, everything a run could not log:

* ``metrics.jsonl``: one line per metric (key, value, timestamp, step), in logging order;
* ``records.jsonl``: tags, artifacts (copied into ``files/``) and the run's final status;
* ``meta.json``: the run id, and the tracking URI with its credentials redacted.

:class:`es_l2l.tracking.run.MlflowRun` sends through :meth:`Spool.send`: when the store answers, the
spool is flushed first (in order, so metric histories stay in step order), then the call goes
out; when it does not, the call is spooled and the store is tried again after ``retry_s``.
Replays carry the original timestamps, so a batch sent twice is stored once (MLflow
de-duplicates identical metric rows). ``es-l2l sync <spool dir>`` uploads a spool left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from es_l2l.tracking.end_state import uninterrupted

SPOOL_ROOT_ENV = "ES_L2L_SPOOL"  # where spools live (default ./.es_l2l_spool)
RETRY_S = float(os.environ.get("ES_L2L_SPOOL_RETRY_S", "10"))  # seconds between tries while the store is down
BATCH = 1000

_OUTAGE_HINTS = (
    "max retries exceeded", "connection refused", "connectionerror", "failed to establish a new connection",
    "timed out", "timeout", "remote end closed", "connection reset", "connection aborted", "bad gateway",
    "service unavailable", "gateway timeout", "502", "503", "504", "name or service not known",
    "temporary failure in name resolution", "database is locked", "no route to host", "broken pipe",
)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the tracking store is unreachable (rather than that a call is wrong)."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(h in text for h in _OUTAGE_HINTS)


def spool_root() -> Path:
    return Path(os.environ.get(SPOOL_ROOT_ENV) or Path.cwd() / ".es_l2l_spool")


class Spool:
    def __init__(self, run_id: str, uri: str, root: Path | None = None, retry_s: float = RETRY_S):
        from es_l2l.tracking.redact import redact_uri

        self.run_id, self.uri = run_id, uri
        self.dir = (root or spool_root()) / run_id
        self.retry_s = retry_s
        self.down_since: float | None = None
        self._next_try = 0.0
        self._meta = {"run_id": run_id, "tracking_uri": redact_uri(uri)}

    # --- state on disk -----------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        return (self.dir / "metrics.jsonl").exists() or (self.dir / "records.jsonl").exists()

    def spooled_steps(self, key: str) -> list[int]:
        """Steps of metric ``key`` waiting in the spool (a resumed run must not log them again)."""
        return [int(r["step"]) for r in _read_jsonl(self.dir / "metrics.jsonl") if r.get("key") == key]

    def _ensure(self) -> None:
        if not self.dir.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "meta.json").write_text(json.dumps(self._meta))

    def _append(self, name: str, rows: list[dict]) -> None:
        self._ensure()
        path = self.dir / name
        if path.exists() and path.stat().st_size:
            with open(path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"  # a line cut short by a killed process: start a new one
        else:
            torn = False
        with open(path, "a") as fh:
            if torn:
                fh.write("\n")
            for row in rows:
                fh.write(json.dumps(row, allow_nan=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def spool_metrics(self, metrics: list) -> None:
        self._append("metrics.jsonl", [{"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step} for m in metrics])

    def spool_record(self, kind: str, **fields) -> None:
        if kind == "artifact":
            self._ensure()
            src = Path(fields.pop("path"))
            dest = self.dir / "files" / f"{time.time_ns()}" / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
            fields["file"] = str(dest.relative_to(self.dir))
        self._append("records.jsonl", [{"kind": kind, **fields}])

    # --- sending ---------------------------------------------------------------------------
    def send(self, client, kind: str, **fields) -> bool:
        """Send one call (``metrics``, ``tag``, ``artifact`` or ``status``); spool it when the store is down.

        Returns True when it reached the store."""
        if self.down_since is not None and time.monotonic() < self._next_try:
            self._spool(kind, fields)
            return False
        try:
            with self.held():  # Ctrl-C or SIGTERM mid-write could leave SQLite locked for the KILLED status
                if self.pending:
                    flush(client, self.dir, self.run_id)
                    self._cleanup()
                _apply(client, self.run_id, kind, fields)
        except Exception as exc:
            if not is_outage(exc):
                raise
            first = self.down_since is None
            if first:
                self.down_since = time.monotonic()
                print(f"warning: the tracking store at {self._meta['tracking_uri']} is unreachable; spooling to {self.dir} "
                      "and retrying while training goes on", file=sys.stderr)
            self._next_try = time.monotonic() + self.retry_s
            self._spool(kind, fields)
            return False
        if self.down_since is not None:
            print(f"the tracking store is back; the spool {self.dir} is uploaded", file=sys.stderr)
        self.down_since = None
        return True

    def held(self):
        """Hold Ctrl-C and SIGTERM during a write to a database store (an interrupt inside SQLAlchemy can leave
        the database locked by an orphaned connection); not for a server, whose outage can make a call
        wait: there the interrupt goes through at once."""
        from es_l2l.tracking.preflight import is_server

        return contextlib.nullcontext() if is_server(self.uri) else uninterrupted()

    def _cleanup(self) -> None:
        """Remove the folder once everything in it is uploaded (the root too, when it is left empty)."""
        if self.dir.exists() and not self.pending:
            shutil.rmtree(self.dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.dir.parent.rmdir()

    def _spool(self, kind: str, fields: dict) -> None:
        if kind == "metrics":
            self.spool_metrics(fields["metrics"])
        else:
            self.spool_record(kind, **fields)

    def try_flush(self, client) -> bool:
        """Upload what is spooled now (ignoring the retry timer); True when nothing is left."""
        if not self.pending:
            return True
        try:
            with self.held():
                flush(client, self.dir, self.run_id)
            self._cleanup()
            self.down_since = None
            return True
        except Exception as exc:
            if not is_outage(exc):
                raise
            return False


def _apply(client, run_id: str, kind: str, fields: dict) -> None:
    if kind == "metrics":
        for i in range(0, len(fields["metrics"]), BATCH):
            client.log_batch(run_id, metrics=fields["metrics"][i : i + BATCH])
    elif kind == "tag":
        client.set_tag(run_id, fields["key"], fields["value"])
    elif kind == "artifact":
        client.log_artifact(run_id, str(fields["path"]), fields.get("artifact_path"))
    elif kind == "status":
        client.set_terminated(run_id, fields["status"])
    else:
        raise ValueError(f"unknown spool record kind {kind!r}")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash: the rest is still good
                continue
    return rows


def _offset(path: Path) -> int:
    """How many items of a spool file were sent (0 when unknown: replays are idempotent)."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 0


def _set_offset(path: Path, n: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(n))
    tmp.replace(path)  # atomic: a process killed here leaves the old offset or the new one


def flush(client, folder: Path, run_id: str) -> int:
    """Upload a spool folder's metrics, then its records, in order; remove each file once sent. Returns items sent."""
    from mlflow.entities import Metric

    folder = Path(folder)
    sent = 0
    metrics_file = folder / "metrics.jsonl"
    rows = _read_jsonl(metrics_file)
    done_file = folder / "metrics.sent"
    start = _offset(done_file)
    for i in range(start, len(rows), BATCH):
        chunk = [Metric(r["key"], float(r["value"]), int(r["timestamp"]), int(r["step"])) for r in rows[i : i + BATCH]]
        client.log_batch(run_id, metrics=chunk)
        _set_offset(done_file, i + len(chunk))
        sent += len(chunk)
    metrics_file.unlink(missing_ok=True)
    done_file.unlink(missing_ok=True)
    records_file = folder / "records.jsonl"
    records = _read_jsonl(records_file)
    done_file = folder / "records.sent"
    start = _offset(done_file)
    for i, rec in enumerate(records[start:], start):
        kind = rec.pop("kind")
        if kind == "artifact":
            rec["path"] = folder / rec.pop("file")
        _apply(client, run_id, kind, rec)
        _set_offset(done_file, i + 1)
        sent += 1
    records_file.unlink(missing_ok=True)
    done_file.unlink(missing_ok=True)
    shutil.rmtree(folder / "files", ignore_errors=True)
    return sent


def sync(folder: str | Path, uri: str | None = None) -> tuple[str, int]:
    """``es-l2l sync``: upload a spool folder to its run; returns (run id, items sent) and removes the folder.

    ``uri`` (or ``MLFLOW_TRACKING_URI``) overrides the URI recorded in ``meta.json`` (which has no
    credentials: MLflow takes them from ``MLFLOW_TRACKING_USERNAME`` / ``PASSWORD``). The store gets
    the same probe as ``es-l2l run`` and must hold the run; anything wrong is a ``ValueError`` (one
    line) and the spool is kept."""
    from mlflow.tracking import MlflowClient

    from es_l2l.tracking.checkpoint import fetch_run
    from es_l2l.tracking.redact import redact_text

    folder = Path(folder)
    meta_file = folder / "meta.json"
    if not meta_file.is_file():
        raise ValueError(f"'{folder}' is not an es-l2l spool folder (no meta.json); pass .es_l2l_spool/<run id>")
    try:
        meta: dict[str, Any] = json.loads(meta_file.read_text())
        run_id, stored = str(meta["run_id"]), str(meta["tracking_uri"])
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ValueError(f"the spool's {meta_file} is damaged ({type(exc).__name__}); nothing was uploaded and the spool is "
                         "kept (its run id is the folder's name)") from None
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or stored
    if "***" in uri:
        raise ValueError("the spool's tracking URI had credentials, which were not stored; pass --tracking-uri or set "
                         "MLFLOW_TRACKING_URI (and MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)")
    try:  # a dead, silent or foreign server, or a store without the run: one line
        fetch_run(run_id, uri, ValueError, where="--tracking-uri or MLFLOW_TRACKING_URI")
    except ValueError as exc:
        raise ValueError(f"{exc}; nothing was uploaded and the spool is kept") from None
    client = MlflowClient(tracking_uri=uri)
    try:
        sent = flush(client, folder, run_id)
    except Exception as exc:
        if is_outage(exc):
            raise
        line = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise ValueError(f"could not upload the spool {folder} ({redact_text(f'{type(exc).__name__}: {line}')}); what was "
                         "sent stays sent, the rest is kept: fix the cause and run es-l2l sync again") from None
    shutil.rmtree(folder, ignore_errors=True)
    return run_id, sent
