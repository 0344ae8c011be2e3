"""Feasibility: seconds per BPTT step (forward + backward) of an LSNN and an LSTM on store-recall.

One population member (P = 1), a store-recall batch from ``StoreRecallTaskConfig`` (reference:
12 symbols of 200 ms, T = 2400 steps, delays 1..11 symbols, expected 1.2 s), the loss being the
recall cross-entropy on each sequence's recall window. The LSNN is half LIF, half ALIF
(tau_a 1200 ms, beta 1.7, n_ref 3), dense weights ``N(0, 1) / sqrt(n_pre)``; the LSTM is sized to
the LSNN's weight count (:func:`es_l2l.models.lstm.lstm_hidden_for`). Prints one JSON line per
model. No training, no optimiser step.

    PYTHONPATH=. python benchmarks/computing_step.py --threads 1 --neurons 20 50
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from es_l2l.families.store_recall import task as store_recall
from es_l2l.families.store_recall.config import StoreRecallTaskConfig
from es_l2l.models.lstm import LSTMParams, init_lstm, lsnn_weight_count, lstm_hidden_for, lstm_param_count, lstm_rollout
from es_l2l.snn.lsnn import LSNNParams, rollout
from es_l2l.seeds import STREAM_INIT, STREAM_TRAIN, generator


def lsnn_params(n_in: int, n: int, gen: torch.Generator) -> list[torch.Tensor]:
    half = n // 2
    w_rec = torch.randn(1, n, n, generator=gen) / math.sqrt(n) * (1 - torch.eye(n))
    return [
        torch.randn(1, n_in, n, generator=gen) / math.sqrt(n_in),  # w_in
        w_rec,
        torch.randn(1, n, 2, generator=gen) / math.sqrt(n),  # w_out
        torch.zeros(1, 2),  # b_out
        torch.full((1, n), math.exp(-1 / 20)),  # alpha
        torch.cat([torch.full((1, half), math.exp(-1 / 20)), torch.full((1, n - half), math.exp(-1 / 1200))], 1),
        torch.full((1, n), 0.01),  # b0
        torch.cat([torch.zeros(1, half), torch.full((1, n - half), 1.7)], 1),  # beta
        torch.full((1, 1), math.exp(-1 / 20)),  # kappa
    ]


def timed(fn, repeats: int) -> tuple[float, float]:
    """Best forward and backward seconds over ``repeats`` calls of ``fn() -> loss``."""
    fwd, bwd = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss = fn()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
    return min(fwd), min(bwd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--neurons", type=int, nargs="*", default=[20, 50])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--symbol-ms", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lstm-hidden", type=int, nargs="*", default=[], help="also time LSTMs of these sizes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = StoreRecallTaskConfig(symbol_ms=args.symbol_ms, batch_size=args.batch)
    t0 = time.perf_counter()
    batch = store_recall.sample(cfg, generator(0, STREAM_TRAIN, 0), cfg.batch_size)
    sample_s = time.perf_counter() - t0
    steps, index = store_recall.readout_union(batch)
    common = dict(T=cfg.n_steps, B=cfg.batch_size, n_in=cfg.n_in, threads=args.threads, sample_s=round(sample_s, 3),
                  mean_delay_ms=float(batch.delay_ms.float().mean()), torch=torch.__version__)

    def time_lstm(hidden: int) -> None:
        lstm = [t.requires_grad_(True) for t in init_lstm(1, cfg.n_in, hidden, 2, generator(1, STREAM_INIT))]

        def lstm_loss():
            y = lstm_rollout(LSTMParams(*lstm), batch.x, steps)
            return store_recall.cross_entropy(store_recall.gather_recall(y, index), batch.targets).sum()

        fwd, bwd = timed(lstm_loss, args.repeats)
        print(json.dumps(dict(model="lstm", hidden=hidden, weights=lstm_param_count(cfg.n_in, hidden, 2),
                              forward_s=round(fwd, 3), backward_s=round(bwd, 3), step_s=round(fwd + bwd, 3), **common)),
              flush=True)

    for n in args.neurons:
        leaves = [t.requires_grad_(True) for t in lsnn_params(cfg.n_in, n, generator(0, STREAM_INIT))]

        def lsnn_loss():
            y = rollout(LSNNParams(*leaves), batch.x, n_ref=3, readout_steps=steps).y
            return store_recall.cross_entropy(store_recall.gather_recall(y, index), batch.targets).sum()

        fwd, bwd = timed(lsnn_loss, args.repeats)
        print(json.dumps(dict(model="lsnn", neurons=n, weights=lsnn_weight_count(cfg.n_in, n, 2),
                              forward_s=round(fwd, 3), backward_s=round(bwd, 3), step_s=round(fwd + bwd, 3), **common)),
              flush=True)
        time_lstm(lstm_hidden_for(lsnn_weight_count(cfg.n_in, n, 2), cfg.n_in, 2))  # same weight count
    for hidden in args.lstm_hidden:
        time_lstm(hidden)


if __name__ == "__main__":
    main()
