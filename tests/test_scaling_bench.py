"""The scaling benchmark (``es-l2l bench --only scaling``) end to end at tiny sizes, and its model's arithmetic.

Figures are not asserted (a shared, noisy machine); the structure, the invariance across workers, the
fit's finiteness and the model's formula are.
"""

import json
import math

import pytest

from es_l2l.bench import main
from es_l2l.bench.scaling_model import (
    BANDWIDTH_BPS,
    LATENCY_S,
    BPTTConstants,
    ESConstants,
    crossover,
    fit_linear,
    network_s,
    ring_allreduce_s,
)


def test_fit_recovers_the_coefficients_of_exact_data():
    cells = [(w, n) for n in (1, 2, 4) for w in (1, 2, 4, 8, 16, 32) if n <= w]
    ys = [0.003 + 0.0004 * w + 0.0011 * n for w, n in cells]
    a, b, c = fit_linear([list(x) for x in cells], ys)
    assert a == pytest.approx(0.003, abs=1e-12) and b == pytest.approx(0.0004, abs=1e-12) and c == pytest.approx(0.0011, abs=1e-12)
    with pytest.raises(ValueError, match="singular"):
        fit_linear([[2.0], [2.0]], [1.0, 1.0])


def test_network_terms_on_hand_values():
    # 1,000 workers x 20 kB of recipe + 8 kB back over 10 Gb/s, plus one 0.2 ms round trip
    assert network_s(1000, 20_000, 8_000) == pytest.approx(2e-4 + 20_008_000 / 1.25e9)
    assert ring_allreduce_s(1, 10**6) == 0.0
    # ring of 4: 6 latency hops and 2 * 3/4 of 4 MB through each link
    assert ring_allreduce_s(4, 10**6) == pytest.approx(6 * LATENCY_S + 1.5 * 4e6 / BANDWIDTH_BPS)
    assert crossover({1: 10.0, 2: 6.0, 4: 3.0}, {1: 5.0, 2: 4.0, 4: 4.0}) == 4
    assert crossover({1: 10.0}, {1: 5.0}) is None


def test_model_formulas():
    k = ESConstants(popsize=64, driver_s=0.01, validation_s=1.0, validate_every=50, tracking_s=0.004, worker_fixed_s=0.002,
                    sim_per_member_s=0.003, traffic_s=0.005, coord_per_actor_s=0.0002, bytes_out=20_000, bytes_back=4_000)
    serial = 0.01 + 1.0 / 50 + 0.004
    assert k.generation_s(1) == pytest.approx(serial + 0.002 + 0.003 * 64 + 0.005)
    assert k.generation_s(3) == pytest.approx(serial + 0.002 + 0.003 * 22 + 0.005 + 0.0002 * 2)  # ceil(64 / 3) = 22
    assert k.generation_s(64, network=True) == pytest.approx(
        serial + 0.002 + 0.003 * 1 + 0.005 + 0.0002 * 63 + network_s(64, 20_000, 4_000))
    assert k.generation_s(1000, network=True) == k.generation_s(64, network=True)  # no share for W > P
    b = BPTTConstants(batch=64, gradient_floats=2000, compute_per_task_s=0.002, fixed_s=0.01, coord_base_s=0.003,
                      coord_per_actor_s=0.0002)
    assert b.step_s(1) == pytest.approx(0.002 * 64 + 0.01)
    assert b.step_s(2) == pytest.approx(0.002 * 32 + 0.01 + 0.003 + 0.0004)


@pytest.mark.slow  # 245 s on the shared 2-core machine at load 19 (nine Ray actors start); select with -m slow
def test_quick_scaling_section_end_to_end(tmp_path, ray_local):
    assert main(quick=True, out=str(tmp_path), only=("scaling",)) == 0
    blob = json.loads((tmp_path / "scaling-quick.json").read_text())
    assert blob["benchmark"] == "scaling" and blob["machine"]["load_average_1_5_15min"] is not None

    (fam,) = blob["es"]
    (cell,) = fam["cells"]
    assert [r["workers"] for r in cell["runs"]] == [1, 2]
    assert cell["fitness_identical_across_workers"] is True  # one generation's numbers do not depend on W
    for r in cell["runs"]:
        m = r["median"]
        assert m["evaluation_s"] == pytest.approx(m["simulation_s"] + m["regen_s"] + m["traffic_s"])
        assert m["wall_s"] == pytest.approx(m["evaluation_s"] + m["driver_s"])
        assert m["simulation_s"] > 0 and m["record_s"] > 0 and m["bytes_out"] > 0 and m["bytes_back"] > 0
        assert all("load_1min" in g for g in r["generations"])

    (bptt,) = blob["bptt"]
    assert bptt["median"]["w2_allreduce_s"] > 0 and bptt["median"]["w1_s"] > 0 and math.isfinite(bptt["compute_per_task_s"])

    coord = blob["coordination"]
    assert [c["workers"] for c in coord["cells"]] == [1, 2, 4]
    fit = coord["fit"]
    assert math.isfinite(fit["a_s"]) and math.isfinite(fit["b_per_actor_s"])
    for c in coord["cells"]:
        assert c["fit_s"] == pytest.approx(fit["a_s"] + fit["b_per_actor_s"] * c["workers"])

    (es,) = blob["model"]["es"]
    k = es["constants"]
    assert all(math.isfinite(v) for v in k.values())
    cpu = coord["fit_driver_cpu"]  # the model's per-actor cost: the driver's CPU seconds per actor
    assert math.isfinite(cpu["a_s"]) and math.isfinite(cpu["b_per_actor_s"])
    assert k["coord_per_actor_s"] == max(cpu["b_per_actor_s"], 0.0)
    # the prediction for the measured W = 2 is the formula's value of the W = 1 constants
    by_hand = (k["driver_s"] + k["validation_s"] / k["validate_every"] + k["tracking_s"] + k["worker_fixed_s"]
               + k["sim_per_member_s"] * math.ceil(k["popsize"] / 2) + k["traffic_s"] + k["coord_per_actor_s"])
    v = es["validation_w2"]
    assert v["predicted_s"] == pytest.approx(by_hand)
    assert v["measured_s"] == cell["runs"][1]["median"]["generation_s"]
    assert v["error"] == pytest.approx(by_hand / v["measured_s"] - 1)
    assert set(es["predicted"]) >= {"1", "2", "1000"}
    (bm,) = blob["model"]["bptt"]
    kb = bm["constants"]
    assert bm["validation_w2"]["predicted_s"] == pytest.approx(
        kb["compute_per_task_s"] * math.ceil(kb["batch"] / 2) + kb["fixed_s"] + kb["coord_base_s"] + 2 * kb["coord_per_actor_s"])
