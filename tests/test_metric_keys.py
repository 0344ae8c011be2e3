"""Metric keys grouped by prefix (train/, val/, withheld/<predictor>/, system/): the mapping, its table in
docs/tracking.md, readers of old stores, and a resumed run that keeps the flat names it began with."""

import re
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from es_l2l.config import load_config
from es_l2l.tracking.metric_keys import (
    GROUPS,
    HELD_OUT,
    comparison_key,
    grouped,
    history,
    old_name,
    pick,
    predictor,
    refuse_old,
    renamed,
    report_key,
    status_key,
)
from es_l2l.tracking.run import MlflowRun

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


@pytest.mark.parametrize("key, expected", [
    ("fitness_mean", "train/fitness_mean"), ("train_mse_mean", "train/mse_mean"), ("elapsed_s", "train/elapsed_s"),
    ("neuron_steps", "train/neuron_steps"), ("seconds_per_generation", "train/seconds_per_generation"),
    ("active_w_rec", "train/active_w_rec"), ("bptt_train_mse", "train/bptt_train_mse"), ("lr", "train/lr"),
    ("val_mse_late", "val/mse_late"), ("val_accuracy", "val/accuracy"), ("val_rate_hz", "val/rate_hz"),
    ("best_val_recall_error", "val/best_recall_error"), ("best_generation", "val/best_generation"),
])
def test_status_dict_keys_go_to_train_or_val(key, expected):
    assert status_key(key) == expected


@pytest.mark.parametrize("key, expected", [
    ("lsnn_meta_trained.test_mse_late", "withheld/model/mse_late"), ("lsnn_generation_0.test_mse", "withheld/untrained/mse"),
    ("running_mean.test_mse_late", "withheld/running_mean/mse_late"), ("minus_running_mean.hi", "withheld/model_minus_running_mean/hi"),
    ("family_within_task_share", "withheld/family/within_task_share"), ("test_accuracy", "withheld/model/accuracy"),
    ("test_accuracy_digit_7", "withheld/model/accuracy_digit_7"), ("chance.test_accuracy", "withheld/chance/accuracy"),
    ("lsnn_meta_trained.test_reward_greedy", "withheld/model/reward_greedy"),
    ("test_halfway_random_explorer", "withheld/halfway_random_explorer/reward"),
    ("last_bit_seen.test_recall_error_long", "withheld/last_bit_seen/recall_error_long"),
    ("some_statistic", "withheld/some_statistic"),  # a plugin family's extra scalar stays in the report's group
    ("withheld/already/grouped", "withheld/already/grouped"), ("val/target", "val/target"),
    ("group.frequent.lsnn_meta_trained.test_mse_late", "withheld/model/frequent_mse_late"),
    ("group.frequent_minus_fresh.target_architecture_backprop.test_mse_first5.lo",
     "withheld/target_architecture_backprop/frequent_minus_fresh_mse_first5.lo"),
    ("group.frequent.network_2.lsnn_meta_trained.test_mse_late", "withheld/model/frequent_network_2_mse_late"),
    ("group.episodes", "withheld/groups/episodes"),
    # the held-out group's keys logged before its rename (test/ sorted before train/ and val/ in the run page)
    ("test/model/mse_late", "withheld/model/mse_late"), ("test/baseline/running_mean/mse_late", "withheld/baseline/running_mean/mse_late"),
])
def test_report_keys_go_to_withheld_by_predictor(key, expected):
    assert report_key(key) == expected


def test_the_held_out_group_sorts_after_train_and_val():
    """The MLflow run page orders its chart sections by sorting the keys: the learning curves lead."""
    assert HELD_OUT == "withheld" and sorted(["train", "val", HELD_OUT]) == ["train", "val", HELD_OUT]
    keys = [status_key("fitness_mean"), status_key("val_mse_late"), report_key("running_mean.test_mse_late"),
            report_key("family_within_task_share"), report_key("group.episodes"), comparison_key("arm", "test_mse_late")]
    assert [k.split("/")[0] for k in sorted(keys)] == ["train", "val", "withheld", "withheld", "withheld", "withheld"]


def test_an_old_held_out_key_a_user_names_fails_in_one_line_naming_the_new_key(tmp_path):
    assert renamed("test/model/mse_late") == "withheld/model/mse_late" and renamed("val/mse_late") is None
    assert old_name("withheld/model/mse_late") == "test/model/mse_late" and old_name("train/lr") is None
    assert refuse_old("withheld/model/mse_late") == "withheld/model/mse_late"
    with pytest.raises(ValueError) as err:
        refuse_old("test/running_mean/mse_late", "--test")
    assert str(err.value) == ("--test 'test/running_mean/mse_late' names the old held-out group 'test/', now 'withheld/': "
                              "use 'withheld/running_mean/mse_late'")
    with pytest.raises(ValueError, match="use 'withheld/model/mse_late'"):
        pick({"test/model/mse_late": 0.3}, "test/model/mse_late")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'old.db'}")
    run_id = client.create_run(client.create_experiment("old", (tmp_path / "a").as_uri())).info.run_id
    with pytest.raises(ValueError, match="use 'withheld/model/mse_late'"):
        history(client, run_id, "test/model/mse_late")


