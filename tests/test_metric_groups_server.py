"""A real `mlflow server` on loopback, a tiny `es-l2l run` against it, and the server's REST API read
with plain urllib: every metric key of the run is grouped (train/, val/, withheld/, system/)."""

import json
import os
import subprocess
import urllib.parse
import urllib.request

import pytest

from tests.test_tracking_outage import SMOKE, cli, server  # noqa: F401  (server: the fixture)

GROUPS = ("train/", "val/", "withheld/", "system/")


def rest(base: str, path: str, params: dict | None = None, body: dict | None = None) -> dict:
    url = f"{base}/api/2.0/mlflow/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.slow  # run by .ci/run; the grouped keys on a real store stay in the default run (tests/test_metric_keys.py)
def test_a_run_against_a_real_server_logs_only_grouped_metric_keys(server, tmp_path):  # noqa: F811
    env = dict(os.environ, MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="0.5")  # a sample within the short run
    proc = subprocess.run(
        cli("run", str(SMOKE), "--workers", "0", f"--set=tracking.uri={server.uri}", "--set=run.generations=4",
            "--set=run.validate_every=2", "--set=task.batch_size=4", "--set=run.validation_tasks=8"),
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    experiment = rest(server.uri, "experiments/get-by-name", {"experiment_name": "es-l2l"})["experiment"]
    (found,) = rest(server.uri, "runs/search", body={"experiment_ids": [experiment["experiment_id"]]})["runs"]
    run = rest(server.uri, "runs/get", {"run_id": found["info"]["run_id"]})["run"]
    assert run["info"]["status"] == "FINISHED"
    keys = {m["key"] for m in run["data"]["metrics"]}
    assert keys and all(k.startswith(GROUPS) for k in keys), sorted(k for k in keys if not k.startswith(GROUPS))
    for group in GROUPS:
        assert any(k.startswith(group) for k in keys), (group, sorted(keys))
    # the run page's "Model metrics" tab: one chart section per key up to its last "/", in the order of the
    # sorted keys (system/ has its own tab); the learning curves lead, the held-out report follows
    sections = list(dict.fromkeys(k.rsplit("/", 1)[0] for k in sorted(keys) if not k.startswith("system/")))
    assert sections[:2] == ["train", "val"] and len(sections) > 2, sections
    assert all(s.startswith("withheld/") for s in sections[2:]), sections
    assert {"train/fitness_mean", "train/elapsed_s", "val/mse_late", "val/best_mse_late", "withheld/model/mse_late",
            "withheld/untrained/mse_late", "withheld/running_mean/mse_late"} <= keys

    def steps(key: str) -> list[int]:
        found = rest(server.uri, "metrics/get-history", {"run_id": run["info"]["run_id"], "metric_key": key})
        return sorted(m["step"] for m in found.get("metrics", []))

    assert steps("train/fitness_mean") == [1, 2, 3, 4]
    assert steps("val/mse_late") == [0, 2, 4]
    assert steps("withheld/model/mse_late") == [4]  # the held-out report, at the last generation's step
