"""``es-l2l compare``: several outer loops on the same budget, as child runs of one MLflow parent.

Every child is an ordinary run (``run_experiment``) whose budget is the same number of training
seconds or simulated neuron-steps; children run one after another so that each has the whole
machine. All children share the task family, the seed and so the validation and test tasks; the
parent gets what the family's comparison summary makes of them (learning curves in one plot, a
table of final and best validation and test values, time and compute to a target, the baselines
on the same held-out tasks, a verdict).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from es_l2l.config import ConfigError, ExperimentConfig, build_config, load_config, read_yaml
from es_l2l.tracking.metric_keys import key_name, withheld
from es_l2l.models import get_model
from es_l2l.schema import BLOCKS
from es_l2l.reporting.stats import paired_t_interval, paired_verdict, t_interval
from es_l2l.reporting.tables import csv_table, markdown_table, rich_table


class CompareError(RuntimeError):
    """A comparison could not finish every child; the message says which and why."""


@dataclass
class Plan:
    configs: list[ExperimentConfig]
    budget: tuple[str, float]  # ("seconds" | "neuron_steps", amount)
    target: float | None = None  # in the family objective's units (default: the worst child's best)
    seeds: list[int] = field(default_factory=list)  # run every arm with each (empty: the configs' own seed)
    sources: list[str] = field(default_factory=list)

    @property
    def budget_text(self) -> str:
        kind, amount = self.budget
        return f"{amount:g} s of training" if kind == "seconds" else f"{amount:.3g} neuron-steps"


def resolve_plan(
    paths: list[str],
    overrides: list[str],
    budget_seconds: float | None,
    budget_neuron_steps: float | None,
    target: float | None,
    seeds: list[int] | None = None,
) -> Plan:
    """Experiment configs with the budget applied, checked to be comparable (ConfigError otherwise).

    Compared configs must share the task family (all but its ``training_only`` fields: the training
    batch per step, and e.g. a gradient loss's own weights, which are tuned per outer loop), the
    seed and the number of held-out tasks, so that they meet the same validation and test
    episodes, and the tracking store.
    """
    from es_l2l.plan_files import Budget, read_compare_file

    sources, overrides = [Path(p) for p in paths], list(overrides)
    budget_of: Budget = Budget()
    if len(sources) == 1 and "configs" in (tree := read_yaml(sources[0], "a comparison file from configs/")):
        file = read_compare_file(sources[0], tree)  # typed: one line naming the key (es_l2l.plan_files)
        sources = [sources[0].parent / p for p in file.configs]
        budget_of = file
        target = target if target is not None else file.target
        seeds = seeds if seeds else file.seeds
        overrides = list(file.set) + overrides
    budget = budget_of.resolve(budget_seconds, budget_neuron_steps, "compare")
    if len(sources) < 1:
        raise ConfigError("compare needs at least one experiment config")
    configs = [apply_budget(load_config(src, overrides), budget) for src in sources]
    first = configs[0]
    for src, cfg in zip(sources, configs):
        for what, mine, theirs in (
            ("task", held_out_view(cfg.task), held_out_view(first.task)),
            ("run.seed", cfg.run.seed, first.run.seed),
            ("run.validation_tasks", cfg.run.validation_tasks, first.run.validation_tasks),
            ("tracking.uri", cfg.tracking.uri, first.tracking.uri),
            ("tracking.experiment", cfg.tracking.experiment, first.tracking.experiment),
        ):
            if mine != theirs:
                raise ConfigError(f"'{src}' differs from '{sources[0]}' in {what}; compared runs must share it so they meet the same held-out tasks")
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"two configs share the name '{max(set(names), key=names.count)}'; give each compared config its own name")
    seeds = [int(s) for s in seeds or []]
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds must be distinct non-negative integers, got {seeds}")
    if seeds:  # the first seed's runs are the ones the family's table and plots show
        configs = [build_config(c.model_dump(), [f"run.seed={seeds[0]}"]) for c in configs]
    return Plan(configs, budget, target, sources=[str(s) for s in sources], seeds=seeds)


def held_out_view(task):
    """A task section without its training-only fields: what decides the validation and test tasks."""
    return task.model_copy(update={key: None for key in type(task).training_only})


def apply_budget(cfg: ExperimentConfig, budget: tuple[str, float]) -> ExperimentConfig:
    """``cfg`` stopped by the budget alone: ("seconds" | "neuron_steps", amount), generations unbounded."""
    limit = [f"run.max_seconds={budget[1]}", "run.max_neuron_steps=null"] if budget[0] == "seconds" else [
        f"run.max_neuron_steps={int(budget[1])}", "run.max_seconds=null"
    ]
    return build_config(cfg.model_dump(), ["run.generations=1000000000", *limit])


@dataclass
class Child:
    name: str
    outer: str
    run_id: str | None
    outcome: Any = None  # experiment.Outcome
    error: str | None = None
    seed: int | None = None


def compare(plan: Plan, console: Console) -> int:
    """Run every child under the plan's budget, then log the comparison to the parent run."""
    from es_l2l.cluster.evaluators import ClusterError
    from es_l2l.experiment import RunFailed, quiet_libraries, run_experiment
    from es_l2l.families import family_of
    from es_l2l.tracking.preflight import probe_tracking, tracking_uri
    from es_l2l.tracking.end_state import final_state
    from es_l2l.tracking.redact import safe_yaml
    from es_l2l.reporting.comparison import log_comparison, print_comparison
    from es_l2l.reporting.comparison import comparison_markdown
    from es_l2l.tracking.run import MlflowRun, ui_command

    first = plan.configs[0]
    names = [c.name for c in plan.configs]
    probe_tracking(tracking_uri(first))  # a dead, silent or foreign server: one line (PreflightError) before the parent run
    parent = MlflowRun(
        first,
        run_name="compare " + " vs ".join(names),
        tags={"es_l2l.compare": "parent", "es_l2l.budget": plan.budget_text},
        log_config=False,
    )
    with final_state(parent):  # any error: FAILED with one line; Ctrl-C, SIGTERM: KILLED
        quiet_libraries()
        console.print(f"[bold]es-l2l compare[/] {' vs '.join(names)} at {plan.budget_text} each; MLflow parent run {parent.run_id}")
        terms = terms_of(plan)
        for line in terms:
            console.print(f"  terms: {line}")
        parent.log_text("\n".join(terms) + "\n", "terms.txt")
        from mlflow.entities import Param

        params = [Param("budget_kind", plan.budget[0]), Param("budget", str(plan.budget[1])), Param("children", ",".join(names))]
        parent.client.log_batch(parent.run_id, params=params)
        for cfg, file in zip(plan.configs, file_names(names, ".yaml")):  # never a path built from a name as given
            parent.log_text(safe_yaml(cfg), file)  # tracking.uri without credentials
        children: list[Child] = []
        seeds = plan.seeds or [first.run.seed]
        runs = [(seed, cfg if seed == cfg.run.seed else build_config(cfg.model_dump(), [f"run.seed={seed}"]))
                for seed in seeds for cfg in plan.configs]
        for seed, cfg in runs:
            child = Child(cfg.name, cfg.outer, None, seed=seed)
            tags = {"mlflow.parentRunId": parent.run_id, "es_l2l.compare": "child", "es_l2l.seed": str(seed)}
            try:
                child.outcome = run_experiment(cfg, console, tags=tags)
                child.run_id = child.outcome.run_id
            except (ClusterError, RunFailed) as exc:
                child.error, child.run_id = str(exc), getattr(exc, "run_id", None)
                console.print(f"[red]{cfg.name} failed:[/] {exc}")
            children.append(child)
        done = [c for c in children if c.outcome is not None]
        if not done:
            raise CompareError("no compared run finished: " + "; ".join(f"{c.name}: {c.error}" for c in children))
        family = family_of(first.task)
        shown = [c for c in children if c.seed == seeds[0]]
        summary = family.summarise_comparison(plan, shown)
        log_comparison(parent, summary)
        seed_rows, seed_text = seed_summary(plan, children, family.objective) if len(seeds) > 1 else ([], "")
        seeds_md = markdown_table(seed_rows, SEED_COLUMNS) + "\n" + seed_text + "\n" if seed_rows else ""
        if seed_rows:
            parent.log_text(seeds_md, "seeds.md")
            parent.log_text(csv_table(seed_rows, SEED_COLUMNS), "seeds.csv")
            parent.log_metrics({withheld(key_name(r["name"]), f"seed_{k}"): r[k] for r in seed_rows for k in ("mean", "ci_low", "ci_high") if r[k] == r[k]})
            parent.set_tags({"verdict_seeds": seed_text[:5000]})
        held_out_md = comparison_markdown(summary)
        parent.set_tags({"mlflow.note.content": description(plan, seeds, terms, held_out_md, seeds_md)})
    failed = [c for c in children if c.error]
    parent.end("FAILED" if failed else "FINISHED")
    print_comparison(console, summary)
    if seed_rows:
        console.print(rich_table(seed_rows, f"test {family.objective.label.removeprefix('val ')} over seeds {seeds} (95% CI)",
                                 SEED_COLUMNS, tuple(k for k, _ in SEED_COLUMNS)))
        console.print(seed_text)
    console.print(f"MLflow parent run id: {parent.run_id}\nbrowse it:            {ui_command(parent.uri)}")
    if failed:
        raise CompareError("; ".join(f"{c.name} failed: {c.error}" for c in failed) + f" (the other runs and the parent run {parent.run_id} are logged)")
    return 0


def file_names(names: list[str], suffix: str) -> list[str]:
    """A safe, distinct file name per config name: the name itself when it is a plain file name
    (letters, digits, ``.``, ``_``, ``-``), else a slug of it; never a path (``/``, ``..``)."""
    import re

    out: list[str] = []
    for i, name in enumerate(names):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:100] or f"config{i + 1}"
        if slug in out or slug + suffix in out:
            slug = f"{slug}-{i + 1}"
        out.append(slug + suffix)
    return out


