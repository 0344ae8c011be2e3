"""The frequent-targets ("Bayesian prior") experiment's held-out split: frequent networks against fresh ones.

With ``task.frequent_targets`` K > 0 a training episode's target network is one of K fixed networks
with probability ``task.frequent_share`` (see :mod:`es_l2l.families.teacher.tasks`). A meta-learner
that has absorbed that prior should learn those K networks faster within an episode than fresh
ones. Target-architecture backprop has no prior (its initialisation does not depend on the targets)
and is the control: a difference it shows is one of difficulty (the K networks happen to be easier
or harder than the family's average), not of prior.

Two held-out groups of ``run.validation_tasks`` episodes each: ``fresh`` (the ordinary test tasks,
a fresh network per episode) and ``frequent`` (the K networks in turn, equally often, on the same
inputs x as the fresh group: same generator keys, only the networks differ). Per group and
predictor: MSE per trial with a 95% CI over episodes (normal approximation), and the per-episode
MSE over all trials, the second half and the first :data:`FIRST_TRIALS` trials, mean and CI. Between
the groups: the unpaired (Welch, normal approximation) difference frequent minus fresh of those
per-episode scores, for each predictor and for the LSNN's per-episode excess over backprop (a
difference of differences: the LSNN's frequent-vs-fresh gap net of the networks' difficulty).
"""

from __future__ import annotations

import re

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from es_l2l.families.teacher.baselines import (
    BACKPROP,
    RUNNING_MEAN,
    family_mean,
    predict_running_mean,
    predict_target_backprop,
)
from es_l2l.families.teacher.evaluate import LSNN_TRAINED, LSNN_UNTRAINED, evaluate_params, model_name, task_batch
from es_l2l.families.teacher.tasks import TARGETS_FREQUENT, TeacherTasks
from es_l2l.tracking.metric_keys import withheld, withheld_key
from es_l2l.reporting.plots import pyplot, save_figure
from es_l2l.seeds import STREAM_TEST, SeedKey
from es_l2l.reporting.stats import normal_band, normal_interval, welch_normal_interval

if TYPE_CHECKING:
    from es_l2l.context import RunContext
    from es_l2l.families.teacher.config import TeacherConfig
    from es_l2l.families.base import Decoder

GROUP_FRESH, GROUP_FREQUENT = "fresh", "frequent"
GROUPS = (GROUP_FRESH, GROUP_FREQUENT)
PREDICTORS = (LSNN_TRAINED, LSNN_UNTRAINED, BACKPROP, RUNNING_MEAN)
# Per-episode contrasts on the same episode (their frequent-minus-fresh difference is a difference of
# differences: the LSNN's gap net of what the networks' difficulty does to a learner without the prior).
LSNN_EXCESS, LSNN_GAIN = "LSNN minus backprop", "LSNN minus generation 0"
CONTRASTS = {LSNN_EXCESS: (LSNN_TRAINED, BACKPROP), LSNN_GAIN: (LSNN_TRAINED, LSNN_UNTRAINED)}
FIRST_TRIALS = 5
SCORES = ("test_mse", "test_mse_late", f"test_mse_first{FIRST_TRIALS}")
MAX_NETWORK_METRICS = 8  # per-network metrics only for K up to this


