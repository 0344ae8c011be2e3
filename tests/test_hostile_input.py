"""Hostile input through the real `es-l2l` command: files built to hang, crash or flood the loader.

Each case ends in one line on stderr naming the problem and the fix, exit 2 (a file es-l2l reads
back, a checkpoint or a resume file: exit 1, as every other unreadable checkpoint), no MLflow
store created, nothing else touched. Each test is one row of docs/failures.md ("Hostile input").
"""

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def es_l2l(cwd: Path, *args: str, timeout: float = 150) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "es_l2l.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - t0


def store(tmp: Path) -> list[str]:
    return [f"--set=tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"--set=tracking.artifact_root={tmp / 'mlruns'}"]


def refused(proc, seconds: float, code: int, *words: str, tmp: Path | None = None) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code and len(lines) == 1, proc.stderr[-3000:]
    assert len(lines[0]) < 400, lines[0][:1000]  # one short line, never the hostile value itself
    for word in words:
        assert word in lines[0], lines[0]
    assert seconds < 110, seconds  # the loader never works through the expansion (a bomb hung for good; 56 s seen at load 25)
    if tmp is not None:
        assert not (tmp / "mlflow.db").exists() and not (tmp / "mlruns").exists()


def billion_laughs() -> str:
    """~400 bytes that expand to 9^9 (387 million) strings."""
    lines, prev = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'], "a"
    for c in "bcdefghi":
        lines.append(f"{c}: &{c} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = c
    return "\n".join(lines) + "\nname: *i\n"


# --- YAML built to hang or crash the loader ------------------------------------------------------


@pytest.mark.parametrize("kind, words", [
    ("alias bomb", ("expands its aliases", "more than 100,000 values", "without the alias chain")),
    ("deep nesting", ("nests more than 32 levels deep", "flatten it")),
    pytest.param("deep aliases", ("expands its aliases", "levels deep"), marks=pytest.mark.slow),  # these four: run by .ci/run
    pytest.param("self alias", ("alias inside its own anchor",), marks=pytest.mark.slow),
    pytest.param("long string", ("200,000-character value", "shorten it"), marks=pytest.mark.slow),
    pytest.param("long name", ("'name'", "at most 200 characters"), marks=pytest.mark.slow),
    ("huge file", ("characters long", "pass the right file")),
])
def test_hostile_yaml_is_refused_in_one_line_before_anything_starts(tmp_path, kind, words):
    text = {
        "alias bomb": billion_laughs(),
        "deep nesting": "name: " + "[" * 100_000 + "]" * 100_000 + "\n",
        # each anchor 20 levels deep holds the previous one: 40 levels once expanded, 20 as written
        "deep aliases": "a: &a " + "[" * 20 + "1" + "]" * 20 + "\nb: &b " + "[" * 19 + "*a" + "]" * 19 + "\n",
        "self alias": "name: &x [1, *x]\n",
        "long string": "name: " + "x" * 200_000 + "\n",
        "long name": "name: " + "x" * 1_000 + "\n",
        "huge file": "# padding\n" * 200_000,
    }[kind]
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    proc, seconds = es_l2l(tmp_path, "run", str(path), *store(tmp_path))
    refused(proc, seconds, 2, "config error:", "hostile.yaml" if kind != "long name" else "config value", *words, tmp=tmp_path)


@pytest.mark.parametrize("value, words", [
    ("&a [" + ",".join(["*a"] * 3) + "]", ("alias inside its own anchor",)),
    ("[" * 5_000 + "]" * 5_000, ("--set name", "nests more than 32 levels deep")),
    ("[1, 2", ("--set name", "not valid YAML", "quote it")),
])
def test_hostile_set_values_are_refused_in_one_line(tmp_path, value, words):
    proc, seconds = es_l2l(tmp_path, "run", str(SMOKE), *store(tmp_path), f"--set=name={value}")
    refused(proc, seconds, 2, *words, tmp=tmp_path)


def test_a_set_key_nested_fifty_thousand_levels_is_refused(tmp_path):
    proc, seconds = es_l2l(tmp_path, "run", str(SMOKE), *store(tmp_path), "--set=" + ".".join(["a"] * 50_000) + "=1")
    refused(proc, seconds, 2, "levels deep", "es.popsize", tmp=tmp_path)


@pytest.mark.parametrize("command", ["compare", "tune"])
def test_compare_and_tune_files_go_through_the_same_bounded_loader(tmp_path, command):
    path = tmp_path / "hostile.yaml"
    path.write_text(billion_laughs().replace("name: *i", "configs: *i" if command == "compare" else "config: *i"))
    proc, seconds = es_l2l(tmp_path, command, str(path))
    refused(proc, seconds, 2, "hostile.yaml", "expands its aliases", tmp=tmp_path)


# --- crafted checkpoints and resume files ---------------------------------------------------------

SMALL = ["run.workers=0", "run.generations=3", "run.checkpoint_every=2", "run.validate_every=2", "task.batch_size=2",
         "run.validation_tasks=4", "es.popsize=4"]


def _checkpoint(tmp: Path, edit) -> Path:
    """A real checkpoint.pt of the smoke config (what a run logs), then ``edit(blob)`` on its contents."""
    from es_l2l.tracking.checkpoint import FORMAT, save_checkpoint
    from es_l2l.config import load_config
    from es_l2l.genome import build_genome
    from es_l2l.tracking.tensor_files import load_blob, save_blob

    cfg = load_config(SMOKE, SMALL)
    vec = build_genome(cfg).initial_vector()
    path = save_checkpoint(tmp / "checkpoint.pt", cfg, {"best": vec, "final": vec, "initial": vec}, best_generation=0, generations=2)
    blob = load_blob(path, FORMAT, "checkpoint")  # the file's contents, before load_checkpoint's checks
    edit(blob)
    save_blob(path, FORMAT, blob)
    return path


def _set(tree: dict, dotted: str, value) -> None:
    *parts, last = dotted.split(".")
    for part in parts:
        tree = tree[part]
    tree[last] = value


# Each case is a whole `es-l2l evaluate`; two stay in `make test`, the rest are marked slow (run by .ci/run).
@pytest.mark.parametrize("case, edit, words", [
    ("meta a string", lambda b: b.update(meta="a string"), ("damaged es-l2l checkpoint", "meta must map")),
    pytest.param("meta negative", lambda b: b.update(meta={"best_generation": 5, "generations": 2}),
                 ("meta must map best_generation <= generations",), marks=pytest.mark.slow),
    pytest.param("ten million tasks", lambda b: _set(b, "config.run.validation_tasks", 10**7),
                 ("'run.validation_tasks'", "less than or equal to 100000"), marks=pytest.mark.slow),
    pytest.param("config a list", lambda b: b.update(config=[1, 2]), ("config is a list, not a mapping",), marks=pytest.mark.slow),
    ("deep meta", lambda b: b.update(meta=_deep(200)), ("nests more than 32 levels deep",)),
    pytest.param("nan genome", lambda b: b["genomes"]["best"].fill_(float("nan")), ("genome 'best' holds non-finite",),
                 marks=pytest.mark.slow),
])
def test_a_crafted_checkpoint_is_refused_in_one_line_by_evaluate(tmp_path, case, edit, words):
    path = _checkpoint(tmp_path, edit)
    proc, seconds = es_l2l(tmp_path, "evaluate", str(path), "--tasks", "2")
    refused(proc, seconds, 1, "error:", "checkpoint.pt", *words)


def test_evaluate_refuses_ten_million_tasks_before_simulating_any(tmp_path):
    path = _checkpoint(tmp_path, lambda b: None)
    proc, seconds = es_l2l(tmp_path, "evaluate", str(path), "--tasks", str(10**7))
    refused(proc, seconds, 2, "--tasks must be a positive number of test episodes (at most 100,000)")


def _deep(depth: int) -> list:
    out: list = []
    for _ in range(depth):
        out = [out]
    return out


@pytest.fixture(scope="module")
def resume_state():
    """A real resume state: two generations of ES on the smoke config, as the driver checkpoints them."""
    from es_l2l.config import load_config
    from es_l2l.cluster.evaluators import LocalEvaluator
    from es_l2l.genome import build_genome
    from es_l2l.outer.driver import drive

    cfg = load_config(SMOKE, SMALL)
    genome = build_genome(cfg)
    states = {}
    drive(cfg, genome, LocalEvaluator(cfg, genome), [lambda s: states.update({s["generation"]: s.get("resume_state")})])
    return cfg, states[2]


def _killed_run_with(tmp: Path, resume_pt: Path) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("es-l2l", artifact_location=(tmp / "mlruns").as_uri()))
    client.log_param(run.info.run_id, "outer", "es")
    client.log_artifact(run.info.run_id, str(resume_pt))
    client.set_terminated(run.info.run_id, "KILLED")
    return run.info.run_id


def _mutate(state: dict, case: str) -> None:
    import torch

    if case == "generation 10^12":
        state["generation"] = 10**12
    elif case == "best of the wrong shape":
        state["best"] = torch.zeros(7)
    elif case == "negative sigma":
        state["searcher"]["distribution"]["parameters"]["sigma"] = -state["searcher"]["distribution"]["parameters"]["sigma"]
    elif case == "popsize 10^9":
        state["searcher"]["attrs"]["_popsize"] = 10**9
    elif case == "deep status":
        state["status0"] = {"x": _deep(200)}


# Each case is a whole `es-l2l run --resume`; two stay in `make test`, the rest are marked slow (run by .ci/run).
@pytest.mark.parametrize("case, words", [
    ("generation 10^12", ("generation is 1000000000000, outside 0..3 (run.generations)",)),
    pytest.param("best of the wrong shape", ("best genome has shape (7,)",), marks=pytest.mark.slow),
    pytest.param("negative sigma", ("searcher.distribution.parameters.sigma has", "<= 0"), marks=pytest.mark.slow),
    pytest.param("popsize 10^9", ("searcher.attrs._popsize is 1000000000, but es.popsize is 4",), marks=pytest.mark.slow),
    pytest.param("deep status", ("nests more than 32 levels deep",), marks=pytest.mark.slow),
    ("deep json", ("its JSON nests too deeply",)),
])
def test_a_crafted_resume_file_is_refused_in_one_line_naming_the_field_and_the_run_is_untouched(tmp_path, resume_state, case, words):
    import copy

    from mlflow.tracking import MlflowClient
    from safetensors.torch import save_file

    from es_l2l.tracking.checkpoint import RESUME_FORMAT, save_resume

    cfg, state = resume_state
    path = tmp_path / "resume.pt"
    if case == "deep json":  # the JSON string where save_blob writes it (the safetensors metadata), nested 100,000 deep
        save_file({}, str(path), metadata={"format": RESUME_FORMAT, "json": "[" * 100_000 + "]" * 100_000})
    else:
        state = copy.deepcopy(state)
        _mutate(state, case)
        save_resume(path, cfg, state)
    run_id = _killed_run_with(tmp_path, path)
    proc, seconds = es_l2l(tmp_path, "run", "--resume", run_id, *store(tmp_path))
    refused(proc, seconds, 1, "error:", f"the resume.pt of MLflow run '{run_id}'", *words)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("es-l2l").experiment_id])
    assert run.info.status == "KILLED" and not run.data.metrics  # not reopened, nothing logged


def test_an_untouched_resume_state_passes_the_checks(tmp_path, resume_state):
    from es_l2l.tracking.checkpoint import load_resume, save_resume

    cfg, state = resume_state
    loaded = load_resume(save_resume(tmp_path / "resume.pt", cfg, state))
    assert loaded["generation"] == 2 and loaded["best"].shape == state["best"].shape
