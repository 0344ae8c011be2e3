"""Population-batched LSNN simulation vs a loop over members (P=64, B=32, N=200, T=500).

Run: ``.venv/bin/python benchmarks/simulation.py [--quick]`` (same as ``es-l2l bench``).
Writes ``benchmarks/results/simulation.json``.
"""

import argparse
import sys

from es_l2l.bench import main

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    sys.exit(main(quick=a.quick, out=a.out))
