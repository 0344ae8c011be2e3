"""The family objective's one-line summary of a run's validation, shared by every family's report."""

from es_l2l.families.base import Objective

HISTORY = [{"generation": 0, "val_x": 0.5}, {"generation": 3, "fitness_mean": -1.0}, {"generation": 5, "val_x": 0.125},
           {"generation": 10, "val_x": 0.25}]


def test_progress_names_first_last_and_best_in_the_objectives_direction_and_digits():
    low = Objective("val_x", maximize=False, label="val x", digits=4)
    assert low.progress("x", HISTORY, 5) == ("validation x: 0.5000 at generation 0 -> 0.2500 at generation 10 "
                                              "(best 0.1250 at generation 5)")
    high = Objective("val_x", maximize=True, label="val x", digits=2)
    assert high.progress("x", HISTORY, 0) == ("validation x: 0.50 at generation 0 -> 0.25 at generation 10 "
                                               "(best 0.50 at generation 0)")
