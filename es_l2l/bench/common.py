"""What every benchmark section shares: the reference network, the machine record, timing with
interleaved repeats (the machine is shared and noisy: variants measured side by side in one run,
repeat by repeat, see the same load), and the JSON writer."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from es_l2l import __version__
from es_l2l.snn import LSNNParams


def reference_params(pop: int, n: int, n_in: int, seed: int = 0, b0: float = 0.01) -> LSNNParams:
    """Reference-style network: half LIF, half ALIF, weights N(0, 1) / sqrt(n_pre). ``b0`` sets
    the firing regime (0.01: the reference's, ~5% of units a step with this input; 0.06: ~1%)."""
    g = torch.Generator().manual_seed(seed)
    n_lif = n // 2
    return LSNNParams(
        w_in=torch.randn(pop, n_in, n, generator=g) / math.sqrt(n_in),
        w_rec=torch.randn(pop, n, n, generator=g) / math.sqrt(n) * (1 - torch.eye(n)),
        w_out=torch.randn(pop, n, 1, generator=g) / math.sqrt(n),
        b_out=torch.zeros(pop, 1),
        alpha=torch.full((pop, n), math.exp(-1 / 20)),
        rho=torch.full((pop, n), math.exp(-1 / 700)),
        b0=torch.full((pop, n), b0),
        beta=torch.cat([torch.zeros(pop, n_lif), torch.full((pop, n - n_lif), 1.8)], 1),
        kappa=torch.full((pop, 1), math.exp(-1 / 20)),
    )


def input_spikes(batch: int, steps: int, n_in: int, p: float = 0.05, seed: int = 1) -> torch.Tensor:
    return (torch.rand(batch, steps, n_in, generator=torch.Generator().manual_seed(seed)) < p).float()


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each callable, ``repeats`` rounds, every round running all of them in turn."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timed(fn))
    return times


def median(xs) -> float:
    return statistics.median(xs)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def machine() -> dict:
    """The machine, versions and load (other processes' CPU use skews every figure)."""
    out = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15min": _load(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "es_l2l": __version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                           timeout=5, cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


def write(folder: str | Path, section: str, quick: bool, body: dict) -> Path:
    """``<folder>/<section>[-quick].json`` with the date and the machine beside ``body``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{section}{'-quick' if quick else ''}.json"
    blob = {
        "benchmark": section,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine(),
        **body,
    }
    path.write_text(json.dumps(blob, indent=2, default=str))
    return path


def table(rows: list[list], header: list[str]) -> str:
    """A plain fixed-width table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)
