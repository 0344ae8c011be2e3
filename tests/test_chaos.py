"""The chaos run (benchmarks/chaos.py): Ray workers SIGKILLed, the MLflow server restarted, the driver
SIGKILLed and resumed; the run ends exactly where an undisturbed one does. About 5.5 minutes on
2 shared cores, so marked slow (deselected by default): `pytest -m slow tests/test_chaos.py`."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_disturbed_run_ends_exactly_where_an_undisturbed_one_does(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from chaos import chaos

    report = chaos(tmp_path, generations=300)
    assert len(report["events"]) >= 7 and not report["missed"], report["events"]
    assert report["status"] == "FINISHED"
    assert report["final_equal"] and report["best_equal"]
    assert report["metrics_compared"] > 20 and not report["metrics_differing"], report["metrics_differing"]
    assert not report["metrics_with_duplicate_steps"], report["metrics_with_duplicate_steps"]
    assert not report["spool_left"]
