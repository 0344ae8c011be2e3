"""Config validation: one sentence naming the key and what is allowed."""

from pathlib import Path

import pytest

from es_l2l.config import ConfigError, ExperimentConfig, build_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_default_config_equals_embedded_defaults():
    assert load_config(ROOT / "configs" / "teacher_es.yaml") == ExperimentConfig()


EXPERIMENTS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if not p.name.startswith(("compare_", "tune_")))
COMPARISONS = sorted((ROOT / "configs").glob("compare_*.yaml"))
TUNINGS = sorted((ROOT / "configs").glob("tune_*.yaml"))


def test_every_file_under_configs_goes_through_the_loader_of_its_kind():
    """Each configs/*.yaml is loaded below by the loader its content needs (run config, comparison file,
    tuning file), so no shipped file can rot unnoticed: the name's prefix must match the content."""
    import yaml

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        tree = yaml.safe_load(path.read_text())
        kind = COMPARISONS if "configs" in tree else TUNINGS if "space" in tree else EXPERIMENTS
        assert path in kind, f"{path.name}: its content is a {'comparison' if kind is COMPARISONS else 'tuning' if kind is TUNINGS else 'run'} file, its name says otherwise"
    assert len(EXPERIMENTS) + len(COMPARISONS) + len(TUNINGS) == len(list((ROOT / "configs").glob("*.yaml")))
    assert {"compare_teacher_tuned.yaml", "compare_maze_tuned.yaml"} <= {p.name for p in COMPARISONS}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    load_config(path)


@pytest.mark.parametrize("path", COMPARISONS, ids=lambda p: p.name)
def test_every_shipped_comparison_resolves_with_a_budget(path):
    from es_l2l.compare import resolve_plan

    plan = resolve_plan([str(path)], [], None, None, None)
    expected = {"maze": {"es", "bptt"}, "store_recall": {"es", "bptt"}, "smnist": {"bptt"}}.get(plan.configs[0].family, {"es", "bptt", "hybrid"})
    if path.name == "compare_teacher_variants.yaml":  # the ES variants beside the tuned teacher arms
        expected = {"es", "bptt", "hybrid", "guided"}
    assert {c.outer for c in plan.configs} == expected
    assert all(c.run.max_seconds == plan.budget[1] for c in plan.configs) and plan.budget[0] == "seconds"


@pytest.mark.parametrize("path", TUNINGS, ids=lambda p: p.name)
def test_every_shipped_tuning_file_resolves_with_its_space_and_budget(path):
    from es_l2l.tune import resolve_tune

    plan = resolve_tune(str(path), [])  # the typed file, its config and every end of its search space checked
    assert plan.trials >= 1 and plan.space and plan.budget[1] > 0
    assert all(key in plan.base.flat() for key in plan.space)


@pytest.mark.parametrize(
    "sets, pattern",
    [
        (["outer=hybrid", "hybrid.es_blocks=[tau_m, w_out]"], r"hybrid\.es_blocks and bptt\.train both list w_out; give each block to one side"),
        (["outer=bptt", "bptt.train=[w_out, tau_m]", "genome.search=[w_out]"], r"bptt\.train lists 'tau_m' but genome\.search does not"),
        (["outer=bptt", "bptt.deep_r.enabled=true", "model.p_rec=0.5"], r"bptt\.deep_r sets the connectivity itself; set model\.p_in=1 and model\.p_rec=1"),
        (["bptt.deep_r.enabled=true", "bptt.train=[w_out]"], r"bptt\.deep_r rewires 'w_rec', so bptt\.train must include it"),
        (["outer=bptt", "task.family=maze", "genome.mirror=true", "bptt.deep_r.enabled=true"],
         r"bptt\.deep_r rewires connections one by one and breaks genome\.mirror's symmetry"),
        (["genome.mirror=true"], r"genome\.mirror ties the network to a left-right mirror that the teacher family does not have"),
        (["genome.search=[w_rec]", "es.stdev_blocks={w_out: 0.3}"], r"es\.stdev_blocks lists 'w_out' but genome\.search does not"),
        (["es.algorithm=cmaes", "es.stdev_blocks={w_out: 0.3}"], r"es\.stdev_blocks needs a per-coordinate stdev"),
        (["es.stdev_blocks={w_out: 0}"], r"es\.stdev_blocks must be positive"),
        (["outer=sgd"], r"'outer': unknown outer loop 'sgd'; allowed: es, bptt, hybrid"),
        (["task.family=maze", "a2c.discount=0.5"], r"the 'a2c' section moved to 'task\.a2c'; put its keys there"),
    ],
)
def test_outer_loop_settings_are_checked(sets, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_config({}, sets)


def test_overrides_are_typed():
    cfg = build_config({}, ["es.popsize=32", "es.algorithm=snes", "genome.search=[w_out]", "run.address=ray://h:10001"])
    assert cfg.es.popsize == 32 and cfg.es.algorithm == "snes" and cfg.genome.search == ["w_out"]
    assert cfg.run.address == "ray://h:10001"


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("es.algorithm=adam", r"'es\.algorithm'.*'pgpe', 'snes', 'cem' or 'cmaes'.*got 'adam'"),
        ("es.popsize=many", r"'es\.popsize'.*valid integer.*got 'many'"),
        ("es.popsize=2", r"'es\.popsize'.*greater than or equal to 4"),
        ("es.popsize=33", r"es\.popsize must be even for pgpe"),
        ("es.popsize_typo=3", r"unknown config key 'es\.popsize_typo'; allowed keys in es: algorithm, popsize"),
        ("nonsense=3", r"unknown config key 'nonsense'; allowed keys in top level: name, outer, model"),
        ("task.readout_ms=50", r"task\.readout_ms \(50\) must be at most task\.trial_ms"),
        ("genome.search=[w_in, gills]", r"'genome\.search\.1'.*'w_in'"),
        ("popsize", r"not of the form dotted\.key=value"),
    ],
)
def test_bad_values_name_key_and_allowed(override, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        build_config({}, [override])
    assert "\n" not in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("es: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(bad)


def test_flat_params_cover_every_leaf():
    flat = ExperimentConfig().flat()
    assert flat["es.algorithm"] == "pgpe" and flat["model.n_alif"] == 16 and "task.input_range" in flat


def test_task_family_union_defaults_to_teacher_and_takes_maze():
    from es_l2l.families.maze.config import MazeConfig
    from es_l2l.families.teacher.config import TeacherConfig

    assert isinstance(build_config({"task": {"batch_size": 4}}).task, TeacherConfig)
    cfg = build_config({"task": {"family": "maze", "rows": 3}, "outer": "bptt"})
    assert isinstance(cfg.task, MazeConfig) and cfg.task.rows == 3 and cfg.family == "maze"
    with pytest.raises(ConfigError, match="unknown config key 'task.n_trials'; allowed keys in task: family, batch_size, rows"):
        build_config({"task": {"family": "maze", "n_trials": 3}})
    # the hybrid works on any family with a gradient loss (the maze's is A2C)
    assert build_config({"task": {"family": "maze"}, "outer": "hybrid"}).outer == "hybrid"
    with pytest.raises(ConfigError, match="unknown task family 'grid'; allowed: teacher, maze"):
        build_config({"task": {"family": "grid"}})
