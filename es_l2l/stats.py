"""Means, 95% confidence intervals and paired differences: what ``compare --seeds`` says about arms.

Each arm (a compared config) is run with every seed; a seed fixes the held-out test tasks, so two
arms run with the same seed meet the same tasks and their scores pair up. Intervals are Student-t
intervals over seeds (the runs are the samples: training variability is what a user's next run
meets). A verdict names a winner only where the paired interval excludes zero.
"""

from __future__ import annotations

import math
from typing import NamedTuple


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


def t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(p, dof))


def mean_ci(values, level: float = 0.95) -> Interval:
    """Mean and Student-t interval of a sample (the interval is the point itself for one value)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = sum(xs) / n
    if n == 1:
        return Interval(mean, float("nan"), float("nan"), 1)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(a, b, level: float = 0.95) -> Interval:
    """Interval of the mean of ``a_i - b_i`` over pairs (same seed, same held-out tasks)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    return mean_ci([x - y for x, y in zip(a, b)], level)


def verdict(name_a: str, name_b: str, diff: Interval, maximize: bool) -> str:
    """One sentence: which of two arms is better, or that the interval cannot tell."""
    if diff.n < 2 or not diff.excludes_zero():
        return f"{name_a} vs {name_b}: no significant difference"
    a_better = (diff.mean > 0) == maximize
    win, lose = (name_a, name_b) if a_better else (name_b, name_a)
    return f"{name_a} vs {name_b}: {win} is better than {lose}"