def description(plan: Plan, seeds: list[int], terms: list[str], held_out_md: str, seeds_md: str) -> str:
    """The parent run's page text (``mlflow.note.content``, markdown): the terms, the held-out table
    and verdict of the first seed, and with several seeds the intervals and verdict (``seeds.md``)."""
    lines = [f"**compare {' vs '.join(c.name for c in plan.configs)}, {plan.budget_text} each**", "",
             *(f"- {t}" for t in terms), "", f"Held-out results, seed {seeds[0]}:", "", held_out_md]
    if seeds_md:
        lines += [f"Over seeds {seeds} (95% CI):", "", seeds_md]
    return "\n".join(lines)[:50000]


SEED_COLUMNS = [("name", "arm"), ("outer", "outer loop / pair"), ("n", "seeds"), ("mean", "mean"), ("ci_low", "95% CI low"),
                ("ci_high", "95% CI high"), ("verdict", "verdict")]


def seed_summary(plan: Plan, children: list[Child], objective) -> tuple[list[dict[str, Any]], str]:
    """Per arm: mean test score and its 95% CI over seeds; per pair of arms: the paired difference
    (same seed, same held-out tasks) and its CI; a winner only where that CI excludes zero."""
    scores: dict[str, dict[int, float]] = {}
    outers = {c.name: c.outer for c in plan.configs}
    for c in children:
        if c.outcome is not None:
            scores.setdefault(c.name, {})[c.seed] = c.outcome.report.score
    rows, sentences = [], []
    for name, by_seed in scores.items():
        ci = t_interval(list(by_seed.values()))
        rows.append({"name": name, "outer": outers[name], "n": ci.n, "mean": ci.mean, "ci_low": ci.low, "ci_high": ci.high, "verdict": ""})
    names = list(scores)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = sorted(set(scores[a]) & set(scores[b]))
            diff = paired_t_interval([scores[a][s] for s in common], [scores[b][s] for s in common])
            text = paired_verdict(a, b, diff, objective.maximize)
            sentences.append(f"{text} (paired difference {diff.mean:+.4g}, 95% CI [{diff.low:.4g}, {diff.high:.4g}], {diff.n} seeds)")
            rows.append({"name": f"{a} - {b}", "outer": "paired", "n": diff.n, "mean": diff.mean, "ci_low": diff.low,
                         "ci_high": diff.high, "verdict": text.split(": ", 1)[1]})
    way = "higher" if objective.maximize else "lower"
    head = f"Over seeds {plan.seeds} ({plan.budget_text} each, {way} test {objective.label.removeprefix('val ')} is better): "
    return rows, head + "; ".join(sentences) + "."


