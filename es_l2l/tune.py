"""``es-l2l tune``: Ray Tune searches an outer loop's own hyperparameters, at an equal budget per trial.

A tuning file (``configs/tune_*.yaml``) names an experiment config, a budget (seconds of training
or simulated neuron-steps, applied as ``es-l2l compare`` applies it), a number of trials, a searcher
(Optuna's TPE through Tune, or Tune's random search), an optional ASHA scheduler and the search
space over dotted config keys. Every trial is an ordinary es-l2l run (:func:`run_experiment`), a
child of one MLflow parent run; it reports the family objective's best validation value so far to
Tune after each validation round, so ASHA can stop poor trials early. The parent gets the trial
table, the best trial's values and the best config as YAML, which ``es-l2l run`` accepts.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from es_l2l.config import ConfigError, ExperimentConfig, build_config, load_config
from es_l2l.tracking.metric_keys import comparison_key, withheld
from es_l2l.reporting.tables import csv_table, markdown_table, rich_table

KINDS = {"uniform": "[low, high]", "loguniform": "[low, high], low > 0", "randint": "[low, high], both included",
         "choice": "[value, ...]"}
SEARCHERS = ("optuna", "random")
# Keys that must be equal across trials (budget, held-out tasks, tracking) or that are not hyperparameters.
FIXED = ("run.", "tracking.", "name", "outer", "task.family")


class TuneError(RuntimeError):
    """No trial finished; the message says why."""


@dataclass
class TunePlan:
    source: Path  # the tuning file
    config_path: Path  # the experiment config it names
    base: ExperimentConfig  # the config with its overrides, as it would run (what the best YAML starts from)
    trial: ExperimentConfig  # the budget applied, tracking made absolute: what every trial starts from
    space: dict[str, tuple[str, list]]  # dotted key -> (kind, arguments)
    budget: tuple[str, float]
    trials: int = 16
    searcher: str = "optuna"
    scheduler: str | None = "asha"
    grace_period: int = 1
    reduction_factor: float = 3.0
    concurrent_trials: int = 1
    seed: int = 0
    include_config: bool = True
    out: Path = field(default_factory=Path)

    @property
    def budget_text(self) -> str:
        kind, amount = self.budget
        return f"{amount:g} s of training" if kind == "seconds" else f"{amount:.3g} neuron-steps"


def _plain(value: Any) -> Any:
    """A Python scalar (Tune and Optuna hand back numpy ones)."""
    return value.item() if hasattr(value, "item") else value


def with_values(cfg: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
    """``cfg`` with the dotted keys set to these values, validated (ConfigError otherwise)."""
    tree = cfg.model_dump()
    for key, value in values.items():
        node = tree
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = _plain(value)
    return build_config(tree)


def _check_space(src: Path, cfg: ExperimentConfig, space: Any) -> dict[str, tuple[str, list]]:
    """The search space, each key known to ``cfg`` and each end or choice a valid value (ConfigError otherwise)."""
    from difflib import get_close_matches

    from es_l2l.outer import OUTER_LOOPS
    from es_l2l.outer.shell import loop_of

    if not isinstance(space, dict) or not space:
        raise ConfigError(f"'space' in tuning file '{src}' must map dotted config keys to e.g. {{loguniform: [0.01, 0.3]}}")
    flat = cfg.flat()
    used = set(loop_of(cfg).sections)
    others = {loop.section for loop in OUTER_LOOPS.values() if loop.section} - used
    out = {}
    for key, spec in space.items():
        key = str(key)
        if key not in flat:
            near = get_close_matches(key, list(flat), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ConfigError(f"unknown config key '{key}' in the search space of '{src}'{hint}; use a dotted key of {cfg.name}'s config")
        if key.split(".")[0] in others:
            raise ConfigError(f"'{key}' in the search space of '{src}' does nothing for outer={cfg.outer}; tune the keys of {', '.join(sorted(used))}")
        if key.startswith(FIXED) or key in FIXED:
            raise ConfigError(f"'{key}' in the search space of '{src}' must be equal across trials (budget, held-out tasks, tracking); tune an outer loop's, the model's or the task's own keys")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise ConfigError(f"search space '{key}' in '{src}' must be one of {{{', '.join(f'{k}: {v}' for k, v in KINDS.items())}}}, got {spec!r}")
        kind, args = next(iter(spec.items()))
        ok = isinstance(args, list) and len(args) >= 1
        if kind == "choice":
            ok = ok and all(a is None or isinstance(a, (bool, int, float, str)) for a in args)
        else:
            ok = ok and len(args) == 2 and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args) and args[0] <= args[1]
            ok = ok and (kind != "loguniform" or args[0] > 0) and (kind != "randint" or all(isinstance(a, int) for a in args))
            ok = ok and (kind == "randint" or args[0] < args[1])
        if not ok:
            raise ConfigError(f"search space '{key}' in '{src}': {kind} takes {KINDS[kind]} (choices: numbers, strings, booleans or null), got {args!r}")
        for value in args:  # the ends of a range, or every choice, must make a valid config
            try:
                with_values(cfg, {key: value})
            except ConfigError as exc:
                raise ConfigError(f"search space '{key}' in '{src}': {value!r} is not a valid value ({exc})") from None
        out[key] = (kind, list(args))
    return out


def resolve_tune(path: str, overrides: list[str], trials: int | None = None, budget_seconds: float | None = None,
                 budget_neuron_steps: float | None = None, out: str | None = None, searcher: str | None = None) -> TunePlan:
    """The tuning plan of a tuning file (command-line values win); ConfigError before anything starts."""
    from es_l2l.compare import apply_budget
    from es_l2l.plan_files import read_tune_file
    from es_l2l.tracking.run import tracking_uri

    src = Path(path)
    file = read_tune_file(src)  # typed: one line naming the key (es_l2l.plan_files)
    budget = file.resolve(budget_seconds, budget_neuron_steps, "tune")
    config_path = src.parent / file.config
    base = load_config(config_path, [*file.set, *overrides])
    trial = apply_budget(base, budget)
    uri = tracking_uri(trial)  # trials run in Ray workers, elsewhere: give them the same store
    root = trial.tracking.artifact_root if "://" in trial.tracking.artifact_root else str(Path(trial.tracking.artifact_root).resolve())
    trial = build_config(trial.model_dump(), [f"tracking.uri={uri}", f"tracking.artifact_root={root}"])
    plan = TunePlan(src, config_path, base, trial, _check_space(src, base, file.space), budget, trials=file.trials,
                    searcher=searcher or file.searcher, scheduler="asha" if file.scheduler == "asha" else None,
                    grace_period=file.grace_period, reduction_factor=file.reduction_factor,
                    concurrent_trials=file.concurrent_trials, seed=file.seed, include_config=file.include_config)
    if trials is not None:
        if trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {trials}")
        plan.trials = trials
    plan.out = Path(out) if out else Path(f"{config_path.stem}.best.yaml")
    return plan


def _in_space(value: Any, kind: str, args: list) -> bool:
    if kind == "choice":
        return value in args
    return isinstance(value, (int, float)) and not isinstance(value, bool) and args[0] <= value <= args[1] and (
        kind != "randint" or value == int(value))


def _tune_space(space: dict[str, tuple[str, list]]) -> dict[str, Any]:
    from ray import tune

    make = {"uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
            "randint": lambda a: tune.randint(a[0], a[1] + 1), "choice": tune.choice}
    return {key: make[kind](args) for key, (kind, args) in space.items()}


def bundles(cfg: ExperimentConfig) -> list[dict[str, float]]:
    """The trial's placement group: the trial driver, then one bundle per Ray evaluation actor."""
    from es_l2l.outer.shell import loop_of

    loop = loop_of(cfg)
    cuda = cfg.run.device == "cuda"
    driver = {"CPU": 1.0}
    if cuda and (loop.driver_gpu or cfg.run.workers == 0 or not loop.uses_evaluator):
        driver["GPU"] = 1.0
    actors = cfg.run.workers if loop.uses_evaluator else 0
    actor = {"CPU": cfg.run.cpus_per_worker, **({"GPU": cfg.run.gpus_per_worker} if cuda else {})}
    return [driver] + [dict(actor) for _ in range(actors)]


