"""Held-out report for the maze family: the meta-trained LSNN beside its baselines, and pictures.

Every agent plays the same fixed test mazes (a stream that training and model selection never
see): the meta-trained LSNN, the LSNN at generation 0, and the random, explorer and oracle
agents of :mod:`es_l2l.families.maze.baselines`. The acceptance questions are answered in numbers:
is the LSNN's mean reward at least halfway from the random agent to the explorer, and does it
exploit (fewer moves per trip after its first find than to the first find)?

Pictures (the shell logs them as MLflow artifacts): ``trajectories.png`` (test episodes on the grid, the first
search against later trips), ``reward_curve.png`` (validation reward over training with the
baselines on the validation mazes as lines) and ``spike_raster.png`` (the trained agent's spikes
during one test episode, rewards marked).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from es_l2l.families.base import HeldOut
from es_l2l.families.maze.baselines import episode_means, play_baselines
from es_l2l.families.maze.env import move
from es_l2l.families.maze.evaluate import OBJECTIVE, maze_batch, play_params
from es_l2l.tracking.metric_keys import withheld, withheld_key
from es_l2l.reporting.plots import pyplot, save_figure
from es_l2l.seeds import STREAM_BASELINE, STREAM_TEST, STREAM_VALIDATION, SeedKey, generator
from es_l2l.reporting.stats import standard_error

if TYPE_CHECKING:
    from es_l2l.context import RunContext
    from es_l2l.families.maze.config import MazeConfig
    from es_l2l.families.base import Decoder

LSNN_TRAINED, LSNN_UNTRAINED = "LSNN meta-trained", "LSNN generation 0"
BASELINES = ("random", "explorer", "oracle")


@dataclass
class MazeReport:
    metrics: dict[str, dict[str, float]]  # agent -> reward, reward_se, found, first_find, later_trip
    n_mazes: int
    policy: str
    alt: dict | None = None  # the trained agent under the other action rule: {"policy": ..., reward, ...}

    @property
    def halfway(self) -> float:
        """Halfway from the random agent's mean reward to the explorer's."""
        return 0.5 * (self.metrics["random"]["reward"] + self.metrics["explorer"]["reward"])

    def trained(self) -> dict[str, float]:
        return self.metrics[LSNN_TRAINED]

    def reaches_halfway(self) -> bool:
        return self.trained()["reward"] >= self.halfway

    def exploits(self) -> bool:
        m = self.trained()
        return math.isfinite(m["later_trip"]) and m["later_trip"] < m["first_find"]

    def beaten(self) -> dict[str, bool]:
        """Agent -> whether the meta-trained LSNN earns more reward per episode."""
        mine = self.trained()["reward"]
        return {k: mine > m["reward"] for k, m in self.metrics.items() if k != LSNN_TRAINED}

    def test_metrics(self) -> dict[str, float]:
        """The MLflow keys: ``withheld/<agent>/<metric>`` (finite values only), the trained agent under the
        other action rule and the halfway mark."""
        out = {withheld("halfway_random_explorer", "reward"): self.halfway}
        if self.alt:
            out[withheld_key(LSNN_TRAINED, f"reward_{self.alt['policy']}")] = self.alt["reward"]
        for name, m in self.metrics.items():
            out.update({withheld_key(name, k): v for k, v in m.items() if math.isfinite(v)})
        return out

    def score(self) -> float:
        """The trained agent's mean test reward per episode (the objective's metric)."""
        return self.trained()["reward"]

    def verdict(self) -> str:
        return verdict(self)

    def to_markdown(self) -> str:
        lines = [
            f"Held-out test mazes: {self.n_mazes} episodes, LSNN actions: {self.policy}",
            "",
            "| agent | reward / episode | s.e. | episodes with a find | moves to first goal | moves per later trip |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, m in self.metrics.items():
            lines.append(
                f"| {name} | {m['reward']:.2f} | {m['reward_se']:.2f} | {m['found']:.0%} | {m['first_find']:.2f} | {m['later_trip']:.2f} |"
            )
        return "\n".join(lines + ["", self.alt_line(), "", verdict(self)]) + "\n"

    def alt_line(self) -> str:
        if not self.alt:
            return ""
        a = self.alt
        return (f"The meta-trained LSNN with {a['policy']} actions (instead of {self.policy}): reward {a['reward']:.2f} "
                f"(s.e. {a['reward_se']:.2f}), a find in {a['found']:.0%} of episodes.")


def _row(reward: torch.Tensor, reached: torch.Tensor) -> dict[str, float]:
    """Summaries of (B,) episode rewards and (B, T) goal hits."""
    found, first_find, later_trip = episode_means(reached)
    reward = reward.double()
    return {
        "reward": float(reward.mean()),
        "reward_se": standard_error(reward),
        "found": float(found),
        "first_find": float(first_find),
        "later_trip": float(later_trip),
    }


def baseline_rows(task: MazeConfig, seed: int, n: int, stream: int) -> dict[str, dict[str, float]]:
    """Random, explorer and oracle on the ``n`` held-out mazes of ``stream`` (the LSNN's mazes) of run seed ``seed``."""
    mazes, _ = maze_batch(task, SeedKey(seed, stream), n)
    trajectories = play_baselines(task, mazes, generator(seed, STREAM_BASELINE, stream))
    return {name: _row(tr.total_reward(), tr.reached) for name, tr in trajectories.items()}


@torch.no_grad()
def maze_report(task: MazeConfig, ctx: RunContext, genome: Decoder, initial: torch.Tensor, trained: torch.Tensor) -> MazeReport:
    params = genome.params(torch.stack([initial, trained]).to(ctx.device))
    test = SeedKey(ctx.seed, STREAM_TEST)
    ep = play_params(task, ctx, params, test, ctx.validation_tasks)
    reward, reached = ep.total_reward().cpu(), ep.reached.cpu()
    metrics = {LSNN_TRAINED: _row(reward[1], reached[1]), LSNN_UNTRAINED: _row(reward[0], reached[0])}
    metrics.update(baseline_rows(task, ctx.seed, ctx.validation_tasks, STREAM_TEST))
    # the trained agent under the other action rule too: A2C trains with sampled actions, ES
    # optimises whichever rule task.policy names; both are reported so neither is judged unfairly
    other = "sample" if task.policy == "greedy" else "greedy"
    ep = play_params(task, ctx, genome.params(trained.unsqueeze(0).to(ctx.device)), test, ctx.validation_tasks,
                     greedy=other == "greedy")
    alt = {"policy": other, **_row(ep.total_reward()[0].cpu(), ep.reached[0].cpu())}
    return MazeReport(metrics, ctx.validation_tasks, task.policy, alt)


def held_out(task: MazeConfig, ctx: RunContext, genome: Decoder, initial: torch.Tensor, trained: torch.Tensor) -> HeldOut:
    """The maze family's held-out report as the shell prints and logs it (the spike raster where the model spikes)."""
    report = maze_report(task, ctx, genome, initial, trained)
    best = trained

    def closing(result) -> str | None:
        return None if result is None else summary_line(report, result.history, result.best_generation)

    figures = {
        "reward_curve.png": lambda path, history: plot_reward_curve(task, ctx, history, path),
        "trajectories.png": lambda path, history: plot_trajectories(task, ctx, genome, best, path),
    }
    if ctx.model.spiking:
        figures["spike_raster.png"] = lambda path, history: plot_raster(task, ctx, genome, best, path)
    return HeldOut(
        rows=report.metrics, score=report.score(), verdict=verdict(report), beats=report.beaten(),
        metrics=report.test_metrics(),
        tags={"halfway_random_to_explorer": str(report.reaches_halfway()).lower(), "exploits": str(report.exploits()).lower()},
        figures=figures,
        artifacts={"maze_report.md": report.to_markdown()},
        printed=[summary_table(report)], notes=[report.alt_line()] if report.alt else [], closing=closing, detail=report,
    )


def verdict(report: MazeReport) -> str:
    """Plain sentences: which agents the LSNN beats, the halfway mark, and whether it exploits."""
    beats = report.beaten()
    m = report.trained()
    won = [k for k, v in beats.items() if v]
    lost = [k for k, v in beats.items() if not v]
    half = (
        f"Its mean reward {m['reward']:.2f} is {'at least' if report.reaches_halfway() else 'below'} halfway from the "
        f"random agent to the explorer ({report.halfway:.2f})."
    )
    if not math.isfinite(m["later_trip"]):
        exploit = "It never reaches the goal twice in an episode, so it cannot exploit."
    else:
        exploit = (
            f"It {'exploits' if report.exploits() else 'does not exploit'}: {m['later_trip']:.2f} moves per trip after "
            f"the first find against {m['first_find']:.2f} to the first find."
        )
    return (
        f"On held-out mazes the meta-trained LSNN beats: {', '.join(won) or 'none'}; it does not beat: "
        f"{', '.join(lost) or 'none'}. {half} {exploit}"
    )


def summary_table(report: MazeReport):
    from rich.table import Table

    table = Table(title=f"Held-out test mazes ({report.n_mazes} episodes; LSNN actions: {report.policy})")
    for col in ("agent", "reward / episode", "s.e.", "found", "moves to 1st goal", "moves / later trip"):
        table.add_column(col, justify="left" if col == "agent" else "right")
    for name, m in report.metrics.items():
        table.add_row(
            name,
            f"{m['reward']:.2f}",
            f"{m['reward_se']:.2f}",
            f"{m['found']:.0%}",
            f"{m['first_find']:.2f}",
            f"{m['later_trip']:.2f}",
            style="bold" if name == LSNN_TRAINED else None,
        )
    return table


def summary_line(report: MazeReport, history: list[dict], best_generation: int) -> str:
    return (
        OBJECTIVE.progress("reward per episode", history, best_generation) + "; "
        f"test reward: {report.trained()['reward']:.2f} (generation 0: {report.metrics[LSNN_UNTRAINED]['reward']:.2f})"
    )


# --- pictures -------------------------------------------------------------------------------------


def plot_reward_curve(task: MazeConfig, ctx: RunContext, history: list[dict], path: str | Path) -> Path:
    """Validation reward per episode against generation, baselines (same validation mazes) as lines."""
    plt = pyplot()
    vals = [h for h in history if "val_reward" in h]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.plot([h["generation"] for h in vals], [h["val_reward"] for h in vals], color="C3", lw=2, marker=".", label="LSNN (search centre)")
    rows = baseline_rows(task, ctx.seed, ctx.validation_tasks, STREAM_VALIDATION)
    for (name, row), color in zip(rows.items(), ("C7", "C0", "C2")):
        ax.axhline(row["reward"], color=color, ls="--", lw=1.2, label=f"{name} ({row['reward']:.2f})")
    half = 0.5 * (rows["random"]["reward"] + rows["explorer"]["reward"])
    ax.axhline(half, color="k", ls=":", lw=1, label=f"halfway random -> explorer ({half:.2f})")
    if task.search_curriculum:
        label = f"search curriculum (training goal relocates), 1-{task.search_curriculum}"
        ax.axvspan(0, task.search_curriculum, color="C1", alpha=0.12, lw=0, label=label)
    ax.set_xlabel(ctx.step_label)
    ax.set_ylabel(f"reward per episode, {ctx.validation_tasks} validation mazes")
    ax.set_title(f"{ctx.name}: reward over training")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


@torch.no_grad()
def plot_trajectories(task: MazeConfig, ctx: RunContext, genome: Decoder, vector: torch.Tensor, path: str | Path, n: int = 4) -> Path:
    """``n`` test episodes of the agent on the grid: moves before the first goal against the trips after it."""
    plt = pyplot()
    ep = play_params(task, ctx, genome.params(vector.unsqueeze(0).to(ctx.device)), SeedKey(ctx.seed, STREAM_TEST), n)
    mazes, _ = maze_batch(task, SeedKey(ctx.seed, STREAM_TEST), n)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2 * task.rows / task.cols + 0.8), dpi=120, squeeze=False)
    rng = torch.Generator().manual_seed(0)  # jitter only, so overlapping moves stay visible
    for b, ax in enumerate(axes[0]):
        pos, act, reached = ep.pos[0, b], ep.action[0, b], ep.reached[0, b]
        first = int(reached.nonzero()[0]) if reached.any() else len(pos)
        goal = int(mazes.goal[b])
        ax.set_xlim(-0.5, task.cols - 0.5)
        ax.set_ylim(task.rows - 0.5, -0.5)
        ax.set_xticks(range(task.cols))
        ax.set_yticks(range(task.rows))
        ax.grid(alpha=0.3)
        ax.set_aspect("equal")
        ax.scatter([goal % task.cols], [goal // task.cols], marker="*", s=400, color="gold", edgecolor="k", zorder=3)
        for t in range(len(pos)):
            src = int(pos[t])
            dst = goal if reached[t] else int(move(task, pos[t], act[t]))
            if dst == src:
                continue
            jitter = (torch.rand(2, generator=rng) - 0.5) * 0.25
            xs = [src % task.cols + jitter[0], dst % task.cols + jitter[0]]
            ys = [src // task.cols + jitter[1], dst // task.cols + jitter[1]]
            style = dict(color="C1", lw=2, alpha=0.9) if t <= first else dict(color="C0", lw=1, alpha=0.35)
            ax.plot(xs, ys, **style)
        ax.scatter([int(pos[0]) % task.cols], [int(pos[0]) // task.cols], marker="o", s=80, color="C1", zorder=3)
        finds = int(reached.sum())
        ax.set_title(f"maze {b + 1}: {finds} goal(s), first after {first + 1 if finds else '-'} moves", fontsize=8)
    fig.suptitle("test episodes: orange = search until the first goal (dot: start), blue = later trips", fontsize=9)
    return save_figure(fig, path)


@torch.no_grad()
def plot_raster(task: MazeConfig, ctx: RunContext, genome: Decoder, vector: torch.Tensor, path: str | Path) -> Path:
    """Spikes of every neuron during one test episode; goal arrivals marked."""
    plt = pyplot()
    ep = play_params(task, ctx, genome.params(vector.unsqueeze(0).to(ctx.device)), SeedKey(ctx.seed, STREAM_TEST), 1, record_spikes=True)
    spikes = ep.spikes[0, 0].cpu()  # (T * ms, N)
    t, j = spikes.nonzero(as_tuple=True)
    n_lif = ctx.model_cfg.n_lif
    fig, ax = plt.subplots(figsize=(10, 4), dpi=120)
    lif = j < n_lif
    ax.scatter(t[lif].numpy(), j[lif].numpy(), s=6, color="C0", label="LIF", marker="|")
    ax.scatter(t[~lif].numpy(), j[~lif].numpy(), s=6, color="C3", label="ALIF (adaptive)", marker="|")
    for k in ep.reached[0, 0].nonzero().flatten().tolist():
        ax.axvline((k + 1) * task.ms_per_step, color="gold", lw=1)
    ax.set_xlabel(f"time (ms); gold lines: goal reached ({int(ep.reached[0, 0].sum())} times)")
    ax.set_ylabel("neuron")
    ax.set_title(f"{ctx.name}: spike raster of the trained agent in one test maze")
    ax.legend(loc="upper right", fontsize=8, markerscale=6)
    return save_figure(fig, path)
