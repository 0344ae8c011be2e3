"""Files that load without running code: tensors through ``torch.save`` / ``torch.load(weights_only=True)``,
everything else as JSON.

:func:`to_tree` turns a nested structure of dicts, lists, tuples, numbers, strings, ``None``, tensors,
numpy arrays and numpy scalars into a JSON-able tree plus a flat ``{key: tensor}`` table;
:func:`from_tree` undoes it. Anything else (an object, a function, a class) is refused with a
:class:`TypeError` at save time, so a loader never has to trust more than data.

:func:`save_blob` / :func:`load_blob` write and read one such tree as a ``torch.save`` file holding
only a format string, a JSON string and the tensor table. Reading uses ``weights_only=True``:
a file holding anything else (an old pickle, a crafted payload) is refused, not executed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

_T, _TUPLE, _MAP, _NP, _NPS, _DTYPE = "__tensor__", "__tuple__", "__map__", "__ndarray__", "__npscalar__", "__dtype__"
_MARKERS = {_T, _TUPLE, _MAP, _NP, _NPS, _DTYPE}


class UnsafeFile(ValueError):
    """A file that is not a safe es-l2l blob (a pickle from an older version, a foreign or damaged file)."""


def to_tree(obj: Any, tensors: dict[str, torch.Tensor] | None = None, clone: bool = True) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(json_tree, tensors)``; tensors are cloned to CPU (a snapshot) unless ``clone`` is false."""
    tensors = {} if tensors is None else tensors

    def enc(o: Any, path: str) -> Any:
        if o is None or isinstance(o, (bool, str)):
            return o
        if isinstance(o, (int, float)) and not isinstance(o, (np.generic,)):
            return o
        if isinstance(o, torch.Tensor):
            key = f"t{len(tensors)}"
            t = o.detach().cpu()
            tensors[key] = t.clone() if clone else t
            return {_T: key}
        if isinstance(o, np.ndarray):
            key = f"t{len(tensors)}"
            tensors[key] = torch.from_numpy(np.array(o, copy=True))
            return {_NP: key}
        if isinstance(o, np.generic):
            return {_NPS: o.dtype.name, "v": o.item()}
        if isinstance(o, torch.dtype):
            return {_DTYPE: str(o).removeprefix("torch.")}
        if isinstance(o, tuple):
            return {_TUPLE: [enc(x, f"{path}[{i}]") for i, x in enumerate(o)]}
        if isinstance(o, list):
            return [enc(x, f"{path}[{i}]") for i, x in enumerate(o)]
        if isinstance(o, dict):
            if all(isinstance(k, str) for k in o) and not (_MARKERS & set(o)):
                return {k: enc(v, f"{path}.{k}") for k, v in o.items()}
            for k in o:
                if not isinstance(k, (str, int, float, bool)) or k is None:
                    raise TypeError(f"cannot save {path}: dict key {k!r} of type {type(k).__name__}")
            return {_MAP: [[k, enc(v, f"{path}[{k!r}]")] for k, v in o.items()]}
        raise TypeError(f"cannot save {path or 'value'}: {type(o).__module__}.{type(o).__qualname__} is not data")

    return enc(obj, ""), tensors


def from_tree(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    def dec(o: Any) -> Any:
        if isinstance(o, list):
            return [dec(x) for x in o]
        if not isinstance(o, dict):
            return o
        if _T in o:
            return tensors[o[_T]]
        if _NP in o:
            return tensors[o[_NP]].numpy()
        if _NPS in o:
            return np.dtype(o[_NPS]).type(o["v"])
        if _DTYPE in o:
            dtype = getattr(torch, o[_DTYPE], None)
            if not isinstance(dtype, torch.dtype):
                raise UnsafeFile(f"unknown torch dtype {o[_DTYPE]!r}")
            return dtype
        if _TUPLE in o:
            return tuple(dec(x) for x in o[_TUPLE])
        if _MAP in o:
            return {k: dec(v) for k, v in o[_MAP]}
        return {k: dec(v) for k, v in o.items()}

    return dec(tree)


def save_blob(path: str | Path, fmt: str, obj: Any) -> Path:
    """Write ``obj`` (see :func:`to_tree`) under format ``fmt``; loads with :func:`load_blob`."""
    path = Path(path)
    tree, tensors = to_tree(obj)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": fmt, "json": json.dumps(tree, allow_nan=True), "tensors": tensors}, tmp)
    tmp.replace(path)  # never a half-written file under the real name
    return path


def is_raw_pickle(path: Path) -> bool:
    """A bare pickle stream (protocol 2+): never a ``torch.save`` file, which is a zip archive."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    return len(head) == 2 and head[0] == 0x80


def torch_load_data(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never code from the file."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def load_blob(path: str | Path, fmt: str, what: str = "file") -> Any:
    """The object saved by :func:`save_blob` under ``fmt``; :class:`UnsafeFile` for anything else."""
    path = Path(path)
    if path.is_dir():
        raise UnsafeFile(f"'{path}' is a directory, not an es-l2l {what}")
    if path.is_file() and is_raw_pickle(path):
        raise UnsafeFile(
            f"'{path}' is a pickle written by an older version of es-l2l and cannot be loaded safely; start the run again"
        )
    try:
        blob = torch_load_data(path)
    except Exception as exc:  # UnpicklingError, RuntimeError (not a zip), EOFError...
        raise UnsafeFile(f"'{path}' is not an es-l2l {what} ({type(exc).__name__}); pass a file es-l2l wrote") from None
    if not isinstance(blob, dict) or blob.get("format") != fmt or not isinstance(blob.get("json"), str):
        got = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise UnsafeFile(f"'{path}' is not an es-l2l {what} (format {got!r}, expected {fmt!r})")
    tensors = blob.get("tensors") or {}
    if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise UnsafeFile(f"'{path}' is a damaged es-l2l {what} (its tensor table holds something else)")
    try:
        tree = json.loads(blob["json"])
    except RecursionError:  # json recurses once per level: a crafted file nests thousands deep
        raise UnsafeFile(f"'{path}' is a damaged es-l2l {what} (its JSON nests too deeply); pass a file es-l2l wrote") from None
    except ValueError as exc:
        raise UnsafeFile(f"'{path}' is a damaged es-l2l {what} (its JSON: {str(exc)[:100]})") from None
    from es_l2l.schema import check_tree

    check_tree(tree, f"'{path}' (an es-l2l {what})", UnsafeFile)  # depth, size: before from_tree recurses
    try:
        return from_tree(tree, tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise UnsafeFile(f"'{path}' is a damaged es-l2l {what} ({type(exc).__name__}: {str(exc)[:100]})") from None
