"""One experiment, end to end: outer loop, MLflow run, held-out report. Shared by ``run`` and ``compare``."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass

import torch
from rich.console import Console

from es_l2l.config import ExperimentConfig
from es_l2l.context import RunContext
from es_l2l.tracking.end_state import RunFailed  # noqa: F401  (raised by run_experiment; defined with the run's end states)


@dataclass
class Outcome:
    cfg: ExperimentConfig
    result: object  # es_l2l.outer.base.RunResult
    report: object  # the family's held-out report, as data (es_l2l.families.base.HeldOut)
    run_id: str
    uri: str


def quiet_libraries() -> None:
    import mlflow  # noqa: F401  (imported first: its import sets its loggers' levels, which we then lower)

    for noisy in ("evotorch", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def describe(cfg: ExperimentConfig, genome) -> str:
    from es_l2l.models import get_model
    from es_l2l.outer.shell import loop_of, setting_of

    loop = loop_of(cfg)
    how = loop.describe(setting_of(cfg))
    budget = [f"{cfg.run.generations} generations"] if cfg.run.generations < 10**8 else []
    if cfg.run.max_seconds:
        budget.append(f"{cfg.run.max_seconds:g} s")
    if cfg.run.max_neuron_steps:
        budget.append(f"{cfg.run.max_neuron_steps:.3g} neuron-steps")
    workers = f", {cfg.run.workers or 'no'} Ray worker(s)" if loop.uses_evaluator else ""
    return (
        f"{cfg.name} ({cfg.family} family): {how}, {get_model(cfg.model.kind).size(cfg.model)}, genome D={genome.dim}, "
        f"budget {' or '.join(budget)}{workers}"
    )


def run_experiment(
    cfg: ExperimentConfig,
    console: Console,
    tags: dict[str, str] | None = None,
    resume: dict | None = None,
    run_id: str | None = None,
    subscribers: list | None = None,
) -> Outcome:
    """Meta-train with ``cfg.outer``, track in MLflow, score on held-out tasks beside the baselines.

    ``resume`` (a ``resume.pt`` state) and ``run_id`` continue an interrupted ES run in its own
    MLflow run. ``subscribers`` also get every status dict (``es-l2l tune`` reports validation
    rounds to Ray Tune through one). Raises ``ClusterError`` before any MLflow run exists when Ray is unusable (or GPUs
    are short and ``run.gpu_fallback`` is false), and :class:`RunFailed` (after marking the MLflow
    run FAILED) when the run stops on an error.
    """
    from es_l2l.tracking.checkpoint import Checkpointer
    from es_l2l.cluster.evaluators import make_evaluator, settle_device
    from es_l2l.outer.data_parallel import make_data_parallel
    from es_l2l.families import family_of
    from es_l2l.genome import build_genome
    from es_l2l.preflight import preflight
    from es_l2l.tracking.end_state import final_state
    from es_l2l.outer.driver import drive
    from es_l2l.outer.shell import loop_of
    from es_l2l.reporting.progress import ProgressDisplay
    from es_l2l.tracking.redact import redact_uri
    from es_l2l.reporting.held_out import log_held_out
    from es_l2l.cluster.submit import JOB_ID_ENV
    from es_l2l.tracking.run import MlflowRun

    quiet_libraries()
    if cfg.run.threads is not None:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(0)  # nothing should draw from it; fixes any library that does
    genome = build_genome(cfg)
    console.print(f"[bold]es-l2l {cfg.outer}[/] {describe(cfg, genome)}")
    preflight(cfg, genome.dim)  # tracking store answers, memory fits: PreflightError (a ClusterError) before any work
    cfg, fallback = settle_device(cfg)  # GPU shortfall: an error, or CPU when run.gpu_fallback allows it
    if fallback:
        console.print(f"[yellow]warning:[/] {fallback}")
    loop, family = loop_of(cfg), family_of(cfg.task)
    ctx = RunContext.of(cfg)  # what the family's report (and every plug-in) knows of the run
    if resume is not None and not loop.resumable:
        raise ValueError(f"outer={cfg.outer} runs cannot be resumed; start the run again instead")
    # Ray errors: no MLflow run yet. Data-parallel BPTT's replicas (bptt.workers > 1) stand in for the evaluator.
    evaluator = make_evaluator(cfg, genome) if loop.uses_evaluator else make_data_parallel(cfg, genome)
    if hasattr(evaluator, "wait_ready"):  # wait for the actors to start, so that start-up is not charged to the training clock
        from es_l2l.cluster.preflight import attach_address

        evaluator.wait_ready(lambda line: console.print(f"[yellow]warning:[/] {line}", soft_wrap=True),
                             address=attach_address(cfg))
    elif hasattr(evaluator, "pids"):
        evaluator.pids()  # the same for data-parallel BPTT's replicas
    tags = {"es_l2l.outer": cfg.outer, **(tags or {})}
    if fallback:
        tags["gpu_fallback"] = fallback
    if os.environ.get(JOB_ID_ENV):  # set by es-l2l submit, so the run can be found by its job
        tags["ray.job_submission_id"] = os.environ[JOB_ID_ENV]
    try:
        tracker = MlflowRun(cfg, run_id=run_id) if run_id is not None else MlflowRun(cfg, tags=tags)
    except BaseException:
        if evaluator is not None:
            evaluator.close()
        raise
    if run_id is not None:
        tracker.set_tags(tags)
    verb = f"resumed after generation {resume['generation']}" if resume else "started"
    console.print(f"MLflow run {tracker.run_id} {verb} in experiment '{cfg.tracking.experiment}' at {redact_uri(tracker.uri)}")
    monitor = system_metrics(cfg, tracker)
    with final_state(tracker):  # any exception: FAILED with an error tag; Ctrl-C, SIGTERM or a stop (SystemExit): KILLED
        try:
            with ProgressDisplay.for_config(cfg, console) as progress, tempfile.TemporaryDirectory() as tmp:
                result = drive(cfg, genome, evaluator, [progress, tracker, Checkpointer(cfg, tracker, tmp), *(subscribers or [])],
                               resume=resume)
        finally:
            if evaluator is not None:
                evaluator.close()
            if monitor is not None:
                stop_monitor(monitor, interrupted=isinstance(sys.exc_info()[1], (KeyboardInterrupt, SystemExit)))
        report = family.report(cfg.task, ctx, genome, result.initial, result.best)
        log_held_out(tracker, report, result)  # figures, tables, test metrics, beats and verdict tags
        log_summary(tracker, cfg, report, result, describe(cfg, genome))
        tracker.end("FINISHED")
    return Outcome(cfg, result, report, tracker.run_id, tracker.uri)


def system_metrics(cfg: ExperimentConfig, tracker):
    """MLflow's system-metrics monitor (CPU, memory: ``system/...``) on this run, where psutil is installed."""
    if not cfg.tracking.system_metrics:
        return None
    try:
        import psutil  # noqa: F401
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(tracker.run_id, sampling_interval=10, tracking_uri=tracker.uri)
        monitor.start()
        return monitor
    except Exception:  # no psutil, or an MLflow without the monitor: the run goes on without them
        return None


