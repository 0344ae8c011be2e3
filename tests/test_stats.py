"""The statistics of compare --seeds, on hand-made numbers."""

import math

import pytest

from es_l2l.stats import mean_ci, paired_difference, t_quantile, verdict


def test_mean_ci_by_hand():
    ci = mean_ci([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.3027
    assert ci.mean == 2.0 and ci.n == 3
    assert ci.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert t_quantile(0.975, 2) == pytest.approx(4.302653, rel=1e-6)


def test_paired_difference_uses_the_pairs_not_the_arms():
    a, b = [0.10, 0.20, 0.30], [0.11, 0.21, 0.31]  # each arm spreads widely, the pairs differ by exactly 0.01
    diff = paired_difference(a, b)
    assert diff.mean == pytest.approx(-0.01) and diff.half_width == pytest.approx(0.0, abs=1e-12)
    assert verdict("es", "bptt", diff, maximize=False) == "es vs bptt: es is better than bptt"  # lower MSE wins
    assert verdict("es", "bptt", diff, maximize=True) == "es vs bptt: bptt is better than es"


def test_overlapping_zero_means_no_significant_difference():
    diff = paired_difference([0.10, 0.30, 0.20], [0.20, 0.10, 0.25])
    assert diff.low < 0 < diff.high
    assert verdict("a", "b", diff, maximize=True) == "a vs b: no significant difference"
    assert verdict("a", "b", mean_ci([0.5]), maximize=True) == "a vs b: no significant difference"  # one seed says nothing
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1.0], [1.0, 2.0])
