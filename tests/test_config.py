"""Config validation: one sentence naming the key and what is allowed."""

from pathlib import Path

import pytest

from es_l2l.config import ConfigError, ExperimentConfig, build_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_default_config_equals_embedded_defaults():
    assert load_config(ROOT / "configs" / "teacher_es.yaml") == ExperimentConfig()


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_validates(path):
    load_config(path)


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
        ("nonsense=3", r"unknown config key 'nonsense'; allowed keys in top level: name, model"),
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
