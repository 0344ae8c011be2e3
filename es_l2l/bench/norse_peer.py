"""The peer figure: Norse's LSNN recurrent cell on one network, against our batched population.

Norse is installed in its own virtual environment (``benchmarks/.norse-venv``, git-ignored),
built on first use: the project's torch version first (``torch==<ours>``: the CPU wheel here),
then norse's pure-Python dependencies under a constraint that keeps that torch, then norse
itself from its source distribution without dependencies (``pip install norse`` replaces torch
with a multi-GB CUDA build; norse's torchvision requirement is not needed by its LSNN cell).
The cell runs in a subprocess (``benchmarks/norse_lsnn.py``) that prints JSON. Anything that
fails is recorded as ``{"skipped": reason}``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "benchmarks" / ".norse-venv"
SCRIPT = ROOT / "benchmarks" / "norse_lsnn.py"
NORSE = "norse==1.1.0"


def _pip(py: Path, *args: str, timeout: int = 900) -> None:
    done = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"pip install {' '.join(args)} failed: {tail[:300]}")


def ensure_venv(log=print, build: bool = True) -> Path:
    """The norse venv's python, building the venv if needed (a few minutes the first time)."""
    py = VENV / "bin" / "python"
    ok = VENV / ".installed"
    if ok.exists() and py.exists():
        return py
    if not build:
        raise RuntimeError(f"{VENV.relative_to(ROOT)} is not built and building was turned off; "
                           "run 'es-l2l bench --only norse' once to build it")
    log(f"  building {VENV.relative_to(ROOT)} (torch {torch.__version__.split('+')[0]}, {NORSE})")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, capture_output=True, timeout=300)
    pin = f"torch=={torch.__version__.split('+')[0]}"
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(pin + "\n")
    _pip(py, pin)
    _pip(py, "-c", f.name, "setuptools", "wheel", "numpy", "nir", "nirtorch")
    with tempfile.TemporaryDirectory() as tmp:
        # from the file, not the name: built without isolation its metadata says version 0.0.0
        # (setuptools-scm is absent), which pip refuses for a pinned name
        done = subprocess.run([str(py), "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", NORSE, "-d", tmp],
                              capture_output=True, text=True, timeout=600)
        files = list(Path(tmp).glob("norse-*"))
        if done.returncode != 0 or not files:
            raise RuntimeError(f"pip download {NORSE} failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:300]}")
        _pip(py, "--no-deps", "--no-build-isolation", str(files[0]))
    check = subprocess.run([str(py), "-c", "import torch, norse.torch; print(torch.__version__)"], capture_output=True,
                           text=True, timeout=300)
    if check.returncode != 0:
        raise RuntimeError(f"norse does not import: {(check.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    ok.write_text(check.stdout)
    return py


def run(quick: bool, n: int = 200, batch: int = 32, steps: int = 500, repeats: int = 3, log=print, build: bool = True) -> dict:
    if quick:
        n, batch, steps, repeats = 32, 4, 60, 1
    shapes = {"N": n, "B": batch, "T": steps, "n_in": 10, "repeats": repeats, "threads": torch.get_num_threads()}
    try:
        py = ensure_venv(log, build)
        log(f"  norse LSNNRecurrentCell N={n} B={batch} T={steps}")
        done = subprocess.run([str(py), str(SCRIPT), json.dumps(shapes)], capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError((done.stderr.strip().splitlines() or ["?"])[-1][:300])
        res = json.loads(done.stdout.strip().splitlines()[-1])
    except Exception as exc:  # no network/registry, build failure, import failure: say so
        return {"skipped": f"{type(exc).__name__}: {exc}", "shapes": shapes}
    # built from the sdist without setuptools-scm, its metadata says 0.0.0: record what was installed
    res["norse_metadata_version"], res["norse"] = res.pop("norse"), NORSE.split("==")[1]
    res["median_seconds"] = sorted(res["seconds"])[len(res["seconds"]) // 2]
    res["network_steps_per_s"] = steps / res["median_seconds"]
    res["venv"] = str(VENV.relative_to(ROOT))
    return res


def compare(norse: dict, forward: list[dict]) -> dict | None:
    """Ours per network-step (batched, P networks at once) against norse's one network."""
    if "skipped" in norse or not forward:
        return None
    rows = [c for c in forward if c["N"] == norse["N"] and c["B"] == norse["B"] and c["T"] == norse["T"]]
    out = []
    for c in rows:
        ours = c["P"] * c["T"] / c["median_seconds"]["batched_auto"]
        ours_dense = c["P"] * c["T"] / c["median_seconds"]["batched_dense"]
        out.append({"P": c["P"], "ours_network_steps_per_s": ours, "ours_dense_network_steps_per_s": ours_dense,
                    "ratio_over_norse": ours / norse["network_steps_per_s"],
                    "ratio_dense_over_norse": ours_dense / norse["network_steps_per_s"]})
    return {"norse_network_steps_per_s": norse["network_steps_per_s"], "by_population": out}
