"""Loadable checkpoints: the config plus named genomes (flat search-space vectors)."""

from __future__ import annotations

from pathlib import Path

import torch

from es_l2l.config import ExperimentConfig
from es_l2l.genome import Genome, build_genome
from es_l2l.redact import safe_config
from es_l2l.safe_io import UnsafeFile, is_raw_pickle, load_blob, save_blob, torch_load_data

FORMAT = "es-l2l/checkpoint/1"
RESUME_FORMAT = "es-l2l/resume/2"
RESUME_ARTIFACT = "resume.pt"
LEGACY_RESUME_ARTIFACT = "resume.pkl"  # a pickle (es-l2l before resume/2): refused, never loaded


def save_checkpoint(path: str | Path, cfg: ExperimentConfig, genomes: dict[str, torch.Tensor], **meta) -> Path:
    path = Path(path)
    torch.save(
        {"format": FORMAT, "config": safe_config(cfg), "genomes": {k: v.cpu() for k, v in genomes.items()}, "meta": meta},
        path,
    )
    return path


def renamed_values(config):
    """A stored config with values renamed since it was written brought up to date (the same numbers):
    the teacher family's ``task.encoding: rate`` is ``analog``."""
    task = config.get("task") if isinstance(config, dict) else None
    if isinstance(task, dict) and task.get("encoding") == "rate":
        return {**config, "task": {**task, "encoding": "analog"}}
    return config


def load_checkpoint(path: str | Path) -> tuple[ExperimentConfig, Genome, dict[str, torch.Tensor], dict]:
    """Returns (config, genome layout, named genome vectors, metadata)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"'{path}' is a directory, not an es-l2l checkpoint; pass its checkpoint.pt")
    if path.is_file() and is_raw_pickle(path):
        raise ValueError(f"'{path}' is not an es-l2l checkpoint (a bare pickle, which es-l2l never loads); pass a checkpoint.pt from a run's artifacts")
    try:
        blob = torch_load_data(path)  # data only (weights_only): never runs code from the file
    except Exception as exc:  # a text file, a random file, a pickle with objects...
        raise ValueError(f"'{path}' is not an es-l2l checkpoint ({type(exc).__name__}); pass a checkpoint.pt from a run's artifacts") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        blob = blob if isinstance(blob, dict) else {}
        raise ValueError(f"'{path}' is not an es-l2l checkpoint (format {blob.get('format')!r}, expected {FORMAT!r})")
    try:
        cfg = ExperimentConfig.model_validate(renamed_values(blob.get("config")))
    except Exception as exc:  # pydantic ValidationError: a checkpoint from an incompatible version
        raise ValueError(f"'{path}' holds a config this es-l2l cannot read ({str(exc).splitlines()[0]}); evaluate it with the version that wrote it") from None
    genome = build_genome(cfg)
    genomes = blob.get("genomes")
    if not isinstance(genomes, dict) or not {"best", "final", "initial"} <= set(genomes) or any(
        not isinstance(genomes[k], torch.Tensor) or genomes[k].shape != (genome.dim,) for k in ("best", "final", "initial")
    ):
        raise ValueError(f"'{path}' is a damaged es-l2l checkpoint (its genomes do not match its config's layout, D={genome.dim})")
    return cfg, genome, genomes, blob.get("meta") or {}


class Checkpointer:
    """Status-dict subscriber: at each validation step, logs ``checkpoint.pt`` (current centre,
    best genome so far, initial genome) to the run, so a run that fails keeps its latest genomes;
    every ``run.checkpoint_every`` generations, logs ``resume.pt`` for ``es-l2l run --resume``."""

    def __init__(self, cfg: ExperimentConfig, tracker, folder: str | Path):
        self.cfg, self.tracker, self.folder = cfg, tracker, Path(folder)

    def __call__(self, status: dict) -> None:
        if "resume_state" in status:
            self.tracker.log_artifact(save_resume(self.folder / RESUME_ARTIFACT, self.cfg, status["resume_state"]))
        if "genomes" not in status:
            return
        g = status["genomes"]
        genomes = {"best": g["best"], "final": g["center"], "initial": g["initial"]}
        meta = dict(best_generation=status["best_generation"], generations=status["generation"])
        self.tracker.log_artifact(save_checkpoint(self.folder / "checkpoint.pt", self.cfg, genomes, **meta))


def save_resume(path: str | Path, cfg: ExperimentConfig, state: dict) -> Path:
    """The driver's resumable state (see ``run_es``) with the config: tensors plus JSON (es_l2l.safe_io)."""
    return save_blob(path, RESUME_FORMAT, {"config": safe_config(cfg), **state})


_RESUME_KEYS = {"config": dict, "generation": int, "initial": torch.Tensor, "best": torch.Tensor, "best_generation": int,
                "neuron_steps": int, "status0": dict, "searcher": dict}


def load_resume(path: str | Path) -> dict:
    """A resume file written by :func:`save_resume`; loading it runs no code from the file.

    Raises ``ValueError`` (one line) for a legacy pickle ``resume.pkl`` or anything that is not one.
    """
    blob = load_blob(path, RESUME_FORMAT, "resume file")
    for key, kind in _RESUME_KEYS.items():
        if not isinstance(blob.get(key), kind):
            raise UnsafeFile(f"'{path}' is a damaged es-l2l resume file ({key} is missing or not a {kind.__name__})")
    return blob


class ResumeError(RuntimeError):
    """The run to resume, or its resume file, cannot be used (one line for the user)."""


def fetch_resume(run_id: str, uri: str) -> dict:
    """The resume state of MLflow run ``run_id`` at ``uri``, checked: an ES run, not FINISHED, with a
    ``resume.pt`` (a legacy ``resume.pkl`` is refused, never unpickled). Raises :class:`ResumeError`."""
    import tempfile

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from es_l2l.redact import redact_uri

    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ResumeError(f"no MLflow run '{run_id}' at {redact_uri(uri)}; pass the tracking URI it was logged to (--set tracking.uri=... or MLFLOW_TRACKING_URI)") from None
    outer = run.data.params.get("outer", "es")
    if outer != "es":
        raise ResumeError(f"MLflow run '{run_id}' is an outer={outer} run; only ES runs resume, so start it again instead")
    if run.info.status == "FINISHED":
        raise ResumeError(f"MLflow run '{run_id}' is FINISHED; there is nothing to resume (start a new run to train longer)")
    names = {a.path for a in client.list_artifacts(run_id)}
    if RESUME_ARTIFACT not in names:
        if LEGACY_RESUME_ARTIFACT in names:
            raise ResumeError(f"MLflow run '{run_id}' has only a {LEGACY_RESUME_ARTIFACT}, written by an older version of es-l2l as a pickle, which cannot be loaded safely; start the run again")
        raise ResumeError(f"MLflow run '{run_id}' has no {RESUME_ARTIFACT} yet (it is logged every run.checkpoint_every generations); start it again instead")
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line on stderr, not a progress bar
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, RESUME_ARTIFACT, tmp)
            return load_resume(path)
        except UnsafeFile as exc:  # name the run's artifact, not the temporary download
            raise ResumeError(str(exc).replace(f"'{path}'", f"the {RESUME_ARTIFACT} of MLflow run '{run_id}'")) from None
        except (MlflowException, OSError) as exc:
            raise ResumeError(f"cannot download {RESUME_ARTIFACT} of MLflow run '{run_id}' ({type(exc).__name__}); check the tracking server and retry") from None
