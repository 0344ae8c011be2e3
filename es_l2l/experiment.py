"""One experiment, end to end: outer loop, MLflow run, held-out report. Shared by ``run`` and ``compare``."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from es_l2l.config import ExperimentConfig
from es_l2l.lifecycle import RunFailed  # noqa: F401  (raised by run_experiment; defined with the run's end states)


@dataclass
class Outcome:
    cfg: ExperimentConfig
    result: object  # outer.loop.RunResult
    report: object  # report.HeldOutReport
    run_id: str
    uri: str


def quiet_libraries() -> None:
    for noisy in ("evotorch", "mlflow"):  # after their imports, which set their own levels
        logging.getLogger(noisy).setLevel(logging.WARNING)


def describe(cfg: ExperimentConfig, genome) -> str:
    if cfg.outer == "es":
        how = f"{cfg.es.algorithm.upper()} P={cfg.es.popsize}"
    elif cfg.outer == "bptt" and cfg.family == "maze":
        how = f"A2C + BPTT (Adam lr={cfg.bptt.lr}) on {', '.join(cfg.bptt.train)}"
    elif cfg.outer == "bptt":
        how = f"BPTT (Adam lr={cfg.bptt.lr}) on {', '.join(cfg.bptt.train)}" + (" with DEEP R" if cfg.bptt.deep_r.enabled else "")
    else:
        how = (
            f"hybrid: {cfg.es.algorithm.upper()} P={cfg.es.popsize} on {', '.join(cfg.hybrid.es_blocks)}, "
            f"{cfg.hybrid.bptt_steps} BPTT steps on {', '.join(cfg.bptt.train)}"
        )
    budget = [f"{cfg.run.generations} generations"] if cfg.run.generations < 10**8 else []
    if cfg.run.max_seconds:
        budget.append(f"{cfg.run.max_seconds:g} s")
    if cfg.run.max_neuron_steps:
        budget.append(f"{cfg.run.max_neuron_steps:.3g} neuron-steps")
    workers = f", {cfg.run.workers or 'no'} Ray worker(s)" if cfg.outer != "bptt" else ""
    return (
        f"{cfg.name} ({cfg.family} family): {how}, {cfg.model.n_lif}+{cfg.model.n_alif} neurons, genome D={genome.dim}, "
        f"budget {' or '.join(budget)}{workers}"
    )


def run_experiment(
    cfg: ExperimentConfig,
    console: Console,
    tags: dict[str, str] | None = None,
    resume: dict | None = None,
    run_id: str | None = None,
) -> Outcome:
    """Meta-train with ``cfg.outer``, track in MLflow, score on held-out tasks beside the baselines.

    ``resume`` (a ``resume.pt`` state) and ``run_id`` continue an interrupted ES run in its own
    MLflow run. Raises ``ClusterError`` before any MLflow run exists when Ray is unusable (or GPUs
    are short and ``run.gpu_fallback`` is false), and :class:`RunFailed` (after marking the MLflow
    run FAILED) when the run stops on an error.
    """
    from es_l2l.checkpoint import Checkpointer
    from es_l2l.distributed import make_evaluator, settle_device
    from es_l2l.genome import build_genome
    from es_l2l.guard import preflight
    from es_l2l.lifecycle import final_state
    from es_l2l.outer.loop import run_outer
    from es_l2l.progress import ProgressDisplay
    from es_l2l.redact import redact_uri
    from es_l2l.report import family_report
    from es_l2l.submit import JOB_ID_ENV
    from es_l2l.tracking import MlflowRun

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
    evaluator = make_evaluator(cfg, genome) if cfg.outer != "bptt" else None  # Ray errors: no MLflow run yet
    if hasattr(evaluator, "pids"):
        evaluator.pids()  # wait for the actors to start, so that start-up is not charged to the training clock
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
    with final_state(tracker):  # any exception: FAILED with an error tag; Ctrl-C or SIGTERM: KILLED
        try:
            with ProgressDisplay.for_config(cfg, console) as progress, tempfile.TemporaryDirectory() as tmp:
                result = run_outer(cfg, genome, evaluator, [progress, tracker, Checkpointer(cfg, tracker, tmp)], resume=resume)
        finally:
            if evaluator is not None:
                evaluator.close()
        report = family_report(cfg, genome, result.initial, result.best)
        log_results(tracker, cfg, genome, report, result)
        tracker.end("FINISHED")
    return Outcome(cfg, result, report, tracker.run_id, tracker.uri)


def log_results(tracker, cfg: ExperimentConfig, genome, report, result) -> None:
    """Plots, tables, test metrics and verdict tags into the MLflow run."""
    from es_l2l.report import plot_curves, verdict

    if cfg.family == "maze":
        from es_l2l.maze_report import log_maze_results

        return log_maze_results(tracker, cfg, genome, report, result)

    with tempfile.TemporaryDirectory() as tmp:
        tracker.log_artifact(plot_curves(report, Path(tmp) / "mse_per_trial.png", f"{cfg.name}: held-out tasks"))
    tracker.log_text(report.to_csv(), "mse_per_trial.csv")
    tracker.log_metrics(report.flat_metrics(), step=result.generations)
    tags = {f"beats.{k}": str(v).lower() for k, v in report.beaten().items()}
    tracker.set_tags(tags | {"verdict": verdict(report)[:5000]})
