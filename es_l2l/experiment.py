"""One experiment, end to end: outer loop, MLflow run, held-out report. Shared by ``run`` and ``compare``."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass

import torch
from rich.console import Console

from es_l2l.config import ExperimentConfig


class RunFailed(RuntimeError):
    """The run stopped on an error; its MLflow run is marked FAILED and keeps what it logged."""

    def __init__(self, message: str, run_id: str | None = None):
        super().__init__(message)
        self.run_id = run_id


@dataclass
class Outcome:
    cfg: ExperimentConfig
    result: object  # es_l2l.outer.base.RunResult
    report: object  # the family's held-out Report (es_l2l.families.base)
    run_id: str
    uri: str


def quiet_libraries() -> None:
    for noisy in ("evotorch", "mlflow"):  # after their imports, which set their own levels
        logging.getLogger(noisy).setLevel(logging.WARNING)


def describe(cfg: ExperimentConfig, genome) -> str:
    from es_l2l.families import family_of
    from es_l2l.models import model_of
    from es_l2l.outer import OUTER_LOOPS

    loop = OUTER_LOOPS[cfg.outer]
    how = loop.describe(cfg, family_of(cfg))
    budget = [f"{cfg.run.generations} generations"] if cfg.run.generations < 10**8 else []
    if cfg.run.max_seconds:
        budget.append(f"{cfg.run.max_seconds:g} s")
    if cfg.run.max_neuron_steps:
        budget.append(f"{cfg.run.max_neuron_steps:.3g} neuron-steps")
    workers = f", {cfg.run.workers or 'no'} Ray worker(s)" if loop.uses_evaluator else ""
    return (
        f"{cfg.name} ({cfg.family} family): {how}, {model_of(cfg).size(cfg)}, genome D={genome.dim}, "
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

    ``resume`` (a ``resume.pkl`` state) and ``run_id`` continue an interrupted ES run in its own
    MLflow run. Raises ``ClusterError`` before any MLflow run exists when Ray is unusable (or GPUs
    are short and ``run.gpu_fallback`` is false), and :class:`RunFailed` (after marking the MLflow
    run FAILED) when the run stops on an error.
    """
    from es_l2l.checkpoint import Checkpointer
    from es_l2l.distributed import ClusterError, make_evaluator, settle_device
    from es_l2l.families import family_of
    from es_l2l.genome import build_genome
    from es_l2l.outer import OUTER_LOOPS
    from es_l2l.outer.base import NonFiniteFitness
    from es_l2l.progress import ProgressDisplay
    from es_l2l.submit import JOB_ID_ENV
    from es_l2l.tracking import MlflowRun

    quiet_libraries()
    if cfg.run.threads is not None:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(0)  # nothing should draw from it; fixes any library that does
    genome = build_genome(cfg)
    console.print(f"[bold]es-l2l {cfg.outer}[/] {describe(cfg, genome)}")
    cfg, fallback = settle_device(cfg)  # GPU shortfall: an error, or CPU when run.gpu_fallback allows it
    if fallback:
        console.print(f"[yellow]warning:[/] {fallback}")
    loop, family = OUTER_LOOPS[cfg.outer], family_of(cfg)
    if resume is not None and not loop.resumable:
        raise ValueError(f"outer={cfg.outer} runs cannot be resumed; start the run again instead")
    evaluator = make_evaluator(cfg, genome) if loop.uses_evaluator else None  # Ray errors: no MLflow run yet
    if hasattr(evaluator, "pids"):
        evaluator.pids()  # wait for the actors to start, so that start-up is not charged to the training clock
    tags = {"es_l2l.outer": cfg.outer, **(tags or {})}
    if fallback:
        tags["gpu_fallback"] = fallback
    if os.environ.get(JOB_ID_ENV):  # set by es-l2l submit, so the run can be found by its job
        tags["ray.job_submission_id"] = os.environ[JOB_ID_ENV]
    if run_id is not None:
        tracker = MlflowRun(cfg, run_id=run_id)
        tracker.set_tags(tags)
    else:
        tracker = MlflowRun(cfg, tags=tags)
    verb = f"resumed after generation {resume['generation']}" if resume else "started"
    console.print(f"MLflow run {tracker.run_id} {verb} in experiment '{cfg.tracking.experiment}' at {tracker.uri}")
    try:
        with ProgressDisplay.for_config(cfg, console) as progress, tempfile.TemporaryDirectory() as tmp:
            result = loop.run(cfg, genome, evaluator, [progress, tracker, Checkpointer(cfg, tracker, tmp)], resume=resume)
    except (ClusterError, NonFiniteFitness, FloatingPointError) as exc:
        tracker.end("FAILED")
        raise RunFailed(f"{exc} (MLflow run {tracker.run_id} keeps the metrics logged so far)", tracker.run_id) from exc
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    finally:
        if evaluator is not None:
            evaluator.close()
    try:
        report = family.report(cfg, genome, result.initial, result.best)
        report.log(tracker, cfg, genome, result)  # plots, tables, test metrics, verdict tags
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
    return Outcome(cfg, result, report, tracker.run_id, tracker.uri)