def episode_scores(sq_err: torch.Tensor) -> dict[str, torch.Tensor]:
    """Squared errors (B, n_trials) -> per-episode MSE (B,) over all trials, the second half and the first trials."""
    n = sq_err.shape[1]
    return {
        SCORES[0]: sq_err.mean(dim=1),
        SCORES[1]: sq_err[:, n // 2 :].mean(dim=1),
        SCORES[2]: sq_err[:, : min(FIRST_TRIALS, n)].mean(dim=1),
    }


def squared_errors(preds: dict[str, torch.Tensor], y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The :data:`PREDICTORS`' predictions (B, n_trials) -> their squared errors (B, n_trials)."""
    return {name: (preds[name].to(y.dtype) - y).pow(2) for name in PREDICTORS}


@dataclass
class GroupSplit:
    """Squared errors of each predictor on the two held-out groups, and what follows from them."""

    sq_err: dict[str, dict[str, torch.Tensor]]  # group -> predictor -> (B, n_trials)
    which: torch.Tensor  # (B,) the frequent group's network per episode
    n_networks: int  # K
    share: float  # task.frequent_share of the training episodes
    model: str = "LSNN"  # the trained model kind in words (evaluate.model_name): what tables and sentences call it

    def named(self, text: str) -> str:
        """``text`` with the trained network called by its model kind (the keys stay kind-free)."""
        return re.sub(r"\bLSNN\b", self.model, text)

    def scores(self, group: str, predictor: str) -> dict[str, torch.Tensor]:
        """Per-episode scores (B,) of a predictor (or a :data:`CONTRASTS` name) on a group."""
        if predictor in CONTRASTS:
            mine, theirs = (self.scores(group, p) for p in CONTRASTS[predictor])
            return {k: mine[k] - theirs[k] for k in mine}
        return episode_scores(self.sq_err[group][predictor])

    def summary(self) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
        """group -> predictor -> score -> mean and 95% CI over the group's episodes."""
        return {g: {p: {k: normal_interval(v).as_dict() for k, v in self.scores(g, p).items()} for p in PREDICTORS} for g in GROUPS}

    def differences(self) -> dict[str, dict[str, dict[str, float]]]:
        """predictor (and each of :data:`CONTRASTS`) -> score -> frequent minus fresh, unpaired, with its 95% CI."""
        out = {}
        for p in (*PREDICTORS, *CONTRASTS):
            freq, fresh = self.scores(GROUP_FREQUENT, p), self.scores(GROUP_FRESH, p)
            out[p] = {k: welch_normal_interval(freq[k], fresh[k]).as_dict() for k in SCORES}
        return out

    def test_metrics(self) -> dict[str, float]:
        """The MLflow keys: ``withheld/<predictor>/<group>_<score>`` (``.lo``/``.hi``: its 95% CI) for groups
        ``fresh``, ``frequent`` and ``frequent_minus_fresh``, ``withheld/<predictor>/frequent_network_<k>_mse_late``
        (K <= 8), ``withheld/groups/episodes`` (per group) and ``withheld/groups/networks`` (K)."""
        out = {withheld("groups", "episodes"): float(self.which.numel()), withheld("groups", "networks"): float(self.n_networks)}

        def put(who: str, where: str, score: str, ci: dict[str, float]) -> None:
            key = withheld_key(who, f"{where}_{score.removeprefix('test_')}")
            out.update({key: ci["mean"], f"{key}.lo": ci["lo"], f"{key}.hi": ci["hi"]})

        for g, rows in self.summary().items():
            for p, scores in rows.items():
                for k, ci in scores.items():
                    put(p, g, k, ci)
        for p, scores in self.differences().items():
            for k, ci in scores.items():
                put(p, "frequent_minus_fresh", k, ci)
        if self.n_networks <= MAX_NETWORK_METRICS:
            for p in (LSNN_TRAINED, BACKPROP):
                late = self.scores(GROUP_FREQUENT, p)[SCORES[1]]
                for k in range(self.n_networks):
                    if bool((self.which == k).any()):
                        out[withheld_key(p, f"frequent_network_{k}_mse_late")] = float(late[self.which == k].mean())
        return out

    def to_csv(self) -> str:
        """MSE per trial with its 95% CI, one row per group, predictor and trial."""
        lines = ["group,predictor,trial,mse,lo,hi,episodes"]
        for g in GROUPS:
            for p in PREDICTORS:
                e = self.sq_err[g][p]
                mean, lo, hi = normal_band(e)
                lines += [f"{g},{self.named(p)},{i + 1},{float(mean[i]):.6g},{float(lo[i]):.6g},{float(hi[i]):.6g},{e.shape[0]}"
                          for i in range(len(mean))]
        return "\n".join(lines) + "\n"

    def verdict(self) -> str:
        return self.named(group_verdict(self))

    def table(self):
        from rich.table import Table

        n = self.sq_err[GROUP_FRESH][LSNN_TRAINED].shape[1]
        table = Table(title=f"Frequent ({self.n_networks} fixed networks) vs fresh target networks "
                            f"({self.which.numel()} episodes each x {n} trials); 95% CI over episodes")
        table.add_column("predictor")
        table.add_column("group")
        for col in ("second half", f"first {min(FIRST_TRIALS, n)}"):
            table.add_column(f"MSE {col}", justify="right")
        summary, diffs = self.summary(), self.differences()
        fmt = lambda ci: f"{ci['mean']:.4f} [{ci['lo']:.4f}, {ci['hi']:.4f}]"  # noqa: E731
        for p in PREDICTORS:
            for g in GROUPS:
                style = "bold" if p == LSNN_TRAINED else None
                table.add_row(self.named(p), g, *(fmt(summary[g][p][k]) for k in SCORES[1:]), style=style)
            table.add_row(self.named(p), "frequent - fresh", *(fmt(diffs[p][k]) for k in SCORES[1:]))
        for c in CONTRASTS:
            table.add_row(self.named(c), "frequent - fresh", *(fmt(diffs[c][k]) for k in SCORES[1:]))
        return table


@torch.no_grad()
def group_split(
    task: TeacherConfig,
    ctx: RunContext,
    genome: Decoder,
    initial: torch.Tensor,
    trained: torch.Tensor,
    fresh: TeacherTasks,
    fresh_preds: dict[str, torch.Tensor],
) -> GroupSplit:
    """The split of the held-out report: ``fresh`` are its test tasks and ``fresh_preds`` the
    :data:`PREDICTORS`' predictions (B, n_trials) on them (already computed by the report); the
    frequent group is scored here on the same keys' tasks with the K networks in turn."""
    seed = ctx.seed
    tasks = task_batch(task, SeedKey(seed, STREAM_TEST), fresh.batch, targets=TARGETS_FREQUENT)
    ev = evaluate_params(task, ctx, genome.params(torch.stack([initial, trained]).to(ctx.device)), tasks)
    prior = family_mean(task, seed)
    preds = {
        LSNN_TRAINED: ev.predictions[1].cpu(),
        LSNN_UNTRAINED: ev.predictions[0].cpu(),
        BACKPROP: predict_target_backprop(task, tasks.x, tasks.y, prior, seed),
        RUNNING_MEAN: predict_running_mean(tasks.y, prior),
    }
    errors = {GROUP_FRESH: squared_errors(fresh_preds, fresh.y), GROUP_FREQUENT: squared_errors(preds, tasks.y)}
    return GroupSplit(errors, tasks.which, task.frequent_targets, task.frequent_share, model_name(ctx))


def difference_words(d: dict[str, float]) -> str:
    """Where a frequent-minus-fresh difference's 95% CI lies, in words."""
    if d["hi"] < 0:
        return "lower on the frequent networks (CI excludes zero)"
    if d["lo"] > 0:
        return "higher on the frequent networks (CI excludes zero)"
    return "no difference distinguishable at 95%"


def group_verdict(split: GroupSplit) -> str:
    """Plain sentences: does the LSNN learn the frequent networks faster, does backprop (no prior) show
    a difference, and how much of the LSNN's gap the networks' difficulty alone would give."""
    d = split.differences()
    first, late = SCORES[2], SCORES[1]
    n_first = min(FIRST_TRIALS, split.sq_err[GROUP_FRESH][LSNN_TRAINED].shape[1])

    def numbers(p: str) -> str:
        f, la = d[p][first], d[p][late]
        return (f"{p} {f['mean']:+.4f} (95% CI {f['lo']:+.4f} to {f['hi']:+.4f}) over the first {n_first} trials, "
                f"{la['mean']:+.4f} ({la['lo']:+.4f} to {la['hi']:+.4f}) over the second half")

    def words(p: str) -> str:
        return f"first {n_first} trials: {difference_words(d[p][first])}; second half: {difference_words(d[p][late])}"

    def differs(p: str) -> bool:
        return any(d[p][k]["hi"] < 0 or d[p][k]["lo"] > 0 for k in (first, late))

    trained = (f"{split.share:.0%} of the training episodes" if split.share > 0
               else "none of the training episodes (a control: trained without them)")
    lsnn_faster = d[LSNN_TRAINED][first]["hi"] < 0 or d[LSNN_TRAINED][late]["hi"] < 0
    parts = [
        f"Frequent vs fresh target networks ({split.n_networks} fixed networks in {trained}; "
        f"{split.which.numel()} held-out episodes per group, same inputs), MSE per episode, frequent minus fresh: "
        f"{numbers(LSNN_TRAINED)}; {numbers(BACKPROP)}.",
        f"The meta-trained LSNN {'learns' if lsnn_faster else 'does not learn'} the frequent networks faster "
        f"({words(LSNN_TRAINED)}).",
        f"Backprop, which has no prior, {'shows a difference too' if differs(BACKPROP) else 'shows no difference'} "
        f"({words(BACKPROP)}).",
    ]
    def net(c: str) -> str:
        return " and ".join(f"{d[c][k]['mean']:+.4f} ({difference_words(d[c][k])})" for k in (first, late))

    if differs(BACKPROP) or differs(LSNN_UNTRAINED):
        parts.append(
            f"So the frequent networks differ in difficulty from fresh ones (the untrained LSNN, generation 0: "
            f"{words(LSNN_UNTRAINED)}). Net of that, frequent minus fresh (first {n_first} trials and second half) of the "
            f"LSNN's per-episode MSE minus generation 0's: {net(LSNN_GAIN)}; minus backprop's: {net(LSNN_EXCESS)}. "
            "The clean control is the same run with task.frequent_share=0."
        )
    return " ".join(parts)


def plot_groups(split: GroupSplit, path: str | Path, title: str = "") -> Path:
    """MSE per trial, frequent vs fresh, for the LSNN and for backprop (one panel each), with 95% CI bands."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120, sharey=True)
    colors = {GROUP_FRESH: "C0", GROUP_FREQUENT: "C3"}
    floor = min(float(split.sq_err[g][p].mean(dim=0).min()) for g in GROUPS for p in (LSNN_TRAINED, BACKPROP))
    floor = max(floor, 1e-12) / 10  # a lower band end at or below zero is drawn at this on the log axis
    for ax, p in zip(axes, (LSNN_TRAINED, BACKPROP)):
        for g in GROUPS:
            mean, lo, hi = normal_band(split.sq_err[g][p])
            trials = range(1, len(mean) + 1)
            ax.plot(trials, mean.numpy(), color=colors[g], lw=2, label=f"{g} ({split.which.numel()} episodes)")
            ax.fill_between(trials, lo.clamp(min=floor).numpy(), hi.numpy(), color=colors[g], alpha=0.2, lw=0)
            if p == LSNN_TRAINED:  # the untrained network beside it: what the networks' difficulty alone does
                ax.plot(trials, split.sq_err[g][LSNN_UNTRAINED].mean(dim=0).numpy(), color=colors[g], lw=1, ls=":",
                        label=f"{g}, {split.named(LSNN_UNTRAINED)}")
        ax.set_title(split.named(p))
        ax.set_xlabel("trial index within the episode")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("MSE (95% CI over episodes)")
    fig.suptitle(title or f"Frequent ({split.n_networks} fixed networks) vs fresh target networks")
    return save_figure(fig, path)
