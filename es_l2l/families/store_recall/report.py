"""Held-out store-recall report: recall error of the trained network on fixed test sequences
beside the untrained one and two baselines, error against delay, and a spike raster.

Baselines: chance (a coin flip, error 0.5 in expectation) and "last bit seen" (say the bit of the
frame just before the RECALL: right for a delay of one symbol, a coin flip otherwise, since every
other frame shows a random distractor bit).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from es_l2l.families.store_recall import task as sr
from es_l2l.families.store_recall.evaluate import OBJECTIVE, evaluate_batch
from es_l2l.plots import pyplot, raster_figure, save_figure
from es_l2l.seeds import STREAM_TEST, generator

if TYPE_CHECKING:
    from es_l2l.context import RunContext
    from es_l2l.families.store_recall.config import StoreRecallTaskConfig
    from es_l2l.families.base import Decoder

def pct(x: float) -> str:
    return "n/a" if x != x else f"{x:.2%}"


TRAINED, UNTRAINED, LAST_BIT, CHANCE = "trained", "untrained (generation 0)", "last bit seen", "chance"
CHUNK = 100  # sequences simulated at once (a 1,000-sequence batch of 2.4 s would take about 1 GB)
LONG_MS = 1000  # "long" delays: at least 1 s


@dataclass
class StoreRecallReport:
    wrong: dict[str, torch.Tensor]  # predictor -> (n,) 1.0 where a recall was wrong
    delay_ms: torch.Tensor  # (n,) delay of each recall
    n_sequences: int
    name: str

    def error(self, who: str, mask: torch.Tensor | None = None) -> float:
        w = self.wrong[who] if mask is None else self.wrong[who][mask]
        return float(w.mean()) if len(w) else float("nan")

    def delays(self) -> list[int]:
        return sorted(int(d) for d in self.delay_ms.unique())

    def by_delay(self) -> dict[str, list[float]]:
        return {who: [self.error(who, self.delay_ms == d) for d in self.delays()] for who in self.wrong}

    def long(self) -> torch.Tensor:
        return self.delay_ms >= LONG_MS

    def score(self) -> float:
        return self.error(TRAINED)

    def beaten(self) -> dict[str, bool]:
        mine = self.score()
        return {who: mine < self.error(who) for who in self.wrong if who != TRAINED}

    def flat_metrics(self) -> dict[str, float]:
        out = {"test_recall_error": self.score(), "test_recall_error_long": self.error(TRAINED, self.long())}
        for who in self.wrong:
            if who == TRAINED:
                continue
            slug = who.split(" (")[0].replace(" ", "_")
            out[f"{slug}.test_recall_error"] = self.error(who)
            out[f"{slug}.test_recall_error_long"] = self.error(who, self.long())
        return out

    def verdict(self) -> str:
        won = [k for k, v in self.beaten().items() if v]
        lost = [k for k, v in self.beaten().items() if not v]
        return (f"{self.name}: recall error {self.score():.2%} on {self.n_sequences} held-out sequences "
                f"({pct(self.error(TRAINED, self.long()))} on delays >= {LONG_MS / 1000:g} s); beats: {', '.join(won) or 'none'}; "
                f"does not beat: {', '.join(lost) or 'none'}.")

    def to_csv(self) -> str:
        rows = ["delay_ms,recalls," + ",".join(self.wrong)]
        per = self.by_delay()
        for i, d in enumerate(self.delays()):
            n = int((self.delay_ms == d).sum())
            rows.append(f"{d},{n}," + ",".join(f"{per[w][i]:.6f}" for w in self.wrong))
        return "\n".join(rows) + "\n"

    def table(self):
        from rich.table import Table

        table = Table(title=f"Store-recall: {self.n_sequences} held-out sequences")
        table.add_column("predictor")
        table.add_column("recall error", justify="right")
        table.add_column(f"delays >= {LONG_MS / 1000:g} s", justify="right")
        for who in self.wrong:
            table.add_row(who, pct(self.error(who)), pct(self.error(who, self.long())),
                          style="bold" if who == TRAINED else None)
        return table

    def print(self, console, result) -> None:
        console.print(self.table())
        per = self.by_delay()[TRAINED]
        console.print("trained recall error by delay: " + ", ".join(f"{d} ms {e:.1%}" for d, e in zip(self.delays(), per)))
        console.print(self.verdict())
        if result is not None:
            console.print(OBJECTIVE.progress("recall error", result.history, result.best_generation))

    def log(self, tracker, task: StoreRecallTaskConfig, ctx: RunContext, genome: Decoder, result) -> None:
        tracker.log_metrics(self.flat_metrics(), step=result.generations)
        tracker.log_text(self.to_csv(), "recall_error_by_delay.csv")
        with tempfile.TemporaryDirectory() as tmp:
            tracker.log_artifact(plot_by_delay(self, Path(tmp) / "recall_error_by_delay.png"))
            if ctx.model.spiking:
                trained = self.trained_vector
                tracker.log_artifact(raster(task, ctx, genome, trained, Path(tmp) / "raster.png"))
        tags = {f"beats.{k.split(' (')[0].replace(' ', '_')}": str(v).lower() for k, v in self.beaten().items()}
        tracker.set_tags(tags | {"verdict": self.verdict()[:5000]})

    trained_vector: torch.Tensor | None = None


def last_bit_seen(batch: sr.Batch) -> torch.Tensor:
    """The bit of the frame before each RECALL (0 where that frame shows none): (B, R)."""
    shown = batch.bits.gather(1, (batch.recall_symbol - 1).clamp(min=0))
    return shown.clamp(min=0)


@torch.no_grad()
def held_out_report(task: StoreRecallTaskConfig, ctx: RunContext, genome: Decoder, initial: torch.Tensor, trained: torch.Tensor) -> StoreRecallReport:
    gen = generator(ctx.seed, STREAM_TEST)  # chunks in turn: the same sequences as one big batch
    params = genome.params(torch.stack([trained, initial]).to(ctx.device, torch.float32))
    wrong = {TRAINED: [], UNTRAINED: [], LAST_BIT: [], CHANCE: []}
    delays = []
    n = task.test_sequences
    for start in range(0, n, CHUNK):
        batch = sr.sample(task, gen, min(CHUNK, n - start))
        ev, _ = evaluate_batch(ctx, params, batch)
        wrong[TRAINED].append(ev.wrong[0].flatten().cpu())
        wrong[UNTRAINED].append(ev.wrong[1].flatten().cpu())
        wrong[LAST_BIT].append((last_bit_seen(batch) != batch.targets).float().flatten())
        wrong[CHANCE].append(torch.full((batch.targets.numel(),), 0.5))  # expected error of a coin flip
        delays.append(batch.delay_ms.flatten())
    report = StoreRecallReport({k: torch.cat(v) for k, v in wrong.items()}, torch.cat(delays), n, ctx.name)
    report.trained_vector = trained
    return report


def plot_by_delay(report: StoreRecallReport, path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    per, d = report.by_delay(), [x / 1000 for x in report.delays()]
    styles = {TRAINED: dict(color="C3", lw=2.2, marker="o"), UNTRAINED: dict(color="C3", lw=1, ls=":"),
              LAST_BIT: dict(color="C0", lw=1, ls="--"), CHANCE: dict(color="0.5", lw=1, ls="--")}
    for who, errs in per.items():
        ax.plot(d, errs, label=who, **styles[who])
    ax.set_xlabel("store-to-recall delay (s)")
    ax.set_ylabel("recall error")
    ax.set_ylim(-0.02, 0.75)
    ax.set_title(f"{report.name}: {report.n_sequences} held-out sequences")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


@torch.no_grad()
def raster(task: StoreRecallTaskConfig, ctx: RunContext, genome: Decoder, vector: torch.Tensor, path) -> Path:
    """The trained LSNN on the first held-out sequence: inputs, spikes, ALIF thresholds, readout."""
    from es_l2l.snn import threshold_trace

    batch = sr.sample(task, generator(ctx.seed, STREAM_TEST), 1)
    params = genome.params(vector.unsqueeze(0).to(ctx.device, torch.float32))
    out = ctx.simulate(params, batch.x, record_spikes=True)
    spikes = out.spikes[0, 0].cpu()
    n_lif = ctx.model_cfg.n_lif
    thr = threshold_trace(params, out.spikes[0, 0])[:, n_lif:].cpu() if ctx.model_cfg.n_alif else None
    ms = task.symbol_ms
    marks = [(int(s) * ms, "STORE") for s in batch.store_symbol[0]] + [(int(r) * ms, "RECALL") for r in batch.recall_symbol[0]]
    probs = torch.softmax(out.y[0, 0], dim=-1)[:, 1:].cpu()
    title = (f"{ctx.name}: held-out sequence 1, stored bit {int(batch.targets[0, 0])}, "
             f"delay {int(batch.delay_ms[0, 0])} ms (readout: P(bit 1))")
    return raster_figure(path, spikes, thr, n_lif, inputs=batch.x[0], readout=probs, title=title, marks=marks, dt=ctx.sim.dt)
