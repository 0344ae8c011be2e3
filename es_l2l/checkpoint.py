"""Loadable checkpoints: the config plus named genomes (flat search-space vectors)."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from es_l2l.config import ExperimentConfig
from es_l2l.genome import Genome, build_genome

FORMAT = "es-l2l/checkpoint/1"
RESUME_FORMAT = "es-l2l/resume/1"
RESUME_ARTIFACT = "resume.pkl"


def save_checkpoint(path: str | Path, cfg: ExperimentConfig, genomes: dict[str, torch.Tensor], **meta) -> Path:
    path = Path(path)
    torch.save(
        {"format": FORMAT, "config": cfg.model_dump(mode="json"), "genomes": {k: v.cpu() for k, v in genomes.items()}, "meta": meta},
        path,
    )
    return path


def load_checkpoint(path: str | Path) -> tuple[ExperimentConfig, Genome, dict[str, torch.Tensor], dict]:
    """Returns (config, genome layout, named genome vectors, metadata)."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    if blob.get("format") != FORMAT:
        raise ValueError(f"'{path}' is not an es-l2l checkpoint (format {blob.get('format')!r}, expected {FORMAT!r})")
    cfg = ExperimentConfig.model_validate(blob["config"])
    genome = build_genome(cfg)
    return cfg, genome, blob["genomes"], blob["meta"]


class Checkpointer:
    """Status-dict subscriber: at each validation step, logs ``checkpoint.pt`` (current centre,
    best genome so far, initial genome) to the run, so a run that fails keeps its latest genomes;
    every ``run.checkpoint_every`` generations, logs ``resume.pkl`` for ``es-l2l run --resume``."""

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
    """The driver's resumable state (see ``run_es``) with the config, as a pickle."""
    path = Path(path)
    path.write_bytes(pickle.dumps({"format": RESUME_FORMAT, "config": cfg.model_dump(mode="json"), **state}))
    return path


def load_resume(path: str | Path) -> dict:
    """A pickle: load only resume files from your own runs."""
    blob = pickle.loads(Path(path).read_bytes())
    if not isinstance(blob, dict) or blob.get("format") != RESUME_FORMAT:
        raise ValueError(f"'{path}' is not an es-l2l resume file (expected format {RESUME_FORMAT!r})")
    return blob
