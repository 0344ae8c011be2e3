"""The benchmark suite (same as ``es-l2l bench`` and ``make bench``): JSON under benchmarks/results/.

    .venv/bin/python benchmarks/run.py [--quick] [--only sim norse es bptt] [--pop 64] [--neurons 200] [--threads N]
"""

import sys

from es_l2l.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
