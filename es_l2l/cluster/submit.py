"""``es-l2l submit``: run an experiment on a Ray cluster through Ray's Jobs SDK.

The job's runtime environment carries this package's source and the resolved config as its
working directory, and the MLflow tracking URI as an environment variable; the job's driver is
``es-l2l run config.yaml --address auto`` on the cluster. The cluster's Python needs es-l2l's
dependencies (torch, evotorch, mlflow): bake them into the node image (see cluster/).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from es_l2l.config import ExperimentConfig
from es_l2l.cluster.evaluators import ClusterError
from es_l2l.tracking.redact import redact_uri, safe_config
from es_l2l.tracking.run import tracking_uri
from es_l2l.tracking.preflight import is_server

JOB_ID_ENV = "ES_L2L_RAY_JOB_ID"  # the driver tags its MLflow run with it
ENTRYPOINT = "python -m es_l2l.cli run config.yaml --address auto"
FINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def runtime_env(cfg: ExperimentConfig, folder: Path, job_id: str) -> dict:
    """Write the package and the resolved config into ``folder``; the runtime environment shipping them."""
    package = Path(__file__).resolve().parent
    shutil.copytree(package, folder / package.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    tree = safe_config(cfg)  # no credentials in the package Ray stores
    env = {JOB_ID_ENV: job_id, "RAY_USAGE_STATS_ENABLED": "0"}
    uri = tracking_uri(cfg)
    if is_server(uri):
        env["MLFLOW_TRACKING_URI"] = uri  # prefer MLFLOW_TRACKING_USERNAME/PASSWORD on the cluster to a URI with them
        tree["tracking"]["uri"] = None
    (folder / "config.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    return {"working_dir": str(folder), "env_vars": env}


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # ConnectionError, RuntimeError (auth), ValueError (bad address)...
        why = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ClusterError(
            f"cannot reach Ray's job server at '{address}' ({why}); pass the dashboard address "
            "(e.g. http://HEAD:8265) and, on clusters with token authentication, set RAY_AUTH_TOKEN"
        ) from None


def submit(cfg: ExperimentConfig, address: str, follow: bool, say=print) -> int:
    """Submit the run; with ``follow``, stream its logs and return 0 only if it SUCCEEDED."""
    if not cfg.tracking.uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise ClusterError(
            "es-l2l submit needs a tracking store the cluster can reach: the default ./mlflow.db would be written into "
            "the job's temporary working folder and deleted with it; pass --set tracking.uri=http://HOST:5000"
        )
    client = _client(address)
    job_id = f"es-l2l-{cfg.name}-{uuid.uuid4().hex[:8]}"
    uri = tracking_uri(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        env = runtime_env(cfg, Path(tmp), job_id)
        client.submit_job(entrypoint=ENTRYPOINT, runtime_env=env, submission_id=job_id, metadata={"config": cfg.name})
    if "MLFLOW_TRACKING_URI" not in env["env_vars"]:
        say(f"warning: tracking URI {uri} is local to this machine: the job logs to a SQLite file at that path on the "
            "cluster; set tracking.uri to a tracking server the cluster can reach")
    say(f"submitted Ray job {job_id}")
    say(f"follow: ray job logs --address {address} {job_id} --follow")
    say(f"stop:   ray job stop --address {address} {job_id}")
    say(f"MLflow: the run tagged ray.job_submission_id='{job_id}' in experiment '{cfg.tracking.experiment}' at {redact_uri(uri)}")
    if not follow:
        return 0

    async def tail():
        async for lines in client.tail_job_logs(job_id):
            say(lines, end="")

    asyncio.run(tail())
    while (status := str(client.get_job_status(job_id)).split(".")[-1]) not in FINAL:
        time.sleep(1.0)
    say(f"Ray job {job_id} {status}")
    return 0 if status == "SUCCEEDED" else 1
