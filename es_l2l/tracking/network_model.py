"""The trained network as an MLflow model: ``mlflow.pyfunc.load_model("runs:/ID/model")``.

Each run logs its best genome (with the config that built it) as a ``pyfunc`` model under the
artifact path ``model``; ``predict`` takes task episodes (input spikes) and returns the
network's readout at every step, so the network can be used, or scored on new tasks, without
es-l2l's training code (es-l2l itself must be installed: the model's ``python_model`` is
:class:`NetworkPyfunc`). ``es-l2l evaluate`` accepts ``runs:/ID`` and ``models:/NAME/VERSION`` URIs
as well as checkpoint files.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow.pyfunc
import numpy as np

MODEL_PATH = "model"  # artifact path of the model in its run
CHECKPOINT = "checkpoint"  # the model's artifact key: the checkpoint file


class NetworkPyfunc(mlflow.pyfunc.PythonModel):
    """``predict(episodes)``: episodes (B, T, n_in) of input spikes (0/1; a numpy array, a tensor, or
    a dict with ``inputs`` and an optional ``genome``: best, final or initial) -> readouts
    (B, T, n_out) as a numpy array. Models that are not spiking networks answer the same way."""

    def load_context(self, context) -> None:
        from es_l2l.tracking.checkpoint import load_checkpoint

        self.cfg, self.genome, self.genomes, self.meta = load_checkpoint(context.artifacts[CHECKPOINT])

    def predict(self, context, model_input: np.ndarray, params=None):
        # np.ndarray: a hint MLflow infers no schema from, so it neither validates the input
        # (a dict or a tensor is accepted too) nor warns "add type hints to predict"
        import torch

        from es_l2l.context import RunContext

        which = "best"
        if isinstance(model_input, dict):
            which = str(model_input.get("genome", which))
            model_input = model_input["inputs"]
        x = torch.as_tensor(np.asarray(model_input), dtype=torch.float32)
        if x.dim() != 3 or x.shape[-1] != self.genome.n_in:
            raise ValueError(f"episodes must be (batch, steps, {self.genome.n_in}) input spikes, got shape {tuple(x.shape)}")
        with torch.no_grad():
            params = self.genome.params(self.genomes[which].unsqueeze(0))
            out = RunContext.of(self.cfg).simulate(params, x)  # the checkpoint's model kind
        return out.y[0].numpy()  # (B, T, n_out)


def log_model(tracker, checkpoint: str | Path) -> None:
    """Save the checkpoint as a pyfunc model and log it to ``tracker``'s run under ``model``."""
    import importlib.metadata as md

    reqs = [f"{name}=={md.version(name)}" for name in ("torch", "mlflow", "pydantic", "pyyaml", "numpy")]
    entry = Path(__file__).with_name("pyfunc_entry.py")  # a model from code: MLflow stores no pickle
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / MODEL_PATH
        pyfunc_log.setLevel(logging.ERROR)  # "failed to infer model signature": on purpose, the inputs are arrays of any shape
        try:
            mlflow.pyfunc.save_model(str(out), python_model=str(entry), artifacts={CHECKPOINT: str(checkpoint)},
                                     pip_requirements=reqs + ["es-l2l"])
        finally:
            pyfunc_log.setLevel(level)
        for file in sorted(p for p in out.rglob("*") if p.is_file()):  # file by file: an outage spools each
            folder = file.parent.relative_to(out.parent).as_posix()
            tracker.log_artifact(file, folder)


def checkpoint_from_uri(uri: str, folder: str | Path) -> Path:
    """The checkpoint file behind ``runs:/ID`` (its ``checkpoint.pt``), ``runs:/ID/model`` or
    ``models:/NAME/VERSION`` (the model's checkpoint artifact), downloaded into ``folder``."""
    import mlflow.artifacts

    if uri.startswith("runs:/") and uri.rstrip("/").count("/") == 1:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri.rstrip("/") + "/checkpoint.pt", dst_path=str(folder)))
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder)))
    found = sorted(local.rglob("*.pt"))
    if not found:
        raise FileNotFoundError(f"'{uri}' holds no es-l2l checkpoint; pass runs:/RUN_ID or a model logged by es-l2l")
    return found[0]


# The name models logged by es-l2l before the top level was grouped import (their stored entry file
# says ``from es_l2l.mlflow_model import LSNNModel``; es_l2l.moved_modules maps the module path).
LSNNModel = NetworkPyfunc
