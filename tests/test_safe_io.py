"""Files es-l2l reads back load without running code: tensors + JSON, torch.load(weights_only=True)."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from es_l2l.checkpoint import load_checkpoint, load_resume
from es_l2l.safe_io import UnsafeFile, load_blob, save_blob


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
