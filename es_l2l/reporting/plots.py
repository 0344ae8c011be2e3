"""Matplotlib helpers shared by every family's pictures (headless: the Agg backend)."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Lay out, write and close a matplotlib figure; returns its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def raster_figure(path, spikes, thresholds=None, n_lif: int = 0, inputs=None, readout=None, title: str = "",
                  marks: list[tuple[float, str]] | None = None, dt: float = 1.0) -> Path:
    """One network on one input sequence: input spikes (T, n_in), hidden spikes (T, N) (LIF first,
    then ALIF, told apart at ``n_lif``), the ALIF neurons' firing thresholds (T, N - n_lif) and the
    readout (T, n_out), stacked over a shared time axis in ms; ``marks``: (ms, label) lines."""
    import numpy as np

    plt = pyplot()
    panels = [p for p in ("inputs", "spikes", "thresholds", "readout")
              if {"inputs": inputs, "spikes": spikes, "thresholds": thresholds, "readout": readout}[p] is not None]
    heights = {"inputs": 1.2, "spikes": 2.0, "thresholds": 1.3, "readout": 1.1}
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, sum(heights[p] for p in panels) + 0.8), dpi=110, sharex=True,
                             gridspec_kw={"height_ratios": [heights[p] for p in panels]}, squeeze=False)
    axes = dict(zip(panels, axes[:, 0]))

    def dots(ax, z, color_split=None):
        z = np.asarray(z)
        t, n = np.nonzero(z)
        colors = np.where(n >= color_split, "C3", "C0") if color_split is not None else "k"
        ax.scatter(t * dt, n, s=1.5, c=colors, marker="|", linewidths=0.6)
        ax.set_ylim(-0.5, z.shape[1] - 0.5)

    if inputs is not None:
        dots(axes["inputs"], inputs)
        axes["inputs"].set_ylabel("input")
    dots(axes["spikes"], spikes, n_lif)
    axes["spikes"].set_ylabel("neuron\n(LIF blue, ALIF red)" if n_lif < np.asarray(spikes).shape[1] else "neuron")
    if thresholds is not None:
        thr = np.asarray(thresholds)
        axes["thresholds"].plot(np.arange(thr.shape[0]) * dt, thr, lw=0.8)
        axes["thresholds"].set_ylabel("ALIF\nthreshold")
    if readout is not None:
        r = np.asarray(readout)
        for k in range(r.shape[1]):
            axes["readout"].plot(np.arange(r.shape[0]) * dt, r[:, k], lw=0.9, label=f"out {k}")
        axes["readout"].set_ylabel("readout")
        axes["readout"].legend(fontsize=6, ncol=min(10, r.shape[1]), loc="upper left")
    for ms, label in marks or []:
        for ax in axes.values():
            ax.axvline(ms, color="0.6", lw=0.6, ls=":")
        axes[panels[0]].text(ms, 1.02, label, transform=axes[panels[0]].get_xaxis_transform(), fontsize=6, ha="left")
    axes[panels[-1]].set_xlabel("time (ms)")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
