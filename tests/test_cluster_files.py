"""The shipped cluster files parse and carry the fields Ray's launcher and KubeRay require.

Launcher YAML is checked against Ray's own launcher schema (ray/autoscaler/ray-schema.json); the
KubeRay manifests against the fields the ray.io/v1 CRDs require, and the RayJob's entrypoint is
parsed by es-l2l's own CLI parser and config loader.
"""

import shlex
from pathlib import Path

import pytest
import yaml

from es_l2l.cli import _parser
from es_l2l.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"


@pytest.mark.parametrize("name, provider", [("aws.yaml", "aws"), ("gcp.yaml", "gcp")])
def test_launcher_yaml_validates_against_rays_schema(name, provider):
    import json

    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    cfg = yaml.safe_load((CLUSTER / name).read_text())
    jsonschema.validate(cfg, schema)  # a missing or misspelt field raises ValidationError
    assert cfg["provider"]["type"] == provider and cfg["provider"]["region"]
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0  # CPU head
    gpu = [t for n, t in types.items() if n != cfg["head_node_type"] and t["resources"].get("GPU", 0) > 0]
    assert gpu and all(t["max_workers"] >= t["min_workers"] >= 0 for t in gpu)
    if provider == "gcp":
        assert cfg["provider"]["project_id"] and cfg["provider"]["availability_zone"]
        (node,) = [t["node_config"] for t in gpu]
        assert node["guestAccelerators"][0]["acceleratorCount"] >= 1
        assert node["scheduling"][0]["onHostMaintenance"] == "TERMINATE"  # GCP refuses GPU VMs that migrate
    else:
        assert all(t["node_config"]["InstanceType"] for t in types.values())
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])


def _check_cluster_spec(spec: dict) -> None:
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    (container,) = head["template"]["spec"]["containers"]
    assert container["name"] and container["image"]
    assert {p["containerPort"] for p in container["ports"]} >= {6379, 8265}  # GCS and dashboard / Jobs API
    groups = spec["workerGroupSpecs"]
    assert groups and len({g["groupName"] for g in groups}) == len(groups)
    gpu_groups = 0
    for g in groups:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        assert isinstance(g["rayStartParams"], dict)
        for c in g["template"]["spec"]["containers"]:
            assert c["name"] and c["image"]
            gpu_groups += int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) > 0
    assert gpu_groups >= 1
    env = {e["name"]: e for e in container["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]


def test_kuberay_raycluster_manifest():
    doc = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster" and doc["metadata"]["name"]
    _check_cluster_spec(doc["spec"])


def test_kuberay_rayjob_runs_a_shipped_config():
    doc = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob" and doc["metadata"]["name"]
    spec = doc["spec"]
    _check_cluster_spec(spec["rayClusterSpec"])
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"] and runtime_env["env_vars"]["MLFLOW_TRACKING_URI"].startswith("http")
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "es-l2l"
    args = _parser().parse_args(argv[1:])
    assert args.command == "run" and args.address == "auto"
    cfg = load_config(ROOT / args.config, args.overrides)  # a shipped config, with valid overrides
    assert cfg.run.device == "cuda"
    gpus = sum(int(c["resources"]["limits"]["nvidia.com/gpu"]) * g["replicas"]
               for g in spec["rayClusterSpec"]["workerGroupSpecs"] for c in g["template"]["spec"]["containers"])
    assert cfg.run.workers * cfg.run.gpus_per_worker <= gpus  # the job fits on the cluster it creates