def test_a_script_given_an_old_held_out_key_exits_2_with_one_line_and_reads_old_runs(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    script = [sys.executable, str(ROOT / "benchmarks" / "seed_table.py"), "--arm", "a", "--db"]
    proc = subprocess.run([*script, str(tmp_path / "none.db"), "--test", "test/model/recall_error"], capture_output=True, text=True, check=False,
                          timeout=120, env=env)
    assert proc.returncode == 2 and proc.stdout == "", proc
    assert proc.stderr == ("seed_table: --test 'test/model/recall_error' names the old held-out group 'test/', now 'withheld/': "
                           "use 'withheld/model/recall_error'\n")
    def finished_run(db, name, test_key, test, elapsed, neuron_steps, val, step):  # one finished run, seed 3, in its own store
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / db}")
        run_id = client.create_run(client.create_experiment(name, (tmp_path / name).as_uri()), run_name=name).info.run_id
        client.log_param(run_id, "run.seed", "3")
        client.log_batch(run_id, metrics=[Metric(test_key, test, 0, step), Metric("train/elapsed_s", elapsed, 0, step),
                                          Metric("train/neuron_steps", neuron_steps, 0, step), Metric("val/best_recall_error", val, 0, step)])
        client.set_terminated(run_id)

    # a store logged before the rename: today's key finds the run's test/... value
    finished_run("old.db", "a", "test/model/recall_error", 0.25, 9.0, 1e6, 0.3, 2)
    proc = subprocess.run([*script, str(tmp_path / "old.db")], capture_output=True, text=True, check=False, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "| a | 3 | " in proc.stdout and "| 30.0 | 25.0 |" in proc.stdout, proc.stdout
    # arms from two stores in one table (--db repeated), each run read from its own store
    finished_run("new.db", "b", "withheld/model/recall_error", 0.125, 5.0, 2e6, 0.5, 4)
    proc = subprocess.run([*script, str(tmp_path / "old.db"), "--db", str(tmp_path / "new.db"), "--arm", "b"], capture_output=True,
                          text=True, check=False, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "| a | 3 | " in proc.stdout and "| b | 3 | " in proc.stdout and "| 4 | 5 | 2e+06 | 50.0 | 12.5 |" in proc.stdout, proc.stdout


def test_no_held_out_key_is_spelled_out_in_the_package():
    """Every producer names the held-out group through metric_keys (HELD_OUT, withheld(), withheld_key()):
    no "test/..." key of the old name, and no "withheld/..." literal beside the constant."""
    found = []
    for path in sorted((ROOT / "es_l2l").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"""["'](test|withheld)/""", line) or re.search(r"""["']withheld["']""", line):
                found.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    (constant,) = found  # the one place the group is named
    assert constant.startswith('es_l2l/tracking/metric_keys.py: HELD_OUT = "withheld"'), found


def test_parent_run_keys():
    assert comparison_key("teacher-es", "test_mse_late") == "withheld/teacher-es/mse_late"
    assert comparison_key("teacher-es", "best_val_mse_late") == "val/teacher-es/best_mse_late"
    assert comparison_key("teacher-es", "final_val_reward") == "val/teacher-es/final_reward"
    assert comparison_key("teacher-es", "train_s") == "train/teacher-es/elapsed_s"
    assert comparison_key("teacher-es", "neuron_steps") == "train/teacher-es/neuron_steps"
    assert comparison_key(f"baseline/{predictor('LSNN meta-trained')}", "test_mse_late") == "withheld/baseline/model/mse_late"
    assert comparison_key(f"baseline/{predictor('online least squares')}", "test_mse_late") == "withheld/baseline/online_least_squares/mse_late"
    assert comparison_key("best_trial", "best_val_accuracy") == "val/best_trial/best_accuracy"


def _rename_table(title: str) -> list[tuple[str, str]]:
    text = (ROOT / "docs" / "tracking.md").read_text()
    section = text[text.index(title):]
    rows = []
    for line in section.splitlines()[1:]:
        if rows and not line.startswith("|"):
            break  # the end of the first table
        cells = line.split("|")[1:-1]
        if len(cells) == 2 and all("`" in c for c in cells):
            old, new = (re.search(r"`([^`]+)`", c).group(1) for c in cells)
            rows.append((old, new))
    return rows


def test_the_documented_rename_table_is_what_the_code_does():
    rows = _rename_table("### Renamed metric keys")
    assert len(rows) > 40
    for old, new in rows:
        if "<" in old or old.startswith("system/"):
            continue
        assert grouped(old) == new, (old, new)
        assert new.split("/")[0] in GROUPS


def test_readers_of_old_stores_find_a_value_under_either_name(tmp_path):
    assert pick({"val_accuracy": 0.5}, "val/accuracy") == 0.5
    assert pick({"val/accuracy": 0.7, "val_accuracy": 0.5}, "val/accuracy") == 0.7
    assert pick({"test_recall_error": 0.2}, "withheld/model/recall_error") == 0.2 and pick({}, "val/x", 1) == 1
    assert pick({"test/model/recall_error": 0.3}, "withheld/model/recall_error") == 0.3  # before the held-out group's rename
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'old.db'}")
    run_id = client.create_run(client.create_experiment("old", (tmp_path / "a").as_uri())).info.run_id
    client.log_batch(run_id, metrics=[Metric("elapsed_s", float(s), 0, s) for s in range(3)] + [Metric("test/model/mse", 0.4, 0, 2)])
    assert [m.step for m in history(client, run_id, "train/elapsed_s")] == [0, 1, 2]
    assert [(m.step, m.value) for m in history(client, run_id, "withheld/model/mse")] == [(2, 0.4)]
    assert history(client, run_id, "train/wall_s") == []


def _cfg(tmp_path):
    return load_config(SMOKE, [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"tracking.artifact_root={tmp_path / 'mlruns'}"])


def test_the_tracker_groups_status_and_report_keys_and_resumes_after_the_last_step(tmp_path, monkeypatch):
    monkeypatch.setenv("ES_L2L_SPOOL", str(tmp_path / "spool"))
    cfg = _cfg(tmp_path)
    run = MlflowRun(cfg, log_config=False)
    run({"generation": 0, "elapsed_s": 0.0, "neuron_steps": 0, "val_mse_late": 0.9, "best_val_mse_late": 0.9})
    run({"generation": 1, "elapsed_s": 1.0, "fitness_mean": -1.0, "train_mse_mean": 1.0, "genomes": {}})
    reopened = MlflowRun(cfg, run_id=run.run_id)
    assert not reopened.flat and reopened.logged_through == 1
    reopened({"generation": 1, "elapsed_s": 1.0, "fitness_mean": -5.0})  # logged already: skipped
    reopened({"generation": 2, "elapsed_s": 2.0, "fitness_mean": -0.5})
    reopened.log_metrics({"lsnn_meta_trained.test_mse_late": 0.3, "running_mean.test_mse_late": 0.4}, step=2)
    metrics = reopened.client.get_run(run.run_id).data.metrics
    assert set(metrics) == {"train/elapsed_s", "train/neuron_steps", "val/mse_late", "val/best_mse_late",
                            "train/fitness_mean", "train/mse_mean", "withheld/model/mse_late", "withheld/running_mean/mse_late"}
    assert [(m.step, m.value) for m in reopened.client.get_metric_history(run.run_id, "train/fitness_mean")] == [(1, -1.0), (2, -0.5)]


def test_a_resumed_run_whose_killed_driver_logged_the_old_held_out_keys_does_not_log_them_twice(tmp_path, monkeypatch):
    monkeypatch.setenv("ES_L2L_SPOOL", str(tmp_path / "spool"))
    cfg = _cfg(tmp_path)
    run = MlflowRun(cfg, log_config=False)
    run({"generation": 2, "elapsed_s": 2.0, "fitness_mean": -0.5})
    run.client.log_batch(run.run_id, metrics=[Metric("test/model/mse_late", 0.3, 0, 2)])  # an older driver's held-out key
    reopened = MlflowRun(cfg, run_id=run.run_id)
    reopened.log_metrics({"lsnn_meta_trained.test_mse_late": 0.3, "running_mean.test_mse_late": 0.4}, step=2)
    metrics = reopened.client.get_run(run.run_id).data.metrics
    assert {k for k in metrics if k.startswith(("test/", "withheld/"))} == {"test/model/mse_late", "withheld/running_mean/mse_late"}


def test_a_resumed_run_begun_under_the_flat_names_keeps_them(tmp_path, monkeypatch):
    monkeypatch.setenv("ES_L2L_SPOOL", str(tmp_path / "spool"))
    cfg = _cfg(tmp_path)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    run_id = client.create_run(client.create_experiment("es-l2l", (tmp_path / "mlruns").as_uri())).info.run_id
    client.log_batch(run_id, metrics=[Metric("elapsed_s", float(s), 0, s) for s in range(4)]
                     + [Metric("fitness_mean", -1.0, 0, s) for s in range(1, 4)])
    run = MlflowRun(cfg, run_id=run_id)
    assert run.flat and run.logged_through == 3
    run({"generation": 3, "elapsed_s": 3.0, "fitness_mean": -9.0})  # logged already
    run({"generation": 4, "elapsed_s": 4.0, "fitness_mean": -0.5, "val_mse_late": 0.2})
    run.log_metrics({"lsnn_meta_trained.test_mse_late": 0.3}, step=4)
    metrics = client.get_run(run_id).data.metrics
    assert set(metrics) == {"elapsed_s", "fitness_mean", "val_mse_late", "lsnn_meta_trained.test_mse_late"}
    assert [m.step for m in client.get_metric_history(run_id, "fitness_mean")] == [1, 2, 3, 4]