def run_trial(values: dict, *, tree: dict, parent_id: str) -> None:
    """One trial (a Ray Tune function trainable): an ordinary es-l2l run with the sampled values."""
    from ray import tune

    from es_l2l.experiment import run_experiment
    from es_l2l.families import family_of

    trial_id = tune.get_context().get_trial_id() or "trial"
    base = build_config(tree)
    cfg = with_values(base, {**values, "tracking.run_name": f"{base.name} trial {trial_id}"})  # numbered when all are done
    key = family_of(cfg.task).objective.key
    rounds = 0

    def report(status: dict) -> None:  # every validation round after generation 0 (which all trials share)
        nonlocal rounds
        if key in status and status["generation"] > 0:
            rounds += 1
            tune.report({"validation_round": rounds, key: float(status[key]), f"best_{key}": float(status[f"best_{key}"]),
                         "generation": int(status["generation"]), "neuron_steps": int(status["neuron_steps"]),
                         "elapsed_s": float(status["elapsed_s"])})

    tags = {"mlflow.parentRunId": parent_id, "es_l2l.tune": "trial", "es_l2l.tune.trial": trial_id}
    out = run_experiment(cfg, Console(quiet=True), tags=tags, subscribers=[report])
    last = out.result.history[-1]
    tune.report({"validation_round": rounds, key: float(last.get(key, math.nan)), f"best_{key}": float(last[f"best_{key}"]),
                 "generation": int(last["generation"]), "neuron_steps": int(last["neuron_steps"]),
                 "elapsed_s": float(last["elapsed_s"]), "test_score": float(out.report.score), "finished": 1})


