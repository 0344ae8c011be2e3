"""The frequent-targets ("Bayesian prior") experiment, read against its control network.

    PYTHONPATH=. python benchmarks/teacher_bayes.py --with RUN_A/checkpoint.pt --without RUN_B/checkpoint.pt \
        --out docs/results/teacher-bayes
    PYTHONPATH=. python benchmarks/teacher_bayes.py --with A0 A1 A2 --without B0 B1 B2 --out DIR   # one pair a seed

``--with``: a network meta-trained with ``task.frequent_targets`` K > 0 (``configs/teacher_bayes.yaml``);
``--without``: the same recipe trained without them (``configs/teacher_shape.yaml``). Both are scored
on the same two held-out groups of the ``--with`` run's task section: ``fresh`` (the ordinary test
tasks) and ``frequent`` (the K networks in turn, the same inputs). The K networks may be easier or
harder than average for any learner (backprop and the untrained network show it), so the prior is
read as a difference of differences on the same episodes: per episode, the with-network's MSE minus
the without-network's; the prior's effect is that gain on the frequent group minus the gain on the
fresh group (Welch CI between the groups, 95%). Writes ``teacher_bayes.json`` and a plot of MSE per
trial (both networks and backprop, both groups, with CIs).

Several pairs (``--with`` and ``--without`` in the same order, e.g. one pair per run seed): each pair is
scored as above on its own ``--with`` run's held-out tasks (``pairs[i]`` in the JSON, a plot each), and
the spread across the pairs is the mean and Student-t 95% interval, over pairs, of each pair's mean
(``across_pairs``): the run-to-run variance beside the within-run intervals.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from es_l2l.tracking.checkpoint import load_checkpoint
from es_l2l.families.teacher.baselines import family_mean, predict_target_backprop
from es_l2l.context import RunContext
from es_l2l.families.teacher.evaluate import evaluate_params, task_batch
from es_l2l.families.teacher.groups import episode_scores
from es_l2l.families.teacher.tasks import TARGETS_FREQUENT, TARGETS_FRESH
from es_l2l.reporting.plots import pyplot, save_figure
from es_l2l.seeds import STREAM_TEST
from es_l2l.reporting.stats import normal_band, normal_interval, t_interval, welch_normal_interval

GROUPS = (("fresh", TARGETS_FRESH), ("frequent", TARGETS_FREQUENT))


def held_out(cfg, episodes: int) -> dict:
    """The two held-out groups of ``cfg.task``: group -> tasks (the same inputs, fresh or frequent networks)."""
    return {g: task_batch(cfg.task, (cfg.run.seed, STREAM_TEST), episodes, targets=t) for g, t in GROUPS}


@torch.no_grad()
def lsnn_errors(path: str, task, groups: dict) -> dict[str, torch.Tensor]:
    """The best genome of a checkpoint, run on ``task``'s groups: squared errors per group (B, n_trials)."""
    cfg, genome, genomes, _ = load_checkpoint(path)
    cfg = cfg.model_copy(update={"task": task})
    params = genome.params(genomes["best"][None].to(cfg.run.device))
    return {g: (evaluate_params(cfg.task, RunContext.of(cfg), params, t).predictions[0].cpu().double() - t.y.double()).pow(2) for g, t in groups.items()}


def backprop_errors(cfg, groups: dict) -> dict[str, torch.Tensor]:
    """Target-architecture backprop (no prior) on the same groups: squared errors per group (B, n_trials)."""
    prior = family_mean(cfg.task, cfg.run.seed)
    return {g: (predict_target_backprop(cfg.task, t.x, t.y, prior, cfg.run.seed).double() - t.y.double()).pow(2)
            for g, t in groups.items()}