def stop_monitor(monitor, interrupted: bool, wait: float = 1.0) -> None:
    """End the system-metrics thread. After Ctrl-C or SIGTERM, without waiting for it: its last sample
    (a store read, then a write, each of which can wait 20 s on a busy SQLite file) is not worth a
    slow stop; the thread is a daemon and ends with the process."""
    if not interrupted:
        monitor.finish()
        return
    event, thread = getattr(monitor, "_shutdown_event", None), getattr(monitor, "_process", None)
    if event is None or thread is None:  # another MLflow version: its own finish
        monitor.finish()
        return
    event.set()
    thread.join(wait)
    monitor._process = None


def log_summary(tracker, cfg: ExperimentConfig, report, result, summary: str) -> None:
    """What the run page should say: the description (summary, held-out table and verdict, markdown),
    the held-out results as an MLflow table (``held_out.json``), and the trained network as a pyfunc model."""
    from es_l2l.tracking.checkpoint import save_checkpoint
    from es_l2l.tracking.network_model import log_model
    from es_l2l.reporting.held_out import log_summary_table

    log_summary_table(tracker, report, summary)
    with tempfile.TemporaryDirectory() as tmp:
        genomes = {"best": result.best, "final": result.final, "initial": result.initial}
        path = save_checkpoint(f"{tmp}/checkpoint.pt", cfg, genomes, best_generation=result.best_generation,
                               generations=result.generations)
        log_model(tracker, path)