TRIAL_COLUMNS_HEAD = [("name", "trial"), ("outer", "status")]
TRIAL_COLUMNS_TAIL = [("best_val", "best val"), ("rounds", "val rounds"), ("generation", "generations"),
                      ("neuron_steps", "neuron-steps"), ("test_score", "test"), ("run_id", "MLflow run"),
                      ("error", "error")]


def tune(plan: TunePlan, console: Console) -> int:
    """Run the plan's trials on Ray Tune under one MLflow parent run; write the best config out."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    # Tune's own Ctrl-C handler ends the search "gracefully" and returns the trials so far as if it
    # had finished (exit 0, a best config from a partial search): let Ctrl-C raise instead
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    from mlflow.entities import Param
    from ray import tune as rtune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from es_l2l.cluster.evaluators import init_ray
    from es_l2l.experiment import quiet_libraries
    from es_l2l.families import family_of
    from es_l2l.tracking.preflight import probe_tracking, tracking_uri
    from es_l2l.tracking.end_state import final_state
    from es_l2l.tracking.run import MlflowRun, ui_command

    cfg = plan.trial
    objective = family_of(cfg.task).objective
    metric, mode = f"best_{objective.key}", "max" if objective.maximize else "min"
    need = bundles(cfg)
    probe_tracking(tracking_uri(cfg))  # a dead, silent or foreign server: one line (PreflightError) before Ray starts
    init_ray(cfg, min_cpus=sum(b.get("CPU", 0) for b in need))
    parent = MlflowRun(cfg, run_name=f"tune {cfg.name}", tags={"es_l2l.tune": "parent", "es_l2l.budget": plan.budget_text},
                       log_config=False)
    with final_state(parent), stopping_trials(parent):  # Ctrl-C, SIGTERM: KILLED (trials too), no best config; an error: FAILED
        quiet_libraries()
        params = {"config": str(plan.config_path), "budget_kind": plan.budget[0], "budget": str(plan.budget[1]),
                  "trials": str(plan.trials), "searcher": plan.searcher, "scheduler": plan.scheduler or "none",
                  "grace_period": str(plan.grace_period), "reduction_factor": str(plan.reduction_factor),
                  "objective": f"{metric} ({mode})", "space": json.dumps({k: {kind: a} for k, (kind, a) in plan.space.items()})[:6000]}
        parent.client.log_batch(parent.run_id, params=[Param(k, v) for k, v in params.items()])
        parent.log_text(plan.source.read_text(), "tune.yaml")
        parent.log_text(plan.base.to_yaml(), f"{plan.config_path.stem}.yaml")
        console.print(f"[bold]es-l2l tune[/] {cfg.name}: {plan.trials} trial(s) of {plan.budget_text} each, {plan.searcher} search"
                      f"{', ASHA' if plan.scheduler else ''} on {metric} ({mode})\nMLflow parent run {parent.run_id}")

        start = {k: _plain(v) for k, v in plan.base.flat().items() if k in plan.space}
        points = [start] if plan.include_config and all(_in_space(start[k], *plan.space[k]) for k in plan.space) else None
        searcher = usable_searcher(plan.searcher, console)
        parent.set_tags({"es_l2l.tune.searcher": searcher})
        search = search_algorithm(searcher, plan, metric, mode, points)
        scheduler = (ASHAScheduler(time_attr="validation_round", max_t=10**6, grace_period=plan.grace_period,
                                   reduction_factor=plan.reduction_factor) if plan.scheduler else FIFOScheduler())
        trainable = rtune.with_resources(
            rtune.with_parameters(run_trial, tree=cfg.model_dump(), parent_id=parent.run_id),
            rtune.PlacementGroupFactory(need),
        )
        say = _Say(plan, metric, objective)
        with tempfile.TemporaryDirectory(prefix="es-l2l-tune-") as storage:
            tuner = rtune.Tuner(
                trainable,
                param_space=_tune_space(plan.space),
                tune_config=rtune.TuneConfig(metric=metric, mode=mode, search_alg=search, scheduler=scheduler,
                                             num_samples=plan.trials, max_concurrent_trials=plan.concurrent_trials,
                                             reuse_actors=True),
                run_config=rtune.RunConfig(name="es-l2l-tune", storage_path=storage, verbose=0, callbacks=[say.callback()]),
            )
            grid = tuner.fit()
            results = [(r.metrics or {}, r.config or {}, r.error) for r in grid]  # in the order Tune made the trials
        rows = _trial_rows(plan, parent, results, metric)
        done = [r for r in rows if r["best_val"] == r["best_val"]]
        columns = TRIAL_COLUMNS_HEAD + [(k, k) for k in plan.space] + TRIAL_COLUMNS_TAIL
        parent.log_text(markdown_table(rows, columns), "trials.md")
        parent.log_text(csv_table(rows, columns), "trials.csv")
        console.print(rich_table(rows, f"{len(rows)} trial(s), {plan.budget_text} each ({metric}, {mode})", columns,
                                 tuple(k for k, _ in columns if k not in ("run_id", "neuron_steps", "error"))))
        if not done:
            raise TuneError("no trial reached a validation round: " + "; ".join(f"{r['name']}: {r['error']}" for r in rows if r.get("error"))[:2000])
        best = (max if objective.maximize else min)(done, key=lambda r: r["best_val"])
        values = {k: best[k] for k in plan.space}
        best_cfg = with_values(plan.base, values)
        parent.client.log_batch(parent.run_id, params=[Param(f"best.{k}", str(v)) for k, v in values.items()])
        parent.log_metrics({comparison_key("best_trial", metric): best["best_val"],
                            **({withheld("best_trial", "score"): best["test_score"]} if best["test_score"] != "" else {})})
        parent.set_tags({"best_run_id": best["run_id"] or "", "best_trial": best["name"]})
        text = (f"# es-l2l tune: the best of {len(rows)} trial(s) of {plan.source} ({plan.budget_text} each): {best['name']}, "
                f"{metric} {objective.fmt(best['best_val'])}\n# MLflow parent run {parent.run_id}, trial run {best['run_id']}; "
                f"tuned: {', '.join(f'{k}={v}' for k, v in values.items())}\n" + best_cfg.to_yaml())
        parent.log_text(text, plan.out.name)
        plan.out.parent.mkdir(parents=True, exist_ok=True)
        partial = plan.out.with_name(plan.out.name + ".partial")
        partial.write_text(text)
        partial.replace(plan.out)  # whole or not at all: an interrupt never leaves half a best config
    parent.end("FINISHED")
    console.print(f"best: {best['name']} ({metric} {objective.fmt(best['best_val'])}): "
                  + ", ".join(f"{k}={v}" for k, v in values.items()))
    console.print(f"best config: {plan.out}  (run it: es-l2l run {plan.out})")
    console.print(f"MLflow parent run id: {parent.run_id}\nbrowse it:            {ui_command(parent.uri)}")
    return 0


@contextmanager
def stopping_trials(parent):
    """On Ctrl-C or SIGTERM: stop Ray first (the trials die with it, so none ends later as FINISHED), then
    mark every trial run still RUNNING KILLED; the interrupt goes on (the parent is marked by final_state)."""
    try:
        yield
    except KeyboardInterrupt as exc:
        import sys

        from es_l2l.tracking.end_state import _safely, terminated

        if "ray" in sys.modules:
            import ray

            _safely("stop Ray", ray.shutdown)
        how = "SIGTERM" if terminated(exc) else "SIGINT"

        def mark() -> None:
            running = parent.client.search_runs([parent.experiment_id], filter_string=(
                f"tags.mlflow.parentRunId = '{parent.run_id}' and attributes.status = 'RUNNING'"))
            for run in running:
                parent.client.set_tag(run.info.run_id, "stopped_by", how)
                parent.client.set_terminated(run.info.run_id, "KILLED")

        _safely("mark the trial runs KILLED", mark)
        raise


def _trial_rows(plan: TunePlan, parent, results: list[tuple[dict, dict, Any]], metric: str) -> list[dict[str, Any]]:
    """One row per trial, joined to its MLflow child run; runs Tune stopped early are marked KILLED."""
    runs = parent.client.search_runs([parent.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'")
    by_trial = {r.data.tags.get("es_l2l.tune.trial"): r for r in runs}
    rows = []
    for number, (metrics, config, error) in enumerate(results, 1):
        trial_id = metrics.get("trial_id") or ""
        run = by_trial.get(trial_id)
        if run is not None:
            parent.client.set_tag(run.info.run_id, "mlflow.runName", f"{parent_name(run)} trial {number}")
        if error is not None:
            status = "failed"
        elif metrics.get("finished"):
            status = "finished"
        else:
            status = f"stopped at round {metrics.get('validation_round', 0)}"
        if run is not None and status.startswith("stopped"):
            if run.info.status == "RUNNING":
                parent.client.set_terminated(run.info.run_id, "KILLED")
            parent.client.set_tag(run.info.run_id, "es_l2l.tune.stopped", f"ASHA after validation round {metrics.get('validation_round')}")
        rows.append({
            "name": f"trial {number}", "outer": status,
            **{k: _plain(config.get(k)) for k in plan.space},
            "best_val": float(metrics.get(metric, math.nan)), "rounds": int(metrics.get("validation_round", 0)),
            "generation": int(metrics.get("generation", 0)), "neuron_steps": int(metrics.get("neuron_steps", 0)),
            "test_score": float(metrics["test_score"]) if "test_score" in metrics else "", "run_id": run.info.run_id if run else "",
            "error": str(error).strip().splitlines()[-1][:300] if error is not None else "",
        })
    return rows


def parent_name(run) -> str:
    """The config name of a trial run (its run name without the trial part)."""
    return run.data.params.get("name") or run.data.tags.get("mlflow.runName", "").split(" trial ")[0]


class _Say:
    """One line per trial as it ends (a Tune callback, in this process; Tune pickles it, so no console held)."""

    def __init__(self, plan: TunePlan, metric: str, objective):
        self.space, self.trials, self.metric, self.objective = list(plan.space), plan.trials, metric, objective

    def line(self, trial, how: str) -> None:
        values = ", ".join(f"{k}={_fmt(trial.config.get(k))}" for k in self.space)
        last = trial.last_result or {}
        val = f"{self.metric} {self.objective.fmt(last[self.metric])}" if self.metric in last else "no validation"
        print(f"trial {self.number(trial)}/{self.trials} {how}: {values}: {val}", flush=True)

    def number(self, trial) -> int:
        self.order = getattr(self, "order", {})
        return self.order.setdefault(trial.trial_id, len(self.order) + 1)

    def callback(self):
        from ray.tune import Callback

        say = self

        class _Callback(Callback):
            def on_trial_start(self, iteration, trials, trial, **info):
                say.number(trial)

            def on_trial_complete(self, iteration, trials, trial, **info):
                last = trial.last_result or {}
                say.line(trial, "finished" if last.get("finished") else f"stopped early at round {last.get('validation_round')}")

            def on_trial_error(self, iteration, trials, trial, **info):
                say.line(trial, "failed")

        return _Callback()


def _fmt(value: Any) -> str:
    value = _plain(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def usable_searcher(searcher: str, console: Console) -> str:
    """``optuna`` where it is installed, else ``random`` (with a warning)."""
    if searcher == "optuna":
        try:
            import optuna  # noqa: F401
        except ImportError:
            console.print("[yellow]warning:[/] optuna is not installed (pip install optuna); searching at random instead")
            return "random"
    return searcher


def search_algorithm(searcher: str, plan, metric: str, mode: str, points):
    """Tune's search algorithm for ``searcher``, limited to ``plan.concurrent_trials`` trials at once.

    Tune applies ``max_concurrent_trials`` to a ``Searcher`` (Optuna's) by wrapping it, but ignores it,
    with only a log warning, for a ``BasicVariantGenerator`` handed in as ``search_alg``: the random
    search must carry the limit itself, or its trials run as many at once as Ray has CPUs.
    """
    if searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return OptunaSearch(metric=metric, mode=mode, points_to_evaluate=points, seed=plan.seed)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(points_to_evaluate=points, random_state=plan.seed, max_concurrent=plan.concurrent_trials)
