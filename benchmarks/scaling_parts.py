"""`es-l2l bench --only scaling`, one part per process, then the model: how docs/scaling.md's figures were taken
on a loaded machine (a part that fails, e.g. a Ray that does not start under load, can be run again alone).

    nice -n -5 python benchmarks/scaling_parts.py es          # ES split, teacher P 64 256 1024, maze P 64 256 -> OUT/es.json
    nice -n -5 python benchmarks/scaling_parts.py bptt        # BPTT split on one process (add --data-parallel for W = 2)
    nice -n -5 python benchmarks/scaling_parts.py coord       # 32 actors, trivial evaluation, one node (--cluster: loopback nodes)
    python benchmarks/scaling_parts.py model [--out benchmarks/results]   # the model over OUT/*.json -> scaling.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from es_l2l.bench import scaling
from es_l2l.bench.common import write


def _plain(o):
    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items() if k != "fitness"}
    if isinstance(o, list):
        return [_plain(v) for v in o]
    return o.tolist() if isinstance(o, torch.Tensor) else o


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["es", "bptt", "coord", "model"])
    ap.add_argument("--parts", type=Path, default=Path("/tmp/esl2l-scaling-parts"), help="folder of the parts' JSON")
    ap.add_argument("--out", default="benchmarks/results", help="folder of the model's scaling.json")
    ap.add_argument("--data-parallel", action="store_true", help="bptt: also W = 2 replicas (needs a local Ray)")
    ap.add_argument("--cluster", action="store_true", help="coord: on a loopback multi-node cluster")
    args = ap.parse_args()
    args.parts.mkdir(parents=True, exist_ok=True)
    scaling._quiet()
    torch.set_num_threads(1)
    log = lambda s: print(s, flush=True)
    root = scaling.ROOT / "configs"
    if args.part == "model":
        res = {"quick": False, **{k: json.loads((args.parts / f"{k}.json").read_text()) for k in ("es", "bptt")},
               "coordination": json.loads((args.parts / "coord.json").read_text())}
        res["model"] = scaling.model(res)
        path = write(args.out, "scaling", False, res)
        print(scaling.report(res))
        print(f"  written: {path}")
        return
    if args.part == "es":
        scaling._start_ray(3)
        res = [scaling.es_split("teacher", root / "teacher_es.yaml", (64, 256, 1024), (1, 2), 5, 1, (), log, 1.0),
               scaling.es_split("maze", root / "maze_es.yaml", (64, 256), (1, 2), 5, 1, (), log, 1.0)]
    elif args.part == "bptt":
        res = [scaling.bptt_split(root / "teacher_bptt.yaml", data_parallel=args.data_parallel, log=log),
               scaling.bptt_split(root / "maze_a2c.yaml", data_parallel=False, log=log)]
    elif args.cluster:
        res = scaling.coordination_cluster(log=log)
    else:
        scaling._start_ray(2)
        res = scaling.coordination([(w, 1) for w in (1, 2, 4, 8, 16, 32)], 32, 2 / 32, 64, 5, log=log)
    (args.parts / f"{args.part}.json").write_text(json.dumps(_plain(res), indent=1, default=str))
    log(f"  written: {args.parts / (args.part + '.json')}")


if __name__ == "__main__":
    main()