def score_pair(with_: str, without: str, episodes: int, out: Path) -> dict:
    """One with / without pair on the with-run's held-out groups: scores, the prior's effect, a plot."""
    cfg = load_checkpoint(with_)[0]
    task = cfg.task
    if task.frequent_targets <= 0:
        raise SystemExit(f"{with_}: --with must be a run with task.frequent_targets > 0")
    groups = held_out(cfg, episodes)  # sampled once, scored by every learner
    nets = {
        "with frequent networks": lsnn_errors(with_, task, groups),
        "without (control)": lsnn_errors(without, task, groups),
        "target-architecture backprop": backprop_errors(cfg, groups),
    }
    result: dict = {"with": with_, "without": without, "seed": cfg.run.seed, "task": task.model_dump(),
                    "episodes": episodes, "scores": {}, "prior_effect": {}}
    for name, errors in nets.items():
        result["scores"][name] = {g: {k: normal_interval(v).as_dict() for k, v in episode_scores(e).items()} for g, e in errors.items()}
    a, b = nets["with frequent networks"], nets["without (control)"]
    gain = {g: episode_scores(a[g] - b[g]) for g in ("fresh", "frequent")}  # per episode, same tasks: with minus without
    for k in gain["fresh"]:
        result["prior_effect"][k] = {
            "gain_fresh": normal_interval(gain["fresh"][k]).as_dict(),
            "gain_frequent": normal_interval(gain["frequent"][k]).as_dict(),
            "frequent_minus_fresh": welch_normal_interval(gain["frequent"][k], gain["fresh"][k]).as_dict(),
        }
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=120, sharey=True)
    for ax, (name, errors) in zip(axes, nets.items()):
        for g, color in (("fresh", "C0"), ("frequent", "C3")):
            mean, lo, hi = normal_band(errors[g])
            t = torch.arange(1, mean.numel() + 1)
            ax.plot(t, mean, color=color, label=g)
            ax.fill_between(t, lo, hi, color=color, alpha=0.2)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("trial")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"MSE per trial ({episodes} held-out episodes, 95% CI)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{task.frequent_targets} frequent networks (frequent_seed {task.frequent_seed}, "
                 f"{task.frequent_share:.0%} of training episodes) vs fresh networks, run seed {cfg.run.seed}")
    save_figure(fig, out)
    return result


def across_pairs(pairs: list[dict]) -> dict:
    """Mean and Student-t 95% interval over the pairs of each pair's mean (scores and prior effect)."""
    first = pairs[0]
    scores = {name: {g: {k: t_interval([p["scores"][name][g][k]["mean"] for p in pairs]).as_dict() for k in sc}
                     for g, sc in groups.items()} for name, groups in first["scores"].items()}
    effect = {k: {part: t_interval([p["prior_effect"][k][part]["mean"] for p in pairs]).as_dict() for part in v}
              for k, v in first["prior_effect"].items()}
    return {"n": len(pairs), "scores": scores, "prior_effect": effect}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--with", dest="with_", nargs="+", required=True, help="checkpoint(s) of runs trained with the frequent networks")
    ap.add_argument("--without", nargs="+", required=True, help="checkpoint(s) of the same recipe trained without them (the controls), in the same order")
    ap.add_argument("--episodes", type=int, default=128)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if len(args.with_) != len(args.without):
        raise SystemExit(f"--with has {len(args.with_)} checkpoints and --without {len(args.without)}: pass one control per run")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    single = len(args.with_) == 1
    pairs = [score_pair(w, c, args.episodes, out / ("teacher_bayes_mse_per_trial.png" if single else f"teacher_bayes_mse_per_trial_{i}.png"))
             for i, (w, c) in enumerate(zip(args.with_, args.without))]
    result = pairs[0] if single else {"pairs": pairs, "across_pairs": across_pairs(pairs)}
    (out / "teacher_bayes.json").write_text(json.dumps(result, indent=1))
    for p in pairs:
        print(f"pair {p['with']} / {p['without']} (seed {p['seed']}, frequent_seed {p['task']['frequent_seed']}):")
        for k, v in p["prior_effect"].items():
            d = v["frequent_minus_fresh"]
            print(f"  {k}: gain fresh {v['gain_fresh']['mean']:+.4f}, gain frequent {v['gain_frequent']['mean']:+.4f}, "
                  f"prior effect {d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]")
        for name, groups in p["scores"].items():
            print("  ", name, {g: {k: round(s["mean"], 4) for k, s in sc.items()} for g, sc in groups.items()})
    if not single:
        for k, v in result["across_pairs"]["prior_effect"].items():
            print(f"across {len(pairs)} pairs, {k}: " + ", ".join(f"{part} {d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]" for part, d in v.items()))


if __name__ == "__main__":
    main()
