"""Network exposure of a local run: Ray's servers listen on every interface (Ray 2.60 offers no way
to bind them to loopback), so es-l2l guards a local Ray with a random token (docs/failures.md)."""

import pytest
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A fresh interpreter (Ray reads its auth settings when imported): start the local Ray the way
# `es-l2l run` does, then let a process without the token try to attach to its GCS.
SCRIPT = r"""
import os, subprocess, sys
from es_l2l.config import load_config
from es_l2l.cluster.preflight import local_ray_token
cfg = load_config(sys.argv[1], ["run.workers=1"])
assert local_ray_token(cfg)
from es_l2l.cluster.evaluators import init_ray
init_ray(cfg)
import ray
assert ray.get(ray.remote(lambda: 7).remote()) == 7
gcs = ray._private.worker._global_node.gcs_address
env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
code = f"import ray; ray.init(address='{gcs}', log_to_driver=False); print('STRANGER CONNECTED')"
p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
print("STRANGER", "CONNECTED" if "STRANGER CONNECTED" in p.stdout else "REFUSED")
ray.shutdown()
"""


@pytest.mark.slow  # 25-50 s through real services; .ci/run runs it
def test_a_local_ray_refuses_a_process_without_its_token(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "configs" / "smoke.yaml")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "STRANGER REFUSED" in proc.stdout, proc.stdout + proc.stderr[-2000:]
