"""Terminal progress display, subscribed to the status dict."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressDisplay:
    """A rich progress bar showing generation, fitness and the latest validation MSE."""

    def __init__(self, total: int, console: Console | None = None):
        self.progress = Progress(
            TextColumn("[bold]gen"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("es", total=total, info="")
        self.val = float("nan")

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def __call__(self, status: dict) -> None:
        if "val_mse_late" in status:
            self.val = status["val_mse_late"]
        info = f"val MSE(late) {self.val:.4f}"
        if "fitness_mean" in status:
            info = f"fitness {status['fitness_mean']:.4f} (best {status['fitness_best']:.4f})  " + info
            info += f"  {status['rate_hz']:.0f} Hz  {status['seconds_per_generation']:.2f} s/gen"
        self.progress.update(self.task, completed=status["generation"], info=info)
