"""One teacher config run with several seeds: each run's held-out numbers and the spread across runs.

    PYTHONPATH=. python benchmarks/teacher_seeds.py --runs sqlite:///A/mlflow.db sqlite:///B/mlflow.db ... \
        --out docs/results/teacher-seeds/NAME.json
    PYTHONPATH=. python benchmarks/teacher_seeds.py --checkpoints A/checkpoint.pt B/checkpoint.pt ...

Each ``--runs`` entry is an MLflow tracking URI holding one finished ``es-l2l run`` of the teacher family
(the last run in it is read); each ``--checkpoints`` entry is a checkpoint (e.g. one a run logged at a
validation step: the best genome so far), scored here by the same held-out report a run ends with. A run's seed fixes its 128 held-out test tasks, so the baselines differ
between seeds; the within-run interval is the paired difference to the running mean over those
episodes (the run's ``withheld/model_minus_running_mean`` metrics), and the spread across runs is the
mean and Student-t 95% interval over the runs of each number (``es_l2l.reporting.stats.t_interval``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from es_l2l.reporting.stats import t_interval
from es_l2l.tracking.metric_keys import pick

COLUMNS = {
    "steps": "train/neuron_steps",  # replaced by the step count below
    "lsnn_late": "withheld/model/mse_late",
    "lsnn_first5": "withheld/model/mse_first",
    "running_mean_late": "withheld/running_mean/mse_late",
    "running_mean_first5": "withheld/running_mean/mse_first",
    "least_squares_late": "withheld/online_least_squares/mse_late",
    "least_squares_first5": "withheld/online_least_squares/mse_first",
    "backprop_late": "withheld/target_architecture_backprop/mse_late",
    "backprop_first5": "withheld/target_architecture_backprop/mse_first",
    "minus_running_mean": "withheld/model_minus_running_mean/mean",
    "minus_running_mean_lo": "withheld/model_minus_running_mean/lo",
    "minus_running_mean_hi": "withheld/model_minus_running_mean/hi",
    "best_val": "val/best_mse_late",
    "best_val_step": "val/best_generation",
    "train_s": "train/elapsed_s",
}


def read_run(uri: str) -> dict:
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], order_by=["attributes.start_time DESC"])
    run = runs[0]
    m = run.data.metrics
    row = {key: pick(m, metric) for key, metric in COLUMNS.items()}  # a run before a key's rename: its old name
    row["steps"] = max(x.step for x in client.get_metric_history(run.info.run_id, "train/grad_norm"))  # steps count from 1
    row.update(run_id=run.info.run_id, seed=int(run.data.params.get("run.seed", -1)), uri=uri,
               status=run.info.status)
    return row


def read_checkpoint(path: str) -> dict:
    from es_l2l.tracking.checkpoint import load_checkpoint
    from es_l2l.families.teacher.baselines import BACKPROP, RUNNING_MEAN
    from es_l2l.context import RunContext
    from es_l2l.families.teacher.report import LSNN_TRAINED, held_out_report

    cfg, genome, genomes, meta = load_checkpoint(path)
    report = held_out_report(cfg.task, RunContext.of(cfg), genome, genomes["initial"], genomes["best"])
    m = report.metrics
    row = {
        "steps": meta.get("generations"), "best_val_step": meta.get("best_generation"), "best_val": float("nan"),
        "train_s": float("nan"), "seed": cfg.run.seed, "uri": str(path), "run_id": None, "status": "checkpoint",
        "minus_running_mean": report.paired["mean"], "minus_running_mean_lo": report.paired["lo"],
        "minus_running_mean_hi": report.paired["hi"],
    }
    for key, name in (("lsnn", LSNN_TRAINED), ("running_mean", RUNNING_MEAN), ("least_squares", "online least squares"),
                      ("backprop", BACKPROP)):
        row[f"{key}_late"], row[f"{key}_first5"] = m[name]["test_mse_late"], m[name]["test_mse_first"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=[], help="MLflow tracking URIs, one finished run each")
    parser.add_argument("--checkpoints", nargs="+", default=[], help="checkpoint files, scored on the held-out tasks here")
    parser.add_argument("--out", type=Path, help="write the rows and the spread as JSON here")
    args = parser.parse_args()
    rows = [read_run(uri) for uri in args.runs] + [read_checkpoint(p) for p in args.checkpoints]
    spread = {}
    for key in ("lsnn_late", "lsnn_first5", "running_mean_late", "least_squares_late", "minus_running_mean",
                "backprop_first5"):
        ci = t_interval([r[key] for r in rows])
        spread[key] = {"mean": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n}
    print("| seed | steps | best val (step) | LSNN 2nd half | LSNN first 5 | running mean 2nd half / first 5 | "
          "online least squares 2nd half / first 5 | LSNN minus running mean [95% CI, 128 episodes] |")
    for r in rows:
        print(f"| {r['seed']} | {r['steps']:,} | {r['best_val']:.4f} ({int(r['best_val_step']):,}) | {r['lsnn_late']:.4f} | "
              f"{r['lsnn_first5']:.4f} | {r['running_mean_late']:.4f} / {r['running_mean_first5']:.4f} | "
              f"{r['least_squares_late']:.4f} / {r['least_squares_first5']:.4f} | {r['minus_running_mean']:+.4f} "
              f"[{r['minus_running_mean_lo']:+.4f}, {r['minus_running_mean_hi']:+.4f}] |")
    for key, s in spread.items():
        print(f"over {s['n']} seeds, {key}: {s['mean']:+.4f} [{s['low']:+.4f}, {s['high']:+.4f}]")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": rows, "over_seeds": spread}, indent=1))


if __name__ == "__main__":
    main()
