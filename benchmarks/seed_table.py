"""Runs of an MLflow store as one markdown table, and paired differences over seeds between arms.

Reads the store directly (SQLite, read-only): per finished run its name, seed, outer loop, steps,
training seconds, neuron-steps, best validation value and held-out test value; per arm (run name,
or the name with a prefix stripped) the mean and 95% t-interval over seeds; per pair of arms the
paired difference over the seeds both have (es_l2l.reporting.stats, what ``es-l2l compare --seeds`` uses).
Arms of different ``es-l2l compare`` invocations, and of several stores (``--db`` repeated), pair as well, which is how arms of equal steps
but unequal neuron-steps per step (an LSTM's units against an LSNN's neurons) are compared.

    PYTHONPATH=. python benchmarks/seed_table.py --db res/mlflow.db --test withheld/model/recall_error \
        --val val/best_recall_error --arm store-recall-lsnn-bptt --arm store-recall-lstm-bptt

``--test`` is today's key; a run logged before the held-out group's rename is read under its old
``test/...`` name; ``--test test/...`` fails in one line naming the new key.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys

from es_l2l.reporting.stats import paired_t_interval, t_interval
from es_l2l.tracking.metric_keys import old_name, refuse_old


def runs(dbs: list[str], names: list[str], test: str, val: str, best: str = "min") -> list[dict]:
    out = []
    for db in dbs:
        out += _runs(db, names, test, val, best)
    return sorted(out, key=lambda r: (names.index(r["name"]), r["seed"]))


def _runs(db: str, names: list[str], test: str, val: str, best: str) -> list[dict]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out = []
    q = "select run_uuid, name, start_time from runs where status='FINISHED' and name in ({})".format(",".join("?" * len(names)))
    for uuid, name, start in con.execute(q, names):
        def metric(key, how="max"):  # under today's key, else its name before the held-out group's rename
            for name in filter(None, (key, old_name(key))):
                row = con.execute(f"select {how}(value) from metrics where run_uuid=? and key=?", (uuid, name)).fetchone()
                if row[0] is not None:
                    return row[0]
            return None

        def param(key):
            row = con.execute("select value from params where run_uuid=? and key=?", (uuid, key)).fetchone()
            return row[0] if row else None

        if metric(test) is None:
            continue
        steps = con.execute("select max(step) from metrics where run_uuid=? and key='train/elapsed_s'", (uuid,)).fetchone()[0]
        out.append({
            "name": name, "seed": int(param("run.seed")), "outer": param("outer"), "run_id": uuid[:8], "steps": steps,
            "train_s": metric("train/elapsed_s"), "neuron_steps": metric("train/neuron_steps"),
            "val": metric(val, best), "test": metric(test), "test_long": metric(test + "_long"), "start": start, "db": db,
        })
    return out


def plot(args, rows: list[dict]) -> None:
    from es_l2l.reporting.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    color = {a: f"C{i}" for i, a in enumerate(args.arm)}
    for r in rows:
        con = sqlite3.connect(f"file:{r['db']}?mode=ro", uri=True)
        uuid = con.execute("select run_uuid from runs where run_uuid like ?", (r["run_id"] + "%",)).fetchone()[0]
        pts = con.execute("select step, value from metrics where run_uuid=? and key=? order by step", (uuid, args.curve)).fetchall()
        if args.against == "seconds":  # each point at the training time logged with its step
            at = dict(con.execute("select step, value from metrics where run_uuid=? and key='train/elapsed_s'", (uuid,)).fetchall())
            pts = [(at[k], v) for k, v in pts if k in at]
        first = r is next(x for x in rows if x["name"] == r["name"])
        ax.plot([p[0] for p in pts], [p[1] * args.scale for p in pts], color=color[r["name"]], lw=1.2,
                label=r["name"] if first else None)
    ax.set_xlabel("gradient steps" if args.against == "steps" else "training seconds")
    ax.set_ylabel(args.curve + (" (%)" if args.scale == 100 else ""))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, args.plot)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", action="append", required=True, help="an MLflow SQLite store (repeat: arms of several stores)")
    ap.add_argument("--arm", action="append", required=True, help="a run name (repeat)")
    ap.add_argument("--test", default="withheld/model/recall_error")
    ap.add_argument("--val", default="val/best_recall_error")
    ap.add_argument("--val-best", choices=("min", "max"), default="min", help="best validation is the run's min (an error) or max (an accuracy)")
    ap.add_argument("--scale", type=float, default=100.0, help="multiply values (100: percent)")
    ap.add_argument("--plot", help="also plot each run's validation curve (--curve) against steps into this PNG")
    ap.add_argument("--curve", default="val/recall_error")
    ap.add_argument("--against", choices=("steps", "seconds"), default="steps", help="the curves' x axis")
    args = ap.parse_args()
    try:
        for flag, key in (("--test", args.test), ("--val", args.val), ("--curve", args.curve)):
            refuse_old(key, flag)
    except ValueError as exc:
        print(f"seed_table: {exc}", file=sys.stderr)
        sys.exit(2)
    rows = runs(args.db, args.arm, args.test, args.val, args.val_best)
    if args.plot:
        plot(args, rows)
    s = args.scale
    print("| arm | seed | run | steps | training s | neuron-steps | best val | test | test, delays >= 1 s |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        long = f"{r['test_long'] * s:.1f}" if r["test_long"] is not None else ""
        print(f"| {r['name']} | {r['seed']} | {r['run_id']} | {r['steps']} | {r['train_s']:.0f} | {r['neuron_steps']:.3g} | "
              f"{r['val'] * s:.1f} | {r['test'] * s:.1f} | {long} |")
    by = {a: {r["seed"]: r["test"] * s for r in rows if r["name"] == a} for a in args.arm}
    print("\n| arm or pair | seeds | mean | 95% CI |")
    print("| --- | ---: | ---: | --- |")
    for a, v in by.items():
        if v:
            ci = t_interval(list(v.values()))
            print(f"| {a} | {ci.n} | {ci.mean:.2f} | {ci.low:.2f} to {ci.high:.2f} |")
    for i, a in enumerate(args.arm):
        for b in args.arm[i + 1:]:
            common = sorted(set(by[a]) & set(by[b]))
            if len(common) >= 2:
                d = paired_t_interval([by[a][k] for k in common], [by[b][k] for k in common])
                print(f"| {a} minus {b} (paired) | {d.n} | {d.mean:+.2f} | {d.low:+.2f} to {d.high:+.2f} |")


if __name__ == "__main__":
    main()
