"""Every interval es-l2l reports, each named for the statistic it computes.

Two kinds of samples meet here:

* **seeds** (``compare --seeds``): each arm (a compared config) is run with every seed; a seed
  fixes the held-out test tasks, so two arms run with the same seed meet the same tasks and their
  scores pair up. Few samples: Student-t intervals (:func:`t_interval`, :func:`paired_t_interval`).
  The runs are the samples: training variability is what a user's next run meets.
* **episodes** (a held-out report): hundreds of test episodes of one run. Normal-approximation
  intervals of a mean (:func:`normal_interval`), of a per-episode paired difference
  (:func:`paired_normal_interval`), of a difference between two independent groups
  (:func:`welch_normal_interval`), per trial index (:func:`normal_band`), and the standard error
  (:func:`standard_error`). These take tensors and compute in float64 torch, as the reports always did.

A verdict on two arms (:func:`paired_verdict`) names a winner only where the paired interval excludes zero.
"""

from __future__ import annotations

import math
from typing import NamedTuple

Z95 = 1.96  # the normal quantile of a two-sided 95% interval


class Interval(NamedTuple):
    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, float]:
        """``{"mean", "lo", "hi", "n"}`` (n as a float): the shape reports log as metrics."""
        return {"mean": self.mean, "lo": self.low, "hi": self.high, "n": float(self.n)}


# --- over seeds: Student-t --------------------------------------------------------------------------


def t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(p, dof))


def t_interval(values, level: float = 0.95) -> Interval:
    """Mean and Student-t interval of a small sample (seeds); NaN ends for one value."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = sum(xs) / n
    if n == 1:
        return Interval(mean, float("nan"), float("nan"), 1)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_t_interval(a, b, level: float = 0.95) -> Interval:
    """Student-t interval of the mean of ``a_i - b_i`` over pairs (same seed, same held-out tasks)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    return t_interval([x - y for x, y in zip(a, b)], level)


def paired_verdict(name_a: str, name_b: str, diff: Interval, maximize: bool) -> str:
    """One sentence: which of two arms is better by a paired interval, or that it cannot tell."""
    if diff.n < 2 or not diff.excludes_zero():
        return f"{name_a} vs {name_b}: no significant difference"
    a_better = (diff.mean > 0) == maximize
    win, lose = (name_a, name_b) if a_better else (name_b, name_a)
    return f"{name_a} vs {name_b}: {win} is better than {lose}"


# --- over episodes: normal approximation (torch tensors, float64) ------------------------------------


def standard_error(values) -> float:
    """Standard error of the mean of a 1-d tensor (NaN for fewer than two values)."""
    values = values.double()
    return float(values.std() / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def normal_interval(values, z: float = Z95) -> Interval:
    """Mean of a sample over episodes with its normal-approximation interval ``mean +- z sd / sqrt(n)``
    (``z = 1.96``: 95%); NaN ends for one value."""
    v = values.double().flatten()
    n = v.numel()
    mean = float(v.mean())
    half = z * float(v.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("nan")
    return Interval(mean, mean - half, mean + half, n)


def paired_normal_interval(a, b, z: float = Z95) -> Interval:
    """Mean of the per-episode differences ``a - b`` with its normal-approximation interval. ``a`` and
    ``b`` are (B,) scores of two predictors on the same episodes; pairing removes the between-episode
    spread that both share."""
    return normal_interval(a.double().flatten() - b.double().flatten(), z)


def welch_normal_interval(a, b, z: float = Z95) -> Interval:
    """``mean(a) - mean(b)`` of two independent samples with its normal-approximation (Welch) interval,
    half width ``z * sqrt(var_a / n_a + var_b / n_b)``; ``n``: the samples' sizes added."""
    a, b = a.double().flatten(), b.double().flatten()
    mean = float(a.mean() - b.mean())
    if a.numel() < 2 or b.numel() < 2:
        half = float("nan")
    else:
        half = z * math.sqrt(float(a.var(unbiased=True)) / a.numel() + float(b.var(unbiased=True)) / b.numel())
    return Interval(mean, mean - half, mean + half, a.numel() + b.numel())


def normal_band(samples, z: float = Z95):
    """Samples (B, K) -> the mean over B per column (K,) and its normal-approximation interval's lower
    and upper ends (e.g. MSE per trial index over episodes)."""
    import torch

    e = samples.double()
    mean = e.mean(dim=0)
    n = e.shape[0]
    half = z * e.std(dim=0, unbiased=True) / math.sqrt(n) if n > 1 else torch.full_like(mean, math.nan)
    return mean, mean - half, mean + half
