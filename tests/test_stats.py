"""Every interval of es_l2l.reporting.stats, on hand-made numbers: over seeds (Student t) and over episodes
(normal approximation), each under the name of the statistic it computes."""

import math

import pytest
import torch

from es_l2l.reporting.stats import (
    normal_band,
    normal_interval,
    paired_normal_interval,
    paired_t_interval,
    paired_verdict,
    standard_error,
    t_interval,
    t_quantile,
    welch_normal_interval,
)


def test_t_interval_by_hand():
    ci = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.3027
    assert ci.mean == 2.0 and ci.n == 3
    assert ci.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert t_quantile(0.975, 2) == pytest.approx(4.302653, rel=1e-6)


def test_paired_t_interval_uses_the_pairs_not_the_arms():
    a, b = [0.10, 0.20, 0.30], [0.11, 0.21, 0.31]  # each arm spreads widely, the pairs differ by exactly 0.01
    diff = paired_t_interval(a, b)
    assert diff.mean == pytest.approx(-0.01) and diff.half_width == pytest.approx(0.0, abs=1e-12)
    assert paired_verdict("es", "bptt", diff, maximize=False) == "es vs bptt: es is better than bptt"  # lower MSE wins
    assert paired_verdict("es", "bptt", diff, maximize=True) == "es vs bptt: bptt is better than es"


def test_overlapping_zero_means_no_significant_difference():
    diff = paired_t_interval([0.10, 0.30, 0.20], [0.20, 0.10, 0.25])
    assert diff.low < 0 < diff.high
    assert paired_verdict("a", "b", diff, maximize=True) == "a vs b: no significant difference"
    assert paired_verdict("a", "b", t_interval([0.5]), maximize=True) == "a vs b: no significant difference"  # one seed says nothing
    with pytest.raises(ValueError, match="differ in length"):
        paired_t_interval([1.0], [1.0, 2.0])


def test_normal_intervals_over_episodes_by_hand():
    v = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])  # mean 3, sample variance 2.5
    half = 1.96 * math.sqrt(2.5) / math.sqrt(5)
    assert normal_interval(v).as_dict() == pytest.approx({"mean": 3.0, "lo": 3.0 - half, "hi": 3.0 + half, "n": 5.0})
    # the same numbers as a t interval are wider: t(0.975, 4) = 2.776 > 1.96
    assert t_interval(v.tolist()).half_width == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert standard_error(v) == pytest.approx(math.sqrt(2.5) / math.sqrt(5))
    assert math.isnan(normal_interval(torch.tensor([1.0])).low) and math.isnan(standard_error(torch.tensor([1.0])))
    # paired: differences 1..5 whatever the shared offset per episode
    offset = torch.tensor([100.0, -50.0, 7.0, 0.0, 3.0])
    assert paired_normal_interval(v + offset, offset).as_dict() == pytest.approx(normal_interval(v).as_dict())
    # Welch: b = 10, 12, 14 (mean 12, variance 4) over 3: half width 1.96 sqrt(2.5/5 + 4/3)
    d = welch_normal_interval(v, torch.tensor([10.0, 12.0, 14.0]))
    assert d.mean == pytest.approx(-9.0) and d.n == 8
    assert d.half_width == pytest.approx(1.96 * math.sqrt(2.5 / 5 + 4.0 / 3))
    mean, _, hi = normal_band(torch.stack([v, v + 1.0]).T)  # two columns, five rows each
    assert mean.tolist() == pytest.approx([3.0, 4.0]) and (hi - mean).tolist() == pytest.approx([half, half])
