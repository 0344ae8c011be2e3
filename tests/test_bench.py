"""The benchmark suite runs every section and writes well-formed JSON (figures are not asserted: noisy)."""

import json

import pytest

from es_l2l.bench import SECTIONS, main
from es_l2l.bench.norse_peer import VENV


@pytest.mark.slow  # run by .ci/run; a bench cell stays in the default run (tests/outer/test_guided.py::test_the_bench_cell_times_guided_es_beside_es_and_bptt)
def test_quick_suite_writes_json_for_every_section(tmp_path, ray_local):
    # Norse's venv takes minutes to build: use it when `es-l2l bench` has built it, else the
    # section must say why it skipped.
    built = (VENV / ".installed").exists()
    # the scaling section has its own test (tests/test_scaling_bench.py, slow: it starts nine Ray actors)
    sections = tuple(s for s in SECTIONS if s != "scaling")
    assert main(quick=True, out=str(tmp_path), build_norse=built, only=sections) == 0
    blobs = {s: json.loads((tmp_path / f"{s}-quick.json").read_text()) for s in sections}
    for s, blob in blobs.items():
        assert blob["benchmark"] == s and blob["quick"] is True
        assert blob["machine"]["torch"] and blob["machine"]["cpu_count"] >= 1 and blob["date"]

    sim = blobs["sim"]
    cell = sim["forward"][0]
    assert (cell["P"], cell["B"], cell["N"]) == (4, 4, 32)
    assert set(cell["median_seconds"]) >= {"batched_auto", "batched_dense", "loop", "bare_bmm", "reference_step_loop"}
    assert cell["ratio_batched_over_loop"] > 0 and 0 < cell["fraction_of_roofline_dense"]
    assert 0 <= cell["firing_rate_per_step"] < 1 and cell["auto_event_steps"] <= cell["T"]
    back = sim["backward"][0]
    assert "capped" in back or back["ratio_batched_over_loop"] > 0
    assert [r["rate"] for r in sim["event_term"]["rates"]][:2] == [0.001, 0.005]
    assert len(sim["regimes"]["regimes"]) == 2
    assert "skipped" in sim["fusion"]["compile"]  # quick runs do not compile
    assert 0 <= sim["precision_cpu"]["bf16"]["spike_mismatch_fraction"] <= 1
    assert "skipped" in sim["cuda"] or sim["cuda"]["P"] > 0

    norse = blobs["norse"]
    if built:
        assert norse["network_steps_per_s"] > 0 and norse["comparison"]["by_population"][0]["ratio_over_norse"] > 0
    else:
        assert "not built" in norse["skipped"]

    es = blobs["es"]
    assert [r["workers"] for r in es["runs"]] == [1, 2]
    for r in es["runs"]:
        m = r["median"]
        assert m["wall_s"] > 0 and m["simulation_s"] > 0 and m["bytes_to_workers"] > 0
        assert m["wall_s"] == pytest.approx(m["simulation_s"] + m["worker_sampling_s"] + m["driver_s"] + m["communication_s"])

    bptt = blobs["bptt"]
    assert {c["recurrent"] for c in bptt["cells"]} == {"dense", "event"}
    assert all(c["median_seconds"] > 0 and c["autograd_saved_bytes"] > 0 for c in bptt["cells"])


def test_quick_lowrank_section_measures_every_variant_side_by_side(tmp_path):
    assert main(quick=True, out=str(tmp_path), only=("lowrank",)) == 0
    blob = json.loads((tmp_path / "lowrank-quick.json").read_text())
    (cell,) = blob["cells"]
    assert (cell["P"], cell["N"]) == (8, 16)
    assert set(cell["member_neuron_steps_per_s"]) == {"full_rank", "batch_inference", "lowrank_r1", "lowrank_r4"}
    assert all(v > 0 for v in cell["member_neuron_steps_per_s"].values())
    assert set(cell["lowrank_over_batch_inference"]) == set(cell["lowrank_over_full_rank"]) == {"r1", "r4"}
