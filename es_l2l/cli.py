"""Command line: ``es-l2l run CONFIG [--set dotted.key=value ...] [--resume RUN_ID]``, ``es-l2l compare CONFIG...``,
``es-l2l tune TUNING_YAML``, ``es-l2l submit CONFIG --address ...``, ``es-l2l evaluate CHECKPOINT``,
``es-l2l sync SPOOL``, ``es-l2l bench``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from pathlib import Path

from rich.console import Console

from es_l2l.config import ConfigError, ExperimentConfig, load_config

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


def _parser() -> argparse.ArgumentParser:
    from es_l2l.bench import SECTIONS

    p = argparse.ArgumentParser(prog="es-l2l", description="Evolution strategies meta-train spiking networks (LSNNs) to learn to learn.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="meta-train an LSNN (outer loop ES, BPTT, hybrid or guided ES, from the config), tracked in MLflow")
    run.add_argument("config", nargs="?", help="experiment YAML (default: the embedded defaults, as written out in configs/ by --print-config)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. --set es.popsize=32 (repeatable)")
    run.add_argument("--address", help="attach to a running Ray cluster (same as --set run.address=...)")
    run.add_argument("--workers", type=int, help="number of Ray evaluation actors (same as --set run.workers=N)")
    run.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    run.add_argument("--resume", metavar="RUN_ID", help="continue this MLflow run from its last resume.pt checkpoint (same tracking URI; no CONFIG)")
    run.add_argument("--force", action="store_true", help="with --resume: resume a run still marked RUNNING by a driver on another "
                     "machine (that driver must really be dead; one on this machine is checked, never forced)")
    ev = sub.add_parser("evaluate", help="score a checkpoint's genome on held-out test tasks beside the baselines")
    ev.add_argument("checkpoint", help="a checkpoint.pt file (an MLflow artifact of every run), runs:/RUN_ID, or models:/NAME/VERSION")
    ev.add_argument("--genome", default="best", choices=["best", "final", "initial"], help="which genome to score")
    ev.add_argument("--tasks", type=int, help="number of test episodes (default: the run's run.validation_tasks)")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="task.KEY=VALUE",
                    help="score on a variant of the run's tasks, e.g. --set task.frequent_targets=4 (task.* only; repeatable)")
    cmp = sub.add_parser("compare", help="run several outer loops (ES, BPTT, hybrid, guided ES) on the same budget as child runs of one MLflow run")
    cmp.add_argument("configs", nargs="+", metavar="CONFIG", help="experiment YAMLs, or one comparison YAML (configs/compare_*.yaml)")
    how = cmp.add_mutually_exclusive_group()
    how.add_argument("--budget-seconds", type=float, metavar="S", help="training wall time each outer loop gets")
    how.add_argument("--budget-neuron-steps", type=float, metavar="N", help="simulated neuron-steps each outer loop gets")
    cmp.add_argument(
        "--target", dest="target", type=float,
        help="validation target for the time/compute-to-target columns, in the task family's objective (its "
        "validation metric and direction); default: the worst child's best",
    )
    cmp.add_argument("--target-mse", dest="target_mse_renamed", type=float, help=argparse.SUPPRESS)
    cmp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a value in every config (repeatable)")
    cmp.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                     help="run every config with each seed; adds each arm's mean and 95%% CI over seeds and the paired "
                     "differences (same seed: same held-out tasks), naming a winner only where the CI excludes zero")
    tn = sub.add_parser("tune", help="search an outer loop's hyperparameters on Ray Tune (Optuna TPE or random, ASHA) at equal budgets; trials are child runs of one MLflow run")
    tn.add_argument("config", metavar="TUNING_YAML", help="a tuning file (configs/tune_*.yaml): config, budget, trials, searcher, scheduler, space")
    tn.add_argument("--trials", type=int, metavar="N", help="number of trials (default: the file's)")
    tbudget = tn.add_mutually_exclusive_group()
    tbudget.add_argument("--budget-seconds", type=float, metavar="S", help="training wall time per trial (default: the file's)")
    tbudget.add_argument("--budget-neuron-steps", type=float, metavar="N", help="simulated neuron-steps per trial (default: the file's)")
    tn.add_argument("--searcher", choices=["optuna", "random"], help="Optuna's TPE through Tune, or Tune's random search (default: the file's)")
    tn.add_argument("--out", metavar="PATH", help="where to write the best config (default: <config stem>.best.yaml here)")
    tn.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a value of the tuned config (repeatable)")
    submit = sub.add_parser("submit", help="submit a run to a Ray cluster through Ray's Jobs SDK")
    submit.add_argument("config", help="experiment YAML; the resolved config (with --set) is what the job runs")
    submit.add_argument("--address", required=True, help="the cluster's dashboard, e.g. http://HEAD:8265")
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)")
    submit.add_argument("--follow", action="store_true", help="stream the job's logs; exit 0 only if it SUCCEEDED")
    sync = sub.add_parser("sync", help="upload what a run spooled while its tracking server was unreachable")
    sync.add_argument("spool", help="the spool folder the run named, e.g. .es_l2l_spool/<run id>")
    sync.add_argument("--tracking-uri", help="tracking URI (default: MLFLOW_TRACKING_URI, else the one the run used)")
    bench = sub.add_parser("bench", help="the benchmark suite: simulation grid, Norse peer, ES generation, BPTT step -> JSON")
    bench.add_argument("--quick", action="store_true", help="small shapes (about a minute), for a smoke check")
    bench.add_argument("--out", default="benchmarks/results", help="folder for the JSON results")
    bench.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run only these sections (default: all)")
    bench.add_argument("--pop", type=int, nargs="+", metavar="P", help="populations of the simulation grid (default 1 16 64 256)")
    bench.add_argument("--neurons", type=int, nargs="+", metavar="N", help="network sizes of the grid and BPTT (default 100 200 400)")
    bench.add_argument("--repeats", type=int, help="interleaved repeats per grid cell (default 2)")
    bench.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 gives steadier figures on a busy machine)")
    bench.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts for the ES generation (default 1 2)")
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
    from es_l2l.tracking.checkpoint import fetch_resume
    from es_l2l.config import build_config, stored_model
    from es_l2l.tracking.run import tracking_uri

    state = fetch_resume(args.resume, tracking_uri(cfg), force=args.force)  # ResumeError: one line
    stored = stored_model(state.pop("config"))  # an older es-l2l wrote one model section for every kind
    stored.setdefault("tracking", {})["uri"] = cfg.tracking.uri  # the stored one is redacted (no credentials)
    return build_config(stored, _overrides(args)), state


def cmd_run(args, console: Console) -> int:
    if args.resume and args.config:
        raise ConfigError("pass either CONFIG or --resume RUN_ID, not both (a resumed run keeps its own config)")
    cfg = _resolve(args)  # ConfigError -> exit 2 before anything starts
    resume = None
    if args.resume:
        from es_l2l.tracking.checkpoint import ResumeError

        try:
            cfg, resume = _resume_state(args, cfg)
        except ResumeError as exc:
            _error(exc)
            return EXIT_RUNTIME
    if args.print_config:
        from es_l2l.tracking.redact import safe_yaml

        console.print(safe_yaml(cfg))  # tracking.uri without credentials
        return 0
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from es_l2l.cluster.preflight import local_ray_token

    local_ray_token(cfg)  # before ray is imported: a local Ray's open ports need a random token
    from es_l2l.cluster.evaluators import ClusterError
    from es_l2l.errors import CapacityError
    from es_l2l.experiment import RunFailed, run_experiment

    from es_l2l.tracking.checkpoint import ResumeError
    from es_l2l.tracking.end_state import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():  # SIGTERM stops the run like Ctrl-C: marked KILLED, checkpoints kept
            out = run_experiment(cfg, console, resume=resume, run_id=args.resume)
    except CapacityError as exc:  # asks more than the cluster has: bad input, no run created
        _error(exc)
        return EXIT_CONFIG
    except (ClusterError, RunFailed, ResumeError) as exc:
        _error(exc)
        return EXIT_RUNTIME
    except KeyboardInterrupt as exc:
        _stopped(console, exc, "run keeps")
    _print_summary(console, out.report, out.result, out.run_id, out.uri)
    return 0


def _print_summary(console: Console, report, result, run_id: str, uri: str) -> None:
    from es_l2l.reporting.held_out import print_held_out
    from es_l2l.tracking.run import ui_command

    print_held_out(console, report, result)
    console.print(f"MLflow run id: {run_id}\nbrowse it:     {ui_command(uri)}")


def cmd_compare(args, console: Console) -> int:
    from es_l2l.compare import CompareError, compare, resolve_plan

    if args.target_mse_renamed is not None:
        raise ConfigError("--target-mse is now --target (in the task family's objective: its validation metric and direction)")
    plan = resolve_plan(args.configs, args.overrides, args.budget_seconds, args.budget_neuron_steps, args.target, args.seeds)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from es_l2l.cluster.preflight import local_ray_token
    from es_l2l.tracking.end_state import sigterm_as_interrupt

    from es_l2l.cluster.preflight import needs_ray

    local_ray_token(next((c for c in plan.configs if needs_ray(c)), plan.configs[0]))

    from es_l2l.errors import ClusterError
    from es_l2l.tracking.end_state import RunFailed

    try:
        with sigterm_as_interrupt():
            return compare(plan, console)
    except (CompareError, RunFailed, ClusterError) as exc:
        _error(exc)
        return EXIT_RUNTIME
    except KeyboardInterrupt as exc:  # Ctrl-C as SIGTERM: one line, the parent and children marked KILLED
        _stopped(console, exc, "runs keep")


def cmd_tune(args, console: Console) -> int:
    from es_l2l.tune import TuneError, resolve_tune, tune

    plan = resolve_tune(args.config, args.overrides, args.trials, args.budget_seconds, args.budget_neuron_steps, args.out, args.searcher)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from es_l2l.cluster.preflight import local_ray_token

    local_ray_token(plan.trial, always=True)  # the trials run on a local Ray: a random token, none left in ~/.ray
    from es_l2l.cluster.evaluators import ClusterError
    from es_l2l.tracking.end_state import RunFailed, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():  # SIGTERM stops the search like Ctrl-C: parent and trials KILLED
            return tune(plan, console)
    except (TuneError, ClusterError, RunFailed) as exc:
        _error(exc)
        return EXIT_RUNTIME
    except KeyboardInterrupt as exc:
        _stopped(console, exc, "runs keep", f"no best config written to {plan.out}")


def _stopped(console: Console, exc: KeyboardInterrupt, runs_keep: str, also: str = "") -> None:
    """After Ctrl-C or SIGTERM (the runs already marked KILLED): one line, then exit 130 or 143 with
    Ray shut down and no slow native teardown."""
    from es_l2l.tracking.end_state import EXIT_SIGINT, EXIT_SIGTERM, exit_now
    from es_l2l.tracking.end_state import terminated as by_sigterm

    terminated = by_sigterm(exc)
    how = "terminated" if terminated else "interrupted"
    also = f"; {also}" if also else ""
    if getattr(exc, "run_marked", False):
        console.print(f"{how}; the MLflow {runs_keep} the metrics logged so far{also}", soft_wrap=True)
    else:  # stopped while starting (preflight, Ray starting): no MLflow run exists yet
        console.print(f"{how} before any MLflow run started; nothing was logged", soft_wrap=True)
    exit_now(EXIT_SIGTERM if terminated else EXIT_SIGINT)


def cmd_evaluate(args, console: Console) -> int:
    import tempfile

    from es_l2l.config import MAX_TASKS

    if args.tasks is not None and not 1 <= args.tasks <= MAX_TASKS:
        raise ConfigError(f"--tasks must be a positive number of test episodes (at most {MAX_TASKS:,}), got {args.tasks}")
    with tempfile.TemporaryDirectory(prefix="es-l2l-evaluate-") as folder:  # removed whatever happens
        loaded = _evaluate_load(args, folder)
    if loaded is None:
        return EXIT_RUNTIME
    cfg, genome, genomes, meta = loaded
    from es_l2l.families import family_of

    if args.tasks:
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"validation_tasks": args.tasks})})
    if args.overrides:
        cfg = _task_variant(cfg, args.overrides)
    from es_l2l.context import RunContext

    report = family_of(cfg.task).report(cfg.task, RunContext.of(cfg), genome, genomes["initial"], genomes[args.genome])
    console.print(f"{cfg.name}: '{args.genome}' genome from generation {meta.get('best_generation') if args.genome == 'best' else meta.get('generations')}")
    from es_l2l.reporting.held_out import print_held_out

    print_held_out(console, report, None)
    return 0


def _evaluate_load(args, folder: str):
    """The checkpoint ``args.checkpoint`` names, loaded (data only); None after printing one line."""
    from es_l2l.tracking.checkpoint import load_checkpoint

    if args.checkpoint.startswith(("runs:/", "models:/")):  # a run's checkpoint or a (registered) model
        from es_l2l.tracking.checkpoint import fetch_run
        from es_l2l.errors import PreflightError
        from es_l2l.tracking.preflight import probe_tracking
        from es_l2l.tracking.network_model import checkpoint_from_uri
        from es_l2l.tracking.redact import redact_text, redact_uri

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"  # as mlflow resolves runs:/
        try:
            if args.checkpoint.startswith("runs:/"):  # the same probe as `run`, and "no such run" in one line
                fetch_run(args.checkpoint.removeprefix("runs:/").strip("/").split("/")[0], uri, PreflightError)
            else:
                probe_tracking(uri)
        except PreflightError as exc:
            _error(exc)
            return None
        try:
            path = checkpoint_from_uri(args.checkpoint, folder)
        except Exception as exc:  # MlflowException, FileNotFoundError, ...
            why = redact_text(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}")
            _error(f"cannot fetch '{args.checkpoint}' from {redact_uri(uri)} ({why}); check the URI and MLFLOW_TRACKING_URI")
            return None
    else:
        path = Path(args.checkpoint)
    if not path.exists():
        _error(f"checkpoint '{path}' does not exist; download it from the run's MLflow artifacts")
        return None
    try:
        return load_checkpoint(path)  # data only (weights_only); ValueError: one line
    except ValueError as exc:
        _error(exc)
        return None


def _task_variant(cfg, overrides: list[str]):
    """The checkpoint's config with ``task.*`` overrides; the trained network (its inputs) must still fit."""
    from es_l2l.config import build_config
    from es_l2l.families import family_of

    bad = [o for o in overrides if not o.startswith("task.")]
    if bad:
        raise ConfigError(f"evaluate --set changes the held-out tasks only (task.KEY=VALUE), got '{bad[0]}'; the model and its "
                          "training settings belong to the checkpoint")
    variant = build_config(cfg.model_dump(), overrides)
    before, after = family_of(cfg.task).io_sizes(cfg.task), family_of(variant.task).io_sizes(variant.task)
    if before != after:
        raise ConfigError(f"{' '.join(overrides)} changes the network's (inputs, outputs) from {before} to {after}; the trained "
                          "network cannot be scored on such tasks")
    return variant


