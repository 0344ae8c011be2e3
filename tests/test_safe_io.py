"""Files es-l2l reads back load without running code: safetensors + JSON, and the torch.save files of before with torch.load(weights_only=True)."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from es_l2l.tracking.checkpoint import load_checkpoint, load_resume
from es_l2l.tracking.tensor_files import UnsafeFile, load_blob, save_blob


class _Boom:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_the_tree_round_trips_tensors_numbers_tuples_and_int_keys(tmp_path):
    obj = {"a": torch.arange(5.0), "b": (1, 2.5, "x", None, True), "c": {0: {"step": torch.tensor(3.0)}}, "d": [float("inf")],
           "e": np.float64(1.25), "f": torch.float32, "g": np.arange(3)}
    back = load_blob(save_blob(tmp_path / "x.pt", "fmt/1", obj), "fmt/1")
    assert torch.equal(back["a"], obj["a"]) and back["b"] == obj["b"] and back["d"] == [float("inf")]
    assert torch.equal(back["c"][0]["step"], torch.tensor(3.0)) and isinstance(back["e"], np.float64) and back["e"] == 1.25
    assert back["f"] is torch.float32 and np.array_equal(back["g"], np.arange(3))


def test_objects_are_refused_at_save_time(tmp_path):
    with pytest.raises(TypeError, match="is not data"):
        save_blob(tmp_path / "x.pt", "fmt/1", {"x": _Boom("m")})


@pytest.mark.parametrize("loader", [load_resume, load_checkpoint])
def test_a_pickle_is_refused_and_never_executed(tmp_path, loader):
    marker = tmp_path / "pwned"
    path = tmp_path / "resume.pkl"
    path.write_bytes(pickle.dumps({"format": "es-l2l/resume/1", "x": _Boom(str(marker))}))
    with pytest.raises(ValueError) as info:
        loader(path)
    assert not marker.exists()
    assert len(str(info.value).splitlines()) == 1


def test_a_torch_file_with_an_object_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "es-l2l/checkpoint/1", "config": _Boom(str(marker))}, path)
    with pytest.raises(ValueError, match="not an es-l2l checkpoint"):
        load_checkpoint(path)
    with pytest.raises(UnsafeFile):
        load_resume(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint\n", os.urandom(4096)])
def test_random_or_text_files_are_refused_in_one_line(tmp_path, content):
    path = tmp_path / "f.pt"
    path.write_bytes(content)
    for loader in (load_resume, load_checkpoint):
        with pytest.raises(ValueError) as info:
            loader(path)
        assert len(str(info.value).splitlines()) == 1


def test_an_old_pickled_resume_file_says_it_comes_from_an_older_version(tmp_path):
    path = Path(tmp_path / "resume.pkl")
    path.write_bytes(pickle.dumps({"format": "es-l2l/resume/1", "generation": 10}))
    with pytest.raises(UnsafeFile, match="older version of es-l2l and cannot be loaded safely"):
        load_resume(path)


# --- the format: safetensors with the JSON tree in its metadata; the former torch.save files still load --

def _legacy_save_blob(path: Path, fmt: str, obj) -> Path:
    """What ``save_blob`` wrote before safetensors (es-l2l/resume/2): one ``torch.save`` of the format,
    the JSON tree and the tensor table. Kept here only to prove that such files still load."""
    import json

    from es_l2l.tracking.tensor_files import to_tree

    tree, tensors = to_tree(obj)
    torch.save({"format": fmt, "json": json.dumps(tree, allow_nan=True), "tensors": tensors}, path)
    return path


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@pytest.fixture(scope="module")
def resume_state():
    """A real resume state (ES on the smoke config, two generations), as the driver checkpoints it."""
    from es_l2l.config import load_config
    from es_l2l.cluster.evaluators import LocalEvaluator
    from es_l2l.genome import build_genome
    from es_l2l.outer.driver import drive

    root = Path(__file__).resolve().parent.parent
    cfg = load_config(root / "configs" / "smoke.yaml", ["run.workers=0", "run.generations=3", "run.checkpoint_every=2",
                                                        "run.validate_every=2", "task.batch_size=2", "run.validation_tasks=4",
                                                        "es.popsize=4"])
    states = {}
    drive(cfg, build_genome(cfg), LocalEvaluator(cfg, build_genome(cfg)),
          [lambda s: states.update({s["generation"]: s.get("resume_state")})])
    return cfg, states[2]


def _same(a, b) -> bool:
    """Equal to the bit: tensors by their bytes, dtype and shape; containers item by item."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and _bits(a) == _bits(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and (a == b or (a != a and b != b))  # nan == nan here


