"""The maze family through the real ``es-l2l`` command: ES and A2C runs, artifacts, evaluate, bad input."""

from pathlib import Path

import pytest

from es_l2l.tracking.checkpoint import load_checkpoint
from es_l2l.context import RunContext
from es_l2l.families.maze.report import LSNN_TRAINED, maze_report
from tests.test_cli import es_l2l, runs_in, store

ROOT = Path(__file__).resolve().parents[3]
PICTURES = {"trajectories.png", "reward_curve.png", "spike_raster.png"}


# A2C: run by .ci/run; A2C improves the reward in the default run (tests/families/maze/test_outer.py)
@pytest.mark.parametrize("config, outer", [("smoke_maze.yaml", "es"), pytest.param("smoke_maze_a2c.yaml", "bptt", marks=pytest.mark.slow)])
def test_maze_run_logs_report_pictures_and_reloads(tmp_path, config, outer):
    proc = es_l2l(tmp_path, "run", str(ROOT / "configs" / config), *store(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    client, (run,) = runs_in(tmp_path)
    assert run.info.status == "FINISHED" and run.data.tags["es_l2l.outer"] == outer
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/reward")] == [0, 2, 4]
    curriculum = client.get_metric_history(run.info.run_id, "train/search_curriculum")
    assert [(m.step, m.value) for m in sorted(curriculum, key=lambda m: m.step)] == [(1, 1.0), (2, 1.0), (3, 0.0), (4, 0.0)]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert PICTURES | {"maze_report.md", "checkpoint.pt", "config.yaml"} <= names
    for agent in ("model", "untrained", "random", "explorer", "oracle"):
        assert f"withheld/{agent}/reward" in run.data.metrics, agent
    m = run.data.metrics
    assert m["withheld/random/reward"] < m["withheld/explorer/reward"] <= m["withheld/oracle/reward"]
    assert m["withheld/halfway_random_explorer/reward"] == pytest.approx((m["withheld/random/reward"] + m["withheld/explorer/reward"]) / 2)
    assert all(k.split("/")[0] in ("train", "val", "withheld", "system") for k in m), sorted(m)
    assert run.data.tags["exploits"] in ("true", "false") and "halfway" in run.data.tags["verdict"]
    assert "explorer" in proc.stdout and "validation reward per episode" in proc.stdout
    for png in PICTURES:
        assert Path(client.download_artifacts(run.info.run_id, png, str(tmp_path))).read_bytes()[:4] == b"\x89PNG"
    # The checkpoint reproduces the logged test reward, through the API and through `es-l2l evaluate`.
    path = client.download_artifacts(run.info.run_id, "checkpoint.pt", str(tmp_path))
    cfg, genome, genomes, _ = load_checkpoint(path)
    report = maze_report(cfg.task, RunContext.of(cfg), genome, genomes["initial"], genomes["best"])
    assert report.metrics[LSNN_TRAINED]["reward"] == pytest.approx(m["withheld/model/reward"], rel=1e-6)
    other = "greedy" if cfg.task.policy == "sample" else "sample"  # the other action rule is reported too
    assert report.alt["policy"] == other and report.alt["reward"] == pytest.approx(m[f"withheld/model/reward_{other}"], rel=1e-6)
    assert f"with {other} actions (instead of {cfg.task.policy})" in proc.stdout
    ev = es_l2l(tmp_path, "evaluate", path)
    assert ev.returncode == 0 and "oracle" in ev.stdout and "halfway" in ev.stdout


def test_unknown_task_family_is_one_sentence_and_no_run(tmp_path):
    proc = es_l2l(tmp_path, "run", str(ROOT / "configs" / "smoke_maze.yaml"), *store(tmp_path), "--set", "task.family=mase", timeout=60)
    assert proc.returncode == 2
    assert "unknown task family 'mase'; allowed: teacher, maze" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow  # run by .ci/run; compare stays in the default run (tests/test_compare.py), the maze through the CLI too
def test_compare_es_against_a2c_on_mazes(tmp_path):
    proc = es_l2l(tmp_path, "compare", str(ROOT / "configs" / "compare_maze_smoke.yaml"), *store(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    client, runs = runs_in(tmp_path)
    (parent,) = [r for r in runs if r.data.tags.get("es_l2l.compare") == "parent"]
    children = [r for r in runs if r.data.tags.get("es_l2l.compare") == "child"]
    assert sorted(r.data.tags["es_l2l.outer"] for r in children) == ["bptt", "es"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.png", "comparison.md", "comparison.csv"} <= names
    for key in ("withheld/maze-es-smoke/reward", "withheld/maze-a2c-smoke/reward", "val/maze-es-smoke/best_reward",
                "train/maze-a2c-smoke/elapsed_s", "withheld/baseline/explorer/reward", "withheld/baseline/untrained/reward", "val/target"):
        assert key in parent.data.metrics, key
    md = Path(client.download_artifacts(parent.info.run_id, "comparison.md", str(tmp_path))).read_text()
    assert "explorer" in md and "Reached halfway from random to explorer" in md
    assert parent.data.tags["winner"] in ("maze-es-smoke", "maze-a2c-smoke")


def test_report_gives_the_other_action_rule_and_compare_prints_the_terms(tmp_path):
    from es_l2l.compare import resolve_plan, terms_of

    lines = terms_of(resolve_plan([str(ROOT / "configs" / "compare_maze.yaml")], [], None, None, None))
    assert "same cores: 2 CPU(s) (Ray workers)" in lines and "same network: 32+32 neurons, mirror-tied" in lines
    assert "same changed blocks: w_in,w_rec,w_out,b_out,tau_m,tau_a,b0,beta" in lines  # A2C trains what ES searches
    assert any(line.startswith("outer loop differ: maze-es: es (searches w_in") and "maze-a2c: bptt (trains w_in" in line
               for line in lines)
