"""Fail before work, in one line: every check that needs no Ray, before an MLflow run exists:
the run's memory estimate against the memory available (the outer loop states its own
allocations), the tracking store, and a Ray job's tracking URI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from es_l2l.errors import PreflightError

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig
from es_l2l.tracking.preflight import job_tracking_uri, probe_tracking, tracking_uri

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


def preflight(cfg: ExperimentConfig, dim: int) -> None:
    """Every check that needs no Ray: tracking store, memory, Ray-job tracking. Raises :class:`PreflightError`."""
    job_tracking_uri(cfg)
    check_memory(cfg, dim)
    probe_tracking(tracking_uri(cfg))
