"""The non-spiking control for the teacher family: an LSTM meta-learner on es-l2l's own tasks.

Trains one LSTM (``es_l2l.models.lstm``: 128 units, one linear readout) by Adam on the teacher
family's tasks, drawn exactly as the LSNN's are (``sample_tasks`` with the run seed's training,
validation and test streams), keeps the parameters with the best validation MSE over the second
half of the episode, and scores them on the same held-out test tasks as the LSNN's report
(``(seed, STREAM_TEST)``, ``run.validation_tasks`` of them) beside the running mean, with the
paired 95% confidence interval of the per-episode difference.

Two input encodings, one step per trial (30 steps an episode):

* ``analog``: ``(x1 / input_range, x2 / input_range, y_prev, first-trial flag)``;
* ``spikes``: the LSNN's own input spike trains (``tasks.spikes``), counted per trial and divided
  by the peak count (``max_rate_hz * trial_ms / 1000``): for Poisson spikes at a rate constant
  within a trial the count is all the train says about the rate, so this is the information the
  LSNN receives, at the LSNN's own noise. No flag: as for the LSNN, a silent target population
  marks the first trial.

Usage (from the repository root)::

    python benchmarks/teacher_lstm_control.py --inputs analog --seconds 600 --out result.json
    python benchmarks/teacher_lstm_control.py --inputs spikes --seconds 600 --out result.json

Any ``--set key=value`` is a config override as on the CLI (e.g. ``task.neurons_per_variable=50``).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from es_l2l.config import load_config
from es_l2l.families.teacher import tasks as teacher
from es_l2l.families.teacher.baselines import family_mean, predict_running_mean
from es_l2l.models.lstm import init_lstm, lstm_rollout
from es_l2l.seeds import STREAM_INIT, STREAM_TEST, STREAM_TRAIN, STREAM_VALIDATION, generator
from es_l2l.reporting.stats import paired_normal_interval


def lstm_inputs(cfg, tasks: teacher.TeacherTasks, kind: str) -> torch.Tensor:
    """(B, n_trials, n_features) inputs of one LSTM step per trial."""
    if kind == "analog":
        y_prev = torch.cat([torch.zeros_like(tasks.y[:, :1]), tasks.y[:, :-1]], dim=1)
        first = torch.zeros_like(tasks.y)
        first[:, 0] = 1.0
        return torch.cat([tasks.x / cfg.input_range, y_prev[..., None], first[..., None]], dim=-1)
    batch, steps, n_in = tasks.spikes.shape
    counts = tasks.spikes.reshape(batch, cfg.n_trials, cfg.trial_ms, n_in).sum(2)
    return counts / (cfg.max_rate_hz * cfg.trial_ms * 1e-3)


def train_inputs(cfg, tasks: teacher.TeacherTasks, kind: str, gen: torch.Generator) -> torch.Tensor:
    """Training inputs, drawn faster: spike counts per trial as Binomial(trial_ms, p) draws, the
    distribution of the counts of ``tasks.spikes`` (validation and test use the real spike trains)."""
    if kind == "analog":
        return lstm_inputs(cfg, tasks, kind)
    prob = teacher.trial_probabilities(cfg, tasks.x, tasks.y)  # (B, n_trials, n_in)
    counts = torch.binomial(torch.full_like(prob, float(cfg.trial_ms)), prob, generator=gen)
    return counts / (cfg.max_rate_hz * cfg.trial_ms * 1e-3)


def per_episode_late(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) MSE over the second half of each episode."""
    n = y.shape[1]
    return (pred - y).pow(2)[:, n // 2 :].mean(dim=1)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", choices=["analog", "spikes"], default="analog")
    ap.add_argument("--config", default="configs/teacher_bptt.yaml")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=600.0, help="training wall time, validation excluded")
    ap.add_argument("--max-steps", type=int, default=10**9)
    ap.add_argument("--validate-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    task, seed, n_val = cfg.task, cfg.run.seed, cfg.run.validation_tasks

    val = teacher.sample_tasks(task, generator(seed, STREAM_VALIDATION), n_val)
    test = teacher.sample_tasks(task, generator(seed, STREAM_TEST), n_val)
    val_in, test_in = lstm_inputs(task, val, args.inputs), lstm_inputs(task, test, args.inputs)
    n_feat = val_in.shape[-1]
    params = init_lstm(1, n_feat, args.hidden, 1, generator(seed, STREAM_INIT, 99))
    leaves = [p.clone().requires_grad_(True) for p in params]
    opt = torch.optim.Adam(leaves, lr=args.lr)

    def predict(inputs):
        return lstm_rollout(type(params)(*leaves), inputs)[0, ..., 0]  # (B, n_trials)

    def late(inputs, tasks):
        with torch.no_grad():
            return float(per_episode_late(predict(inputs), tasks.y).mean())

    history, best = [], (float("inf"), 0, [p.detach().clone() for p in leaves])
    train_s, step = 0.0, 0
    while train_s < args.seconds and step < args.max_steps:
        t0 = time.perf_counter()
        gen = generator(seed, STREAM_TRAIN, step + 1)
        batch = teacher.sample_tasks(task, gen, args.batch, spikes=False)
        opt.zero_grad(set_to_none=True)
        loss = (predict(train_inputs(task, batch, args.inputs, gen)) - batch.y).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(leaves, 1.0)
        opt.step()
        step += 1
        train_s += time.perf_counter() - t0
        if step % args.validate_every == 0:
            v = late(val_in, val)
            history.append({"step": step, "seconds": round(train_s, 1), "train_mse": float(loss.detach()), "val_mse_late": v})
            print(json.dumps(history[-1]), flush=True)
            if v < best[0]:
                best = (v, step, [p.detach().clone() for p in leaves])

    for leaf, value in zip(leaves, best[2]):
        leaf.data.copy_(value)
    with torch.no_grad():
        pred = predict(test_in)
    err = (pred - test.y).pow(2)
    k = max(1, task.n_trials // 6)
    running = predict_running_mean(test.y, family_mean(task, seed))
    diff = paired_normal_interval(per_episode_late(pred, test.y), per_episode_late(running, test.y)).as_dict()
    result = {
        "inputs": args.inputs,
        "hidden": args.hidden,
        "lr": args.lr,
        "batch": args.batch,
        "overrides": args.overrides,
        "steps": step,
        "train_seconds": round(train_s, 1),
        "best_val_mse_late": best[0],
        "best_step": best[1],
        "test_mse_late": float(err[:, task.n_trials // 2 :].mean()),
        f"test_mse_first{k}": float(err[:, :k].mean()),
        "test_mse": float(err.mean()),
        "running_mean_test_mse_late": float(per_episode_late(running, test.y).mean()),
        "diff_vs_running_mean": diff,
        "history": history,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
