"""Terminal progress display, subscribed to the status dict."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressDisplay:
    """A rich progress bar showing generation, fitness and the latest value of the validation objective.

    The bar counts generations, or (``budget`` set) per cent of a seconds / neuron-steps budget.
    """

    def __init__(self, total: int, console: Console | None = None, budget: tuple[str, float] | None = None, objective=None):
        self.budget, self.objective = budget, objective
        done = TextColumn("{task.percentage:>3.0f}% of budget") if budget else MofNCompleteColumn()
        self.progress = Progress(
            TextColumn("[bold]{task.fields[label]}"),
            done,
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("run", total=100 if budget else total, info="", label="gen")
        self.val = "val -"

    @classmethod
    def for_config(cls, cfg, console: Console | None = None) -> "ProgressDisplay":
        from es_l2l.families import family_of

        objective = family_of(cfg.task).objective
        if cfg.run.max_seconds is not None and cfg.run.max_neuron_steps is None:
            return cls(cfg.run.generations, console, ("elapsed_s", cfg.run.max_seconds), objective)
        if cfg.run.max_neuron_steps is not None and cfg.run.max_seconds is None:
            return cls(cfg.run.generations, console, ("neuron_steps", cfg.run.max_neuron_steps), objective)
        return cls(cfg.run.generations, console, objective=objective)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def __call__(self, status: dict) -> None:
        if self.objective is not None and self.objective.key in status:
            self.val = f"{self.objective.label} {self.objective.fmt(status[self.objective.key])}"
        info = self.val
        if "fitness_mean" in status:
            info = f"fitness {status['fitness_mean']:.4f} (best {status['fitness_best']:.4f})  " + info
            info += f"  {status['rate_hz']:.0f} Hz" if "rate_hz" in status else ""
            info += f"  {status['seconds_per_generation']:.2f} s/gen"
        if self.budget:
            key, limit = self.budget
            completed = min(100.0, 100.0 * status.get(key, 0) / limit)
            self.progress.update(self.task, completed=completed, info=info, label=f"gen {status['generation']}")
        else:
            self.progress.update(self.task, completed=status["generation"], info=info)
