"""Command line: ``es-l2l run CONFIG [--set dotted.key=value ...] [--resume RUN_ID]``, ``es-l2l submit``, ``es-l2l evaluate CHECKPOINT``, ``es-l2l bench``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

from rich.console import Console

from es_l2l.config import ConfigError, ExperimentConfig, load_config

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="es-l2l", description="Evolution strategies meta-train spiking networks (LSNNs) to learn to learn.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="meta-train an LSNN with evolution strategies, tracked in MLflow")
    run.add_argument("config", nargs="?", help="experiment YAML (default: the embedded defaults = configs/teacher_es.yaml)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. --set es.popsize=32 (repeatable)")
    run.add_argument("--address", help="attach to a running Ray cluster (same as --set run.address=...)")
    run.add_argument("--workers", type=int, help="number of Ray evaluation actors (same as --set run.workers=N)")
    run.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    run.add_argument("--resume", metavar="RUN_ID", help="continue this MLflow run from its last resume.pkl checkpoint (same tracking URI; no CONFIG)")
    ev = sub.add_parser("evaluate", help="score a checkpoint's genome on held-out test tasks beside the baselines")
    ev.add_argument("checkpoint", help="a checkpoint.pt file (an MLflow artifact of every run)")
    ev.add_argument("--genome", default="best", choices=["best", "final", "initial"], help="which genome to score")
    ev.add_argument("--tasks", type=int, help="number of test episodes (default: the run's run.validation_tasks)")
    submit = sub.add_parser("submit", help="submit a run to a Ray cluster through Ray's Jobs SDK")
    submit.add_argument("config", help="experiment YAML; the resolved config (with --set) is what the job runs")
    submit.add_argument("--address", required=True, help="the cluster's dashboard, e.g. http://HEAD:8265")
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)")
    submit.add_argument("--follow", action="store_true", help="stream the job's logs; exit 0 only if it SUCCEEDED")
    bench = sub.add_parser("bench", help="time the population simulation against a loop over members")
    bench.add_argument("--quick", action="store_true", help="small shapes (seconds), for a smoke check")
    bench.add_argument("--out", default="benchmarks/results", help="folder for the JSON results")
    return p


def _overrides(args) -> list[str]:
    overrides = list(args.overrides)
    if args.address:
        overrides.append(f"run.address={args.address}")
    if args.workers is not None:
        overrides.append(f"run.workers={args.workers}")
    return overrides


def _resolve(args) -> ExperimentConfig:
    return load_config(args.config, _overrides(args))


def _error(message) -> None:
    print(f"error: {message}", file=sys.stderr)  # one line, never wrapped


def _resume_state(args, cfg: ExperimentConfig) -> tuple[ExperimentConfig, dict]:
    """The stored config (plus this command's overrides) and driver state of run ``args.resume``."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from es_l2l.checkpoint import RESUME_ARTIFACT, load_resume
    from es_l2l.config import build_config
    from es_l2l.tracking import tracking_uri

    uri = tracking_uri(cfg)
    client = MlflowClient(tracking_uri=uri)
    try:
        client.get_run(args.resume)
    except MlflowException:
        raise ResumeError(f"no MLflow run '{args.resume}' at {uri}; pass the tracking URI it was logged to (--set tracking.uri=... or MLFLOW_TRACKING_URI)") from None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            state = load_resume(client.download_artifacts(args.resume, RESUME_ARTIFACT, tmp))
        except (MlflowException, OSError):
            raise ResumeError(f"MLflow run '{args.resume}' has no {RESUME_ARTIFACT} yet (it is logged every run.checkpoint_every generations); start it again instead") from None
    return build_config(state.pop("config"), _overrides(args)), state


class ResumeError(RuntimeError):
    """The run to resume or its checkpoint cannot be found."""


def cmd_run(args, console: Console) -> int:
    if args.resume and args.config:
        raise ConfigError("pass either CONFIG or --resume RUN_ID, not both (a resumed run keeps its own config)")
    cfg = _resolve(args)  # ConfigError -> exit 2 before anything starts
    resume = None
    if args.resume:
        try:
            cfg, resume = _resume_state(args, cfg)
        except ResumeError as exc:
            _error(exc)
            return EXIT_RUNTIME
    if args.print_config:
        console.print(cfg.to_yaml())
        return 0
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import torch

    from es_l2l.checkpoint import Checkpointer
    from es_l2l.distributed import ClusterError, make_evaluator, settle_device
    from es_l2l.genome import build_genome
    from es_l2l.outer.es import NonFiniteFitness
    from es_l2l.outer.loop import run_es
    from es_l2l.progress import ProgressDisplay
    from es_l2l.report import held_out_report
    from es_l2l.submit import JOB_ID_ENV
    from es_l2l.tasks.teacher import n_inputs
    from es_l2l.tracking import MlflowRun

    for noisy in ("evotorch", "mlflow"):  # after their imports, which set their own levels
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.manual_seed(0)  # nothing should draw from it; fixes any library that does
    genome = build_genome(cfg, n_inputs(cfg.task))
    console.print(
        f"[bold]es-l2l run[/] {cfg.name}: {cfg.es.algorithm.upper()} P={cfg.es.popsize}, "
        f"{cfg.model.n_lif}+{cfg.model.n_alif} neurons, genome D={genome.dim} "
        f"({', '.join(genome.searched)}), {cfg.run.generations} generations, "
        f"{cfg.run.workers or 'no'} Ray worker(s)"
    )
    try:
        cfg, fallback = settle_device(cfg)  # GPU shortfall: an error, or CPU when run.gpu_fallback allows it
        evaluator = make_evaluator(cfg, genome)  # Ray errors here create no MLflow run
    except ClusterError as exc:
        _error(exc)
        return EXIT_RUNTIME
    if fallback:
        console.print(f"[yellow]warning:[/] {fallback}")
    tracker = MlflowRun(cfg, run_id=args.resume)
    verb = f"resumed after generation {resume['generation']}" if resume else "started"
    console.print(f"MLflow run {tracker.run_id} {verb} in experiment '{cfg.tracking.experiment}' at {tracker.uri}")
    tags = {"gpu_fallback": fallback} if fallback else {}
    if os.environ.get(JOB_ID_ENV):  # set by es-l2l submit, so the run can be found by its job
        tags["ray.job_submission_id"] = os.environ[JOB_ID_ENV]
    tracker.set_tags(tags)
    try:
        with ProgressDisplay(cfg.run.generations, console) as progress, tempfile.TemporaryDirectory() as tmp:
            subscribers = [progress, tracker, Checkpointer(cfg, tracker, tmp)]
            result = run_es(cfg, genome, evaluator, subscribers, resume=resume)
    except (ClusterError, NonFiniteFitness) as exc:
        tracker.end("FAILED")
        _error(f"{exc} (MLflow run {tracker.run_id} keeps the metrics logged so far)")
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        tracker.end("KILLED")
        console.print(f"interrupted; MLflow run {tracker.run_id} keeps the metrics logged so far")
        return 130
    finally:
        evaluator.close()

    try:
        report = held_out_report(cfg, genome, result.initial, result.best)
        _log_results(tracker, cfg, report, result)
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
    _print_summary(console, report, result, tracker)
    return 0


def _log_results(tracker, cfg: ExperimentConfig, report, result) -> None:
    """Checkpoint, plot, per-trial CSV, test metrics and verdict tags into the MLflow run."""
    from es_l2l.report import plot_curves, verdict

    with tempfile.TemporaryDirectory() as tmp:
        tracker.log_artifact(plot_curves(report, Path(tmp) / "mse_per_trial.png", f"{cfg.name}: held-out tasks"))
    tracker.log_text(report.to_csv(), "mse_per_trial.csv")
    tracker.log_metrics(report.flat_metrics(), step=result.generations)
    tags = {f"beats.{k}": str(v).lower() for k, v in report.beaten().items()}
    tracker.set_tags(tags | {"verdict": verdict(report)[:5000]})


def _print_summary(console: Console, report, result, tracker) -> None:
    from es_l2l.report import LSNN_TRAINED, LSNN_UNTRAINED, summary_table, verdict
    from es_l2l.tracking import ui_command

    console.print(summary_table(report))
    console.print(
        f"family: {report.within_share:.0%} of target variance lies within tasks; a linear fit explains "
        f"{report.linear_share:.0%} of it."
    )
    console.print(verdict(report))
    vals = [h for h in result.history if "val_mse_late" in h]
    test = report.metrics[LSNN_TRAINED]["test_mse_late"]
    test0 = report.metrics[LSNN_UNTRAINED]["test_mse_late"]
    console.print(
        f"validation MSE over late trials: {vals[0]['val_mse_late']:.4f} at generation 0 -> "
        f"{vals[-1]['val_mse_late']:.4f} at generation {vals[-1]['generation']} "
        f"(best {min(h['val_mse_late'] for h in vals):.4f} at generation {result.best_generation}); "
        f"test MSE over late trials: {test:.4f} (generation 0: {test0:.4f})"
    )
    console.print(f"MLflow run id: {tracker.run_id}\nbrowse it:     {ui_command(tracker.uri)}")


def cmd_evaluate(args, console: Console) -> int:
    from es_l2l.checkpoint import load_checkpoint
    from es_l2l.report import LSNN_TRAINED, held_out_report, summary_table, verdict

    path = Path(args.checkpoint)
    if not path.is_file():
        _error(f"checkpoint '{path}' does not exist; download it from the run's MLflow artifacts")
        return EXIT_RUNTIME
    cfg, genome, genomes, meta = load_checkpoint(path)
    if args.tasks:
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"validation_tasks": args.tasks})})
    report = held_out_report(cfg, genome, genomes["initial"], genomes[args.genome])
    console.print(f"{cfg.name}: '{args.genome}' genome from generation {meta.get('best_generation') if args.genome == 'best' else meta.get('generations')}")
    console.print(summary_table(report))
    console.print(verdict(report))
    console.print(f"test MSE over late trials: {report.metrics[LSNN_TRAINED]['test_mse_late']:.4f}")
    return 0


def cmd_submit(args, console: Console) -> int:
    cfg = load_config(args.config, args.overrides)  # ConfigError -> exit 2 before anything is submitted
    from es_l2l.distributed import ClusterError
    from es_l2l.submit import submit

    try:
        return submit(cfg, args.address, args.follow, say=lambda *a, **k: print(*a, **k, flush=True))
    except ClusterError as exc:
        _error(exc)
        return EXIT_RUNTIME


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 120))
    try:
        if args.command == "run":
            return cmd_run(args, console)
        if args.command == "evaluate":
            return cmd_evaluate(args, console)
        if args.command == "submit":
            return cmd_submit(args, console)
        if args.command == "bench":
            from es_l2l.bench import main as bench_main

            return bench_main(quick=args.quick, out=args.out, console=console)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)  # one line, never wrapped
        return EXIT_CONFIG
    return 0


if __name__ == "__main__":
    sys.exit(main())
