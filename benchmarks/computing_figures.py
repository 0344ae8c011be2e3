"""Figures and numbers of docs/results/computing.md from the MLflow store of the computing runs.

    PYTHONPATH=. python benchmarks/computing_figures.py --db /tmp/wt18b/res/mlflow.db --out docs/results/computing
    PYTHONPATH=. python benchmarks/computing_figures.py --db a/mlflow.db --db b/mlflow.db ... --out docs/results/computing

Store-recall: recall error against delay of every store-recall run (trained network) beside the
"last bit seen" baseline and chance; sMNIST: validation accuracy against training time. Copies each
run's spike raster and writes ``store_recall_summary.json`` / ``smnist_summary.json`` (the test
metrics of the latest run of each name, over every ``--db`` given); a figure and summary are written
only for a family whose runs are in the stores.
Reads stores of every naming: runs logged with today's grouped keys (``val/accuracy``,
``withheld/model/recall_error``), runs with the held-out group's name before (``test/model/recall_error``)
and older runs with flat names (``val_accuracy``, ``test_recall_error``); ``summary.json`` uses today's
keys for all (the summaries committed before the rename hold ``test/...`` keys).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from es_l2l.tracking.metric_keys import HELD_OUT, grouped, withheld
from es_l2l.tracking.metric_keys import history as metric_history
from es_l2l.reporting.plots import pyplot, save_figure


def latest_runs(client: MlflowClient) -> dict[str, object]:
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], order_by=["attributes.start_time ASC"])
    out = {}
    for r in runs:
        if r.info.status == "FINISHED" and r.data.tags.get("es_l2l.compare") != "parent":
            out[r.info.run_name] = r
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True, action="append", help="an MLflow sqlite store (repeatable)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs, clients = {}, {}
    for db in args.db:
        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        for name, r in latest_runs(client).items():
            runs[name], clients[name] = r, client
    summary = {}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    fig2, ax2 = plt.subplots(figsize=(7, 4.2), dpi=120)
    baseline_done = False
    for i, (name, r) in enumerate(sorted(runs.items())):
        client = clients[name]
        m = {grouped(k): v for k, v in r.data.metrics.items()}  # an older run's flat names as today's keys
        hist_key = "val/recall_error" if withheld("model", "recall_error") in m else "val/accuracy"
        history = metric_history(client, r.info.run_id, hist_key)
        elapsed = {h.step: h.value for h in metric_history(client, r.info.run_id, "train/elapsed_s")}
        summary[name] = {k: v for k, v in m.items() if k.startswith(HELD_OUT + "/")}
        summary[name].update(run_id=r.info.run_id, outer=r.data.params.get("outer"), kind=r.data.params.get("model.kind"),
                             steps=int(max(h.step for h in history)), train_s=max(elapsed.values()) if elapsed else None,
                             best_val=(min if hist_key == "val/recall_error" else max)(h.value for h in history))
        with tempfile.TemporaryDirectory() as tmp:
            names = {a.path for a in client.list_artifacts(r.info.run_id)}
            if "raster.png" in names:
                shutil.copy(client.download_artifacts(r.info.run_id, "raster.png", tmp), out / f"raster_{name}.png")
            if "recall_error_by_delay.csv" in names:
                rows = list(csv.DictReader(open(client.download_artifacts(r.info.run_id, "recall_error_by_delay.csv", tmp))))
                d = [int(x["delay_ms"]) / 1000 for x in rows]
                ax.plot(d, [float(x["trained"]) for x in rows], marker="o", lw=2, color=f"C{i}", label=f"{name}")
                if not baseline_done:
                    ax.plot(d, [float(x["last bit seen"]) for x in rows], ls="--", color="0.3", lw=1, label="last bit seen")
                    ax.plot(d, [0.5] * len(d), ls=":", color="0.5", lw=1, label="chance")
                    baseline_done = True
                summary[name]["by_delay"] = {x["delay_ms"]: float(x["trained"]) for x in rows}
        if hist_key == "val/accuracy":
            ax2.plot([elapsed.get(h.step, float("nan")) / 60 for h in history], [h.value for h in history], marker=".",
                     color=f"C{i}", label=name)
    families = {"store_recall": [n for n, v in summary.items() if withheld("model", "recall_error") in v],
                "smnist": [n for n, v in summary.items() if withheld("model", "accuracy") in v]}
    if families["store_recall"]:
        ax.set_xlabel("store-to-recall delay (s)")
        ax.set_ylabel("recall error, 1,000 held-out sequences")
        ax.set_ylim(-0.02, 0.7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title("Store-recall: recall error against delay")
        save_figure(fig, out / "store_recall_error_by_delay.png")
    if families["smnist"]:
        ax2.set_xlabel("training wall time (min)")
        ax2.set_ylabel("validation accuracy (200 val digits)")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
        ax2.set_title("Sequential MNIST: accuracy against training time")
        save_figure(fig2, out / "smnist_accuracy_vs_time.png")
    for family, names in families.items():
        if names:
            (out / f"{family}_summary.json").write_text(json.dumps({n: summary[n] for n in names}, indent=1, sort_keys=True))
    print(json.dumps({k: {kk: v[kk] for kk in v if kk != "by_delay"} for k, v in summary.items()}, indent=1))

if __name__ == "__main__":
    main()