def _cores(cfg: ExperimentConfig) -> str:
    """The CPUs an arm trains on: its evaluation workers', else the driver's threads."""
    from es_l2l.outer.shell import loop_of

    if loop_of(cfg).uses_evaluator and cfg.run.workers:
        return f"{cfg.run.workers * cfg.run.cpus_per_worker:g} CPU(s) (Ray workers)"
    return f"{cfg.run.threads or torch_threads()} CPU(s) (driver threads)"


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def terms_of(plan: Plan) -> list[str]:
    """The terms each arm runs on, where they differ: cores, weight tying, what the loop may change,
    and the outer loop; a line per facet (printed and logged as the parent's terms.txt)."""
    from es_l2l.outer.shell import loop_of

    def searched_trained(cfg: ExperimentConfig) -> tuple[list[str], list[str]]:
        """The blocks the arm searches without gradients and those it trains by gradient (its outer loop's)."""
        return cfg.changed_blocks()

    def blocks(cfg: ExperimentConfig) -> list[str]:
        changed = {b for part in searched_trained(cfg) for b in part}
        return [b for b in BLOCKS if b in changed]

    def how(cfg: ExperimentConfig) -> str:
        return ", ".join(f"{verb} {','.join(part)}" for verb, part in zip(("searches", "trains"), searched_trained(cfg)) if part)

    facets = {
        "cores": _cores,
        "network": lambda c: get_model(c.model.kind).size(c.model) + (", mirror-tied" if c.genome.mirror else ""),
        "changed blocks": lambda c: ",".join(blocks(c)),
        "outer loop": lambda c: f"{loop_of(c).name} ({how(c)})",
    }
    lines = []
    for facet, fn in facets.items():
        values = {c.name: fn(c) for c in plan.configs}
        if len({v.split(" (")[0] for v in values.values()}) > 1:
            lines.append(f"{facet} differ: " + "; ".join(f"{k}: {v}" for k, v in values.items()))
        else:
            lines.append(f"same {facet}: {next(iter(values.values()))}")
    return lines
