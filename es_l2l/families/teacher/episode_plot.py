"""The typical-episode figure: one held-out task's inputs, the network's spikes and its predictions.

Three panels on a shared time axis (ms): the input spike trains (x1, x2 and the previous target,
each population coded), the network's spike raster with LIF and ALIF neurons marked, and the
readout against the target, trial by trial (the prediction is the readout averaged over each
trial's last ``readout_ms`` steps).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from es_l2l.families.teacher import tasks as teacher
from es_l2l.reporting.plots import pyplot, save_figure

if TYPE_CHECKING:
    from es_l2l.context import RunContext
    from es_l2l.families.teacher.config import TeacherConfig
    from es_l2l.models.lstm import LSTMParams
    from es_l2l.snn import LSNNParams


@torch.no_grad()
def episode_trace(task: TeacherConfig, ctx: RunContext, params: LSNNParams | LSTMParams, tasks: teacher.TeacherTasks,
                  index: int = 0) -> dict:
    """Everything the figure shows for episode ``index`` of ``tasks`` (one network of the config's
    model kind, ``P = 1``; a model without spikes has an empty raster and no ALIF neurons)."""
    spikes_in = tasks.spikes[index : index + 1]
    out = ctx.simulate(params, spikes_in, record_spikes=True)
    readout = out.y[0, 0, :, 0].cpu()  # (T,)
    beta = getattr(params, "beta", None)  # only spiking kinds have adaptive thresholds
    windows = readout[tasks.readout_steps].reshape(task.n_trials, task.readout_ms)
    return {
        "input_spikes": spikes_in[0].cpu(),  # (T, n_in)
        "spikes": out.spikes[0, 0].cpu(),  # (T, N)
        "alif": (beta[0] > 0).cpu() if beta is not None else torch.zeros(out.spikes.shape[-1], dtype=torch.bool),  # (N,)
        "spiking": ctx.model.spiking,
        "size": ctx.model.size(ctx.model_cfg),  # the network in words
        "readout": readout,
        "prediction": windows.mean(-1),  # (n_trials,)
        "target": tasks.y[index].cpu(),  # (n_trials,)
    }


def plot_episode(task: TeacherConfig, trace: dict, path: str | Path, title: str = "") -> Path:
    """Draw :func:`episode_trace`'s output; returns the PNG's path."""
    plt = pyplot()
    t_cfg = task
    n, trial = t_cfg.neurons_per_variable, t_cfg.trial_ms
    steps = trace["readout"].shape[0]
    fig, axes = plt.subplots(3, 1, figsize=(11, 7.5), dpi=110, sharex=True, gridspec_kw={"height_ratios": [1.2, 1.6, 1.4]})
    ax = axes[0]
    inputs = trace["input_spikes"]
    groups = [("x1", "C0"), ("x2", "C2"), ("previous target", "C1")]
    if t_cfg.show_previous_input:
        groups += [("previous x1", "C4"), ("previous x2", "C5")]
    if t_cfg.encoding == "analog":  # analog inputs: the spike probability per step as an image
        ax.imshow(inputs.T.numpy(), aspect="auto", origin="lower", cmap="Greys", interpolation="nearest",
                  extent=(-0.5, steps - 0.5, -0.5, inputs.shape[1] - 0.5))
        for k, (label, color) in enumerate(groups):
            ax.axhline(k * n - 0.5, color=color, lw=0.6)
            ax.text(steps * 1.002, (k + 0.5) * n, label, fontsize=7, color=color, va="center")
        ax.set_ylabel("input neuron\n(analog: spike prob./step)")
    else:
        t, i = torch.nonzero(inputs, as_tuple=True)
        for k, (label, color) in enumerate(groups):
            sel = (i >= k * n) & (i < (k + 1) * n)
            ax.scatter(t[sel].numpy(), i[sel].numpy(), s=1.5, color=color, label=label, marker="|")
        ax.set_ylabel("input neuron")
        ax.legend(loc="upper right", fontsize=7, markerscale=4)
    ax = axes[1]
    alif = trace["alif"]
    t, j = torch.nonzero(trace["spikes"], as_tuple=True)
    is_alif = alif[j]
    ax.scatter(t[~is_alif].numpy(), j[~is_alif].numpy(), s=1.5, color="C0", marker="|", label=f"LIF ({int((~alif).sum())})")
    ax.scatter(t[is_alif].numpy(), j[is_alif].numpy(), s=1.5, color="C3", marker="|", label=f"ALIF ({int(alif.sum())})")
    if trace.get("spiking", True):
        ax.set_ylabel("network neuron")
        ax.legend(loc="upper right", fontsize=7, markerscale=4)
    else:
        ax.set_ylabel("hidden unit")
        ax.text(0.5, 0.5, f"{trace['size']}: no spikes", transform=ax.transAxes, ha="center", va="center")
    ax = axes[2]
    ax.plot(range(steps), trace["readout"].numpy(), color="0.6", lw=0.8, label="readout")
    starts = torch.arange(t_cfg.n_trials) * trial
    ax.hlines(trace["target"].numpy(), starts.numpy(), (starts + trial).numpy(), color="k", lw=2, label="target G(x)")
    ax.hlines(
        trace["prediction"].numpy(), (starts + trial - t_cfg.readout_ms).numpy(), (starts + trial).numpy(), color="C3", lw=2,
        label="prediction (readout window mean)",
    )
    for s in starts[1:].numpy():
        for a in axes:
            a.axvline(s, color="0.85", lw=0.5, zorder=0)
    ax.set_ylabel("output")
    ax.set_xlabel("time (ms); trials separated by grey lines")
    ax.legend(loc="upper right", fontsize=7)
    mse = (trace["prediction"] - trace["target"]).pow(2)
    half = t_cfg.n_trials // 2
    axes[0].set_title(
        (title + ": " if title else "")
        + f"one held-out episode; MSE first half {float(mse[:half].mean()):.4f}, second half {float(mse[half:].mean()):.4f}"
    )
    return save_figure(fig, path)
