"""The benchmark entry point runs and writes well-formed JSON (figures are not asserted: noisy)."""

import json

from es_l2l.bench import main


def test_quick_benchmark_writes_json(tmp_path):
    assert main(quick=True, out=str(tmp_path)) == 0
    blob = json.loads((tmp_path / "simulation-quick.json").read_text())
    r = blob["results"][0]
    assert r["shapes"]["P"] == 8 and len(r["seconds"]["batched"]) == 2
    assert r["ratio_batched_over_loop"] > 0 and blob["machine"]["torch"]
