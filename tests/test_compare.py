"""``es-l2l compare`` end to end: one parent run, one child per outer loop, equal budgets, artifacts read back."""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from es_l2l.config import load_config
from es_l2l.genome import build_genome
from es_l2l.outer.driver import drive
from es_l2l.cluster.evaluators import LocalEvaluator
from es_l2l.families.teacher.tasks import n_inputs
from tests.test_cli import es_l2l, runs_in, store

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
BUDGET_S = 3.0


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    proc = es_l2l(tmp, "compare", str(CONFIGS / "compare_smoke.yaml"), "--budget-seconds", str(BUDGET_S), *store(tmp), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tmp, proc


def test_parent_run_has_one_finished_child_per_outer_loop(comparison):
    tmp, proc = comparison
    client, runs = runs_in(tmp)
    parents = [r for r in runs if r.data.tags.get("es_l2l.compare") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["es_l2l.outer"] for r in children) == ["bptt", "es", "hybrid"]
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.png", "comparison.md", "comparison.csv", "mse_per_trial.csv"} <= names
    table = Path(client.download_artifacts(parent.info.run_id, "comparison.md", str(tmp))).read_text()
    for row in ("teacher-es-smoke", "teacher-bptt-smoke", "teacher-hybrid-smoke", "family mean", "running mean",
                "online least squares", "oracle linear", "target-architecture backprop", "LSNN generation 0"):
        assert f"| {row} |" in table, row
    assert "At equal budget (3 s of training each)" in table
    for child in children:
        name = child.data.tags["mlflow.runName"]
        assert parent.data.metrics[f"withheld/{name}/mse_late"] == child.data.metrics["withheld/model/mse_late"]
        assert parent.data.metrics[f"val/{name}/best_mse_late"] == pytest.approx(min(
            m.value for m in client.get_metric_history(child.info.run_id, "val/mse_late")))
    # The baselines in the parent are those of every child: the same held-out tasks.
    for child in children:
        assert child.data.metrics["withheld/running_mean/mse_late"] == parent.data.metrics["withheld/baseline/running_mean/mse_late"]
    assert parent.info.run_id in proc.stdout and "At equal budget" in proc.stdout
    page = parent.data.tags["mlflow.note.content"]  # the run page says what happened: terms, table, verdict
    assert "- same network: 16+16 neurons" in page
    assert "| teacher-bptt-smoke |" in page and "At equal budget (3 s of training each)" in page


def test_every_child_stops_within_one_step_of_the_seconds_budget(comparison):
    tmp, _ = comparison
    client, runs = runs_in(tmp)
    for run in runs:
        if run.data.tags.get("es_l2l.compare") != "child":
            continue
        elapsed = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/elapsed_s"))
        per_step = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/seconds_per_generation")}
        last_step, last = elapsed[-1]
        assert last >= BUDGET_S  # the budget was used ...
        assert last - per_step[last_step] < BUDGET_S  # ... and the run stopped at the first step past it


@pytest.mark.parametrize("outer", ["es", "bptt", "hybrid"])
def test_neuron_step_budget_is_respected_within_one_step(outer):
    name = {"es": "smoke", "bptt": "smoke_bptt", "hybrid": "smoke_hybrid"}[outer]
    cfg = load_config(CONFIGS / f"{name}.yaml", ["run.workers=0"])
    sims = {"es": cfg.es.popsize, "bptt": 1, "hybrid": cfg.es.popsize + cfg.hybrid.bptt_steps}[outer]
    per_step = sims * cfg.task.batch_size * (cfg.model.n_lif + cfg.model.n_alif) * cfg.task.n_trials * cfg.task.trial_ms
    budget = int(3.5 * per_step)  # the fourth step crosses it
    cfg = load_config(CONFIGS / f"{name}.yaml", ["run.workers=0", "run.generations=1000", "run.validate_every=1000",
                                                 f"run.max_neuron_steps={budget}"])
    genome = build_genome(cfg, n_inputs(cfg.task))
    seen = []
    evaluator = None if outer == "bptt" else LocalEvaluator(cfg, genome)
    drive(cfg, genome, evaluator, [seen.append])
    steps = [s["neuron_steps"] for s in seen]
    assert steps[-1] >= budget > steps[-2]
    assert len(seen) == 1 + 4
    assert "val_mse_late" in seen[-1]  # the last step is validated, whatever validate_every says


def test_compare_rejects_configs_that_would_meet_different_tasks(tmp_path):
    proc = es_l2l(tmp_path, "compare", str(CONFIGS / "smoke.yaml"), str(CONFIGS / "teacher_bptt.yaml"),
                  "--budget-seconds", "1", *store(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert "differs from" in proc.stderr and "in task" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()


def test_compare_needs_a_budget(tmp_path):
    proc = es_l2l(tmp_path, "compare", str(CONFIGS / "smoke.yaml"), str(CONFIGS / "smoke_bptt.yaml"), *store(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert "compare needs a budget: pass --budget-seconds S or --budget-neuron-steps N" in proc.stderr


@pytest.mark.slow  # run by .ci/run; compare through the CLI stays in the default run (the module's comparison)
def test_compare_with_seeds_reports_intervals_and_paired_differences(tmp_path):
    proc = es_l2l(tmp_path, "compare", str(CONFIGS / "smoke.yaml"), str(CONFIGS / "smoke_bptt.yaml"), "--seeds", "0", "1",
                  "--budget-neuron-steps", "3e6", "--set", "run.workers=0", *store(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if r.data.tags.get("es_l2l.compare") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted((r.data.tags["es_l2l.seed"], r.data.params["outer"]) for r in children) == [
        ("0", "bptt"), ("0", "es"), ("1", "bptt"), ("1", "es")]
    scores = {}
    for r in children:
        scores.setdefault(r.data.params["name"], []).append(r.data.metrics["withheld/model/mse_late"])
    from es_l2l.reporting.stats import t_interval

    es = t_interval(scores["teacher-es-smoke"])
    m = parent.data.metrics
    assert m["withheld/teacher-es-smoke/seed_mean"] == pytest.approx(es.mean) and m["withheld/teacher-es-smoke/seed_ci_low"] == pytest.approx(es.low)
    assert "paired difference" in parent.data.tags["verdict_seeds"]
    page = parent.data.tags["mlflow.note.content"]
    assert "Over seeds [0, 1] (95% CI):" in page and "| teacher-es-smoke - teacher-bptt-smoke |" in page
    assert parent.data.tags["verdict_seeds"] in page
    assert "95% CI" in proc.stdout and "seeds" in proc.stdout


def test_compare_lets_arms_differ_in_training_only_task_fields_and_nothing_else(tmp_path):
    """Each arm's tuned A2C loss (task.a2c) and batch are its own; anything that decides the held-out
    mazes (here the grid's rows) must be shared."""
    from es_l2l.compare import resolve_plan
    from es_l2l.config import ConfigError

    es_arm, a2c_arm = str(CONFIGS / "smoke_maze.yaml"), tmp_path / "a2c.yaml"
    text = (CONFIGS / "smoke_maze_a2c.yaml").read_text().replace(
        "  batch_size: 8\n", "  batch_size: 4\n  a2c: {entropy_weight: 0.05, discount: 0.85}\n")
    assert "entropy_weight" in text
    a2c_arm.write_text(text)
    plan = resolve_plan([es_arm, str(a2c_arm)], [], 1.0, None, None)
    assert plan.configs[1].task.a2c.entropy_weight == 0.05 and plan.configs[0].task.a2c.entropy_weight != 0.05
    other = tmp_path / "rows.yaml"
    other.write_text(text.replace("  family: maze\n", "  family: maze\n  rows: 5\n"))
    with pytest.raises(ConfigError, match="differs from .* in task"):
        resolve_plan([es_arm, str(other)], [], 1.0, None, None)


def test_terms_name_what_differs_between_arms_and_what_is_the_same(tmp_path):
    """A2C training every block ES searches is 'same changed blocks'; the default teacher BPTT,
    which trains the weights only, differs from ES in them, and the line names each arm's blocks."""
    from es_l2l.compare import resolve_plan, terms_of

    a2c = tmp_path / "a2c.yaml"
    a2c.write_text((CONFIGS / "smoke_maze_a2c.yaml").read_text().replace(
        "bptt:\n", "bptt:\n  train: [w_in, w_rec, w_out, b_out, tau_m, tau_a, b0, beta]\n"))
    maze = terms_of(resolve_plan([str(CONFIGS / "smoke_maze.yaml"), str(a2c)], ["run.workers=0", "run.threads=1"], 1.0, None, None))
    assert "same cores: 1 CPU(s) (driver threads)" in maze
    assert "same changed blocks: w_in,w_rec,w_out,b_out,tau_m,tau_a,b0,beta" in maze
    assert any(line.startswith("outer loop differ: ") and "trains w_in" in line for line in maze)
    teacher = terms_of(resolve_plan([str(CONFIGS / "teacher_es.yaml"), str(CONFIGS / "teacher_bptt.yaml")],
                                    ["run.workers=2", "run.threads=1"], 1.0, None, None))
    line = next(t for t in teacher if t.startswith("changed blocks differ"))
    assert "teacher-es: w_in,w_rec,w_out,b_out,tau_m,tau_a,b0,beta" in line and "teacher-bptt: w_in,w_rec,w_out,b_out" in line
    assert any(t.startswith("cores differ") for t in teacher)  # 2 Ray workers against 1 driver thread


@pytest.mark.slow  # 25-50 s through real services; .ci/run runs it
def test_config_names_holding_a_path_never_become_paths_and_the_parent_ends(tmp_path):
    """A name with '/' used to crash the comparison (FileNotFoundError, parent left RUNNING); one with '../' wrote
    a file outside the artifact folder (next to the temporary folder). Names become safe file names and key parts."""
    import tempfile
    import uuid

    escaped = f"escaped-{uuid.uuid4().hex[:8]}"
    names = {"smoke.yaml": "arm/es", "smoke_bptt.yaml": f"../{escaped}"}
    paths = []
    for src, name in names.items():
        text = (CONFIGS / src).read_text().replace(f"name: {load_config(CONFIGS / src).name}", f"name: '{name}'")
        (tmp_path / src).write_text(text)
        paths.append(str(tmp_path / src))
    proc = es_l2l(tmp_path, "compare", *paths, "--budget-seconds", "2", "--set=run.workers=0", *store(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (Path(tempfile.gettempdir()) / f"{escaped}.yaml").exists()  # where '../' pointed
    client, runs = runs_in(tmp_path)
    parent = next(r for r in runs if r.data.tags.get("es_l2l.compare") == "parent")
    assert parent.info.status == "FINISHED"
    assert {r.data.params["name"] for r in runs if r.data.tags.get("es_l2l.compare") == "child"} == set(names.values())
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"arm_es.yaml", f"{escaped}.yaml"} <= files and not any("/" in f or ".." in f for f in files)
    assert "withheld/arm_es/mse_late" in parent.data.metrics and f"withheld/_{escaped}/mse_late" in parent.data.metrics
