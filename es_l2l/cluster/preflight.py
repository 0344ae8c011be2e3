"""Checks of the Ray cluster before the actors start, in one line each.

* :func:`check_cpus`: the Ray cluster has the CPUs the actors reserve (otherwise Ray leaves them
  pending forever, without a word).
* :func:`attach_address` / :func:`ray_init_error`: ``RAY_ADDRESS`` (set by ``ray job submit``)
  attaches to that cluster; a missing or wrong Ray token is named as such.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from es_l2l.errors import ClusterError

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig

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