def test_a_file_is_safetensors_with_the_tree_in_its_metadata_and_reads_back_to_the_bit(tmp_path):
    from safetensors import safe_open

    g = torch.Generator().manual_seed(7)
    obj = {"f32": torch.randn(3, 4, generator=g), "f64": torch.tensor([float("nan"), -0.0, 1e-310], dtype=torch.float64),
           "gen": g.get_state(), "mask": torch.rand(5, generator=g) > 0.5, "i64": torch.tensor(2**62), "empty": torch.zeros(0, 3),
           "view": torch.arange(12.0).reshape(3, 4)[:, 1], "n": 3, "x": [1.5, None, (2, "s")]}
    path = save_blob(tmp_path / "x.pt", "fmt/1", obj)
    with safe_open(str(path), framework="pt") as fh:  # any safetensors reader opens it
        assert fh.metadata()["format"] == "fmt/1" and len(list(fh.keys())) == 7
    back = load_blob(path, "fmt/1")
    assert _same(back, obj)
    assert not _same(back, {**obj, "f64": torch.tensor([float("nan"), 0.0, 1e-310], dtype=torch.float64)})  # -0.0 != +0.0 bitwise


def test_a_resume_state_reads_back_to_the_bit_from_today_s_file_and_from_the_former_torch_file(tmp_path, resume_state):
    from es_l2l.tracking.checkpoint import LEGACY_RESUME_FORMAT, save_resume
    from es_l2l.tracking.redact import safe_config

    cfg, state = resume_state
    expected = {"config": safe_config(cfg), **state}
    today = save_resume(tmp_path / "resume.pt", cfg, state)
    assert today.read_bytes()[8:9] == b"{"  # a safetensors header, not a zip
    assert _same(load_resume(today), expected)
    former = _legacy_save_blob(tmp_path / "old-resume.pt", LEGACY_RESUME_FORMAT, expected)
    assert former.read_bytes()[:2] == b"PK"
    assert _same(load_resume(former), expected)


def test_a_checkpoint_reads_back_to_the_bit_from_today_s_file_and_from_the_former_torch_file(tmp_path, resume_state):
    from es_l2l.tracking.checkpoint import LEGACY_FORMAT, save_checkpoint
    from es_l2l.genome import build_genome
    from es_l2l.tracking.redact import safe_config

    cfg, _ = resume_state
    vec = build_genome(cfg).initial_vector()
    genomes = {"best": vec + 1e-7, "final": vec * 3, "initial": vec}
    for path in (save_checkpoint(tmp_path / "checkpoint.pt", cfg, genomes, best_generation=1, generations=2),
                 tmp_path / "old-checkpoint.pt"):
        if path.name.startswith("old"):  # what save_checkpoint wrote before safetensors (format 1)
            torch.save({"format": LEGACY_FORMAT, "config": safe_config(cfg), "genomes": genomes,
                        "meta": {"best_generation": 1, "generations": 2}}, path)
        loaded, genome, back, meta = load_checkpoint(path)
        assert loaded == cfg and genome.dim == vec.numel() and meta == {"best_generation": 1, "generations": 2}
        assert all(_same(back[k], genomes[k]) for k in genomes)


def test_a_former_torch_file_still_holding_an_object_or_too_deep_json_is_refused_in_one_line(tmp_path):
    from es_l2l.tracking.checkpoint import LEGACY_RESUME_FORMAT

    path = tmp_path / "resume.pt"
    torch.save({"format": LEGACY_RESUME_FORMAT, "json": "[" * 100_000 + "]" * 100_000, "tensors": {}}, path)
    with pytest.raises(UnsafeFile, match="its JSON nests too deeply") as info:
        load_resume(path)
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("header", [b"\xff" * 8 + b"{}", (10**12).to_bytes(8, "little") + b"{}", (2).to_bytes(8, "little") + b"{}",
                                    (30).to_bytes(8, "little") + b'{"t": {"dtype": "F32", "shape": [9], "data_offsets": [0, 36]}}'])
def test_a_crafted_safetensors_header_is_refused_in_one_line(tmp_path, header):
    path = tmp_path / "resume.pt"
    path.write_bytes(header)
    for loader in (load_resume, load_checkpoint):
        with pytest.raises(ValueError) as info:
            loader(path)
        assert len(str(info.value).splitlines()) == 1 and "not an es-l2l" in str(info.value)