def cmd_submit(args, console: Console) -> int:
    cfg = load_config(args.config, args.overrides)  # ConfigError -> exit 2 before anything is submitted
    from es_l2l.cluster.evaluators import ClusterError
    from es_l2l.cluster.submit import submit

    try:
        return submit(cfg, args.address, args.follow, say=lambda *a, **k: print(*a, **k, flush=True))
    except ClusterError as exc:
        _error(exc)
        return EXIT_RUNTIME


def cmd_sync(args, console: Console) -> int:
    from es_l2l.tracking.spool import is_outage, sync

    try:
        run_id, sent = sync(args.spool, args.tracking_uri)
    except ValueError as exc:
        _error(exc)
        return EXIT_RUNTIME
    except Exception as exc:
        if not is_outage(exc):
            raise
        _error(f"the tracking store is still unreachable; the spool {args.spool} is kept, try again later")
        return EXIT_RUNTIME
    console.print(f"uploaded {sent} spooled item(s) to MLflow run {run_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # A parent may have blocked SIGINT/SIGTERM (a process running Ray's core does, and exec keeps a
    # blocked mask): unblock them, or Ctrl-C and kill would not reach this run.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    # MLflow's download progress bars would break the one-line error contract on stderr
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow 3 sends usage telemetry unless told not to; off unless the user opts in
    # (MLFLOW_DISABLE_TELEMETRY=false). Read when mlflow is imported, which happens below.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from es_l2l.tracking.redact import redact_logs

    redact_logs()  # MLflow's own log lines (an outage's failing URL) without credentials
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 120))
    try:
        if args.command == "run":
            return cmd_run(args, console)
        if args.command == "compare":
            return cmd_compare(args, console)
        if args.command == "tune":
            return cmd_tune(args, console)
        if args.command == "evaluate":
            return cmd_evaluate(args, console)
        if args.command == "submit":
            return cmd_submit(args, console)
        if args.command == "sync":
            return cmd_sync(args, console)
        if args.command == "bench":
            from es_l2l.bench import main as bench_main

            return bench_main(quick=args.quick, out=args.out, console=console, only=args.only, pops=args.pop,
                              neurons=args.neurons, repeats=args.repeats, threads=args.threads, workers=tuple(args.workers))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)  # one line, never wrapped
        return EXIT_CONFIG
    return 0


if __name__ == "__main__":
    sys.exit(main())
