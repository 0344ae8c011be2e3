"""Files that load without running code: tensors in a ``safetensors`` file, everything else as JSON
in that file's metadata header.

:func:`to_tree` turns a nested structure of dicts, lists, tuples, numbers, strings, ``None``, tensors,
numpy arrays and numpy scalars into a JSON-able tree plus a flat ``{key: tensor}`` table;
:func:`from_tree` undoes it. Anything else (an object, a function, a class) is refused with a
:class:`TypeError` at save time, so a loader never has to trust more than data.

:func:`save_blob` writes one such tree as a single safetensors file: the tensor table as its
tensors, and two metadata strings, ``format`` and ``json`` (the tree). One file, because a run
logs it as one MLflow artifact and replaces it whole (a folder or a pair of files could be caught
half-replaced); any safetensors reader opens it (``safetensors.safe_open(path, "pt").metadata()``).
:func:`load_blob` reads it back, and still reads the files es-l2l wrote before (a ``torch.save``
zip of a format string, the JSON and the tensor table, read with ``torch.load(weights_only=True)``).
A pickle, a torch file holding an object, or anything else is refused, not executed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

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
    """Write ``obj`` (see :func:`to_tree`) under format ``fmt`` as a safetensors file; loads with :func:`load_blob`."""
    from safetensors.torch import save_file

    path = Path(path)
    tree, tensors = to_tree(obj)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: t.contiguous() for k, t in tensors.items()}, str(tmp), metadata={"format": fmt, "json": json.dumps(tree, allow_nan=True)})
    tmp.replace(path)  # never a half-written file under the real name
    return path


def is_raw_pickle(path: Path) -> bool:
    """A bare pickle stream (protocol 2+): never a ``torch.save`` file (a zip) nor a safetensors file (whose
    8-byte header length may also begin with 0x80, so that is ruled out first)."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5 and not looks_safetensors(path)


def is_torch_zip(path: Path) -> bool:
    """A ``torch.save`` file (a zip archive): what es-l2l wrote before it wrote safetensors."""
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


_MAX_HEADER = 100_000_000  # bytes: safetensors' own limit on the header (tensor table and metadata)


def looks_safetensors(path: Path) -> bool:
    """The file starts as a safetensors file does: a little-endian 8-byte header length that fits the
    file, then the header's JSON object."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    n = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    return 2 <= n <= min(path.stat().st_size - 8, _MAX_HEADER) and head[8:9] == b"{"


def read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """``(metadata, tensors)`` of a safetensors file, tensors copied to CPU; raises ``ValueError`` (or the
    library's error) for a file that is not one. Parsing the header runs no code (JSON and raw bytes)."""
    from safetensors import safe_open

    if not looks_safetensors(path):
        raise ValueError("not a safetensors file")
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        metadata = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k).clone() for k in fh.keys()}
    return metadata, tensors


def torch_load_data(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never code from the file."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def legacy_tree(blob: Any, fmt: str) -> tuple[str, dict] | None:
    """The JSON string and tensor table of a ``torch.save`` blob written by the former :func:`save_blob`
    under ``fmt``; None when the blob is not one."""
    if isinstance(blob, dict) and blob.get("format") == fmt and isinstance(blob.get("json"), str):
        return blob["json"], blob.get("tensors") or {}
    return None


def load_blob(path: str | Path, fmt: str, what: str = "file", legacy: Callable[[Any], Any] | None = None) -> Any:
    """The object saved by :func:`save_blob` under ``fmt``; :class:`UnsafeFile` (one line) for anything else.

    A ``torch.save`` file from before is read with ``torch.load(weights_only=True)`` and handed to
    ``legacy(blob)``, which returns ``(json_string, tensors)`` or an already decoded object (or None:
    not such a file); without ``legacy`` the file is refused.
    """
    path = Path(path)
    if path.is_dir():
        raise UnsafeFile(f"'{path}' is a directory, not an es-l2l {what}")
    if path.is_file() and is_raw_pickle(path):
        raise UnsafeFile(
            f"'{path}' is a pickle written by an older version of es-l2l and cannot be loaded safely; start the run again"
        )
    if path.is_file() and is_torch_zip(path):
        try:
            blob = torch_load_data(path)
        except Exception as exc:  # UnpicklingError (an object in the file), RuntimeError (a damaged zip)...
            raise UnsafeFile(f"'{path}' is not an es-l2l {what} ({type(exc).__name__}); pass a file es-l2l wrote") from None
        old = legacy(blob) if legacy is not None else None
        if old is None:
            got = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
            raise UnsafeFile(f"'{path}' is not an es-l2l {what} (format {got!r}, expected {fmt!r})")
        if not isinstance(old, tuple):
            return old
        text, tensors = old
    else:
        try:
            metadata, tensors = read_safetensors(path)
        except Exception as exc:  # OSError, SafetensorError, ValueError...
            why = "not a safetensors file" if isinstance(exc, ValueError) else type(exc).__name__
            raise UnsafeFile(f"'{path}' is not an es-l2l {what} ({why}); pass a file es-l2l wrote") from None
        if metadata.get("format") != fmt or not isinstance(metadata.get("json"), str):
            raise UnsafeFile(f"'{path}' is not an es-l2l {what} (format {metadata.get('format')!r}, expected {fmt!r})")
        text = metadata["json"]
    if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise UnsafeFile(f"'{path}' is a damaged es-l2l {what} (its tensor table holds something else)")
    try:
        tree = json.loads(text)
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
