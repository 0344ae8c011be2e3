"""Loadable checkpoints: the config plus named genomes (flat search-space vectors)."""

from __future__ import annotations

from pathlib import Path

import torch

from es_l2l.config import ConfigError, ExperimentConfig, build_config, short_repr, stored_model
from es_l2l.genome import Genome, build_genome
from es_l2l.tracking.redact import safe_config
from es_l2l.tracking.tensor_files import UnsafeFile, is_raw_pickle, legacy_tree, load_blob, save_blob
from es_l2l.schema import check_tree

# safetensors files (es_l2l.tracking.tensor_files) under the artifact names runs have always logged, which users'
# commands (`es-l2l evaluate .../checkpoint.pt`, `runs:/ID`) and scripts already name
FORMAT = "es-l2l/checkpoint/2"
RESUME_FORMAT = "es-l2l/resume/3"
LEGACY_FORMAT = "es-l2l/checkpoint/1"  # a torch.save file (es-l2l before safetensors): still read, data only
LEGACY_RESUME_FORMAT = "es-l2l/resume/2"  # likewise, torch.save of the JSON string and the tensor table
RESUME_ARTIFACT = "resume.pt"
LEGACY_RESUME_ARTIFACT = "resume.pkl"  # a pickle (es-l2l before resume/2): refused, never loaded


def save_checkpoint(path: str | Path, cfg: ExperimentConfig, genomes: dict[str, torch.Tensor], **meta) -> Path:
    """``checkpoint.pt``: the genomes as safetensors tensors, the config and ``meta`` as JSON (es_l2l.tracking.tensor_files)."""
    return save_blob(path, FORMAT, {"config": safe_config(cfg), "genomes": dict(genomes), "meta": meta})


def renamed_values(config):
    """A stored config with values renamed since it was written brought up to date by its (registered)
    task family, the same numbers; anything else is left for the config check to name."""
    from es_l2l.families import FAMILIES, default_family

    config = stored_model(config)  # one model section for every kind, as es-l2l wrote it before 2026-12-02
    task = config.get("task") if isinstance(config, dict) else None
    family = FAMILIES.get(str(task.get("family", default_family()))) if isinstance(task, dict) else None
    return config if family is None else {**config, "task": family.stored_task(task)}  # registered families only: no import


def load_checkpoint(path: str | Path) -> tuple[ExperimentConfig, Genome, dict[str, torch.Tensor], dict]:
    """Returns (config, genome layout, named genome vectors, metadata); reads today's safetensors files
    and the ``torch.save`` ones es-l2l wrote before, running no code from either."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"'{path}' is a directory, not an es-l2l checkpoint; pass its checkpoint.pt")
    if path.is_file() and is_raw_pickle(path):
        raise ValueError(f"'{path}' is not an es-l2l checkpoint (a bare pickle, which es-l2l never loads); pass a checkpoint.pt from a run's artifacts")

    def legacy(blob):  # a checkpoint es-l2l wrote with torch.save (format 1): the dict itself, once bounded
        if not isinstance(blob, dict) or blob.get("format") != LEGACY_FORMAT:
            return None
        check_tree(blob, f"es-l2l checkpoint '{path}'", UnsafeFile)  # before anything walks it recursively
        return blob

    try:
        blob = load_blob(path, FORMAT, "checkpoint", legacy=legacy)
    except UnsafeFile as exc:  # a text or random file, a torch file holding objects, a damaged or crafted one...
        raise ValueError(str(exc).replace("; pass a file es-l2l wrote", "; pass a checkpoint.pt from a run's artifacts")) from None
    try:
        if not isinstance(blob.get("config"), dict):
            raise ConfigError(f"the config is a {type(blob.get('config')).__name__}, not a mapping")
        cfg = build_config(renamed_values(blob["config"]))  # an older version's names read as today's
    except (ConfigError, ValueError) as exc:  # a crafted file, or a checkpoint from an incompatible version
        raise ValueError(f"'{path}' holds a config this es-l2l cannot read ({exc}); evaluate it with the version that wrote it") from None
    genome = build_genome(cfg)
    genomes = blob.get("genomes")
    if not isinstance(genomes, dict) or not {"best", "final", "initial"} <= set(genomes) or any(
        not isinstance(genomes[k], torch.Tensor) or genomes[k].shape != (genome.dim,) for k in ("best", "final", "initial")
    ):
        raise ValueError(f"'{path}' is a damaged es-l2l checkpoint (its genomes do not match its config's layout, D={genome.dim})")
    for name in ("best", "final", "initial"):
        if not genomes[name].is_floating_point() or not bool(torch.isfinite(genomes[name]).all()):
            raise ValueError(f"'{path}' is a damaged es-l2l checkpoint (genome '{name}' holds non-finite or non-float values)")
    meta = blob.get("meta")
    meta = {} if meta is None else meta
    if not isinstance(meta, dict) or not all(_count(meta.get(k, 0)) for k in ("best_generation", "generations")) or (
        meta.get("best_generation", 0) > meta.get("generations", meta.get("best_generation", 0))
    ):
        raise ValueError(f"'{path}' is a damaged es-l2l checkpoint (meta must map best_generation <= generations, whole numbers >= 0; "
                         f"got {short_repr(meta)})")
    return cfg, genome, genomes, meta


def _count(value) -> bool:
    """A whole number from 0 to 10^9 (more generations than any run makes)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**9


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
    """The driver's resumable state (see :func:`es_l2l.outer.driver.drive`) with the config: safetensors tensors plus JSON (es_l2l.tracking.tensor_files)."""
    return save_blob(path, RESUME_FORMAT, {"config": safe_config(cfg), **state})


_RESUME_KEYS = {"config": dict, "generation": int, "initial": torch.Tensor, "best": torch.Tensor, "best_generation": int,
                "neuron_steps": int, "status0": dict, "searcher": dict}


def load_resume(path: str | Path) -> dict:
    """A resume file written by :func:`save_resume`; loading it runs no code from the file.

    Raises ``ValueError`` (one line) for a legacy pickle ``resume.pkl`` or anything that is not one.
    """
    blob = load_blob(path, RESUME_FORMAT, "resume file", legacy=lambda b: legacy_tree(b, LEGACY_RESUME_FORMAT))
    for key, kind in _RESUME_KEYS.items():
        if not isinstance(blob.get(key), kind):
            raise UnsafeFile(f"'{path}' is a damaged es-l2l resume file ({key} is missing or not a {kind.__name__})")
    try:
        cfg = build_config(stored_model(blob["config"]))
    except ConfigError as exc:
        raise UnsafeFile(f"'{path}' is a damaged es-l2l resume file (its config: {exc})") from None
    problem = resume_problem(blob, cfg, build_genome(cfg).dim)
    if problem:
        raise UnsafeFile(f"'{path}' is a damaged es-l2l resume file ({problem}); start the run again")
    return blob


def resume_problem(state: dict, cfg: ExperimentConfig, dim: int) -> str | None:
    """What in a loaded resume state cannot be true of a run of ``cfg`` (genome size ``dim``), naming the
    field; None when it fits. Checked before a run is reopened: a crafted file must not start a search
    at generation 10^12, with a genome of another shape or with a negative step size."""
    gen, best_gen, steps = state["generation"], state["best_generation"], state["neuron_steps"]
    if not 0 <= gen <= cfg.run.generations:
        return f"generation is {gen}, outside 0..{cfg.run.generations} (run.generations)"
    if not 0 <= best_gen <= gen:
        return f"best_generation is {best_gen}, outside 0..{gen} (the generation)"
    if steps < 0:
        return f"neuron_steps is {steps}, below 0"
    for key in ("initial", "best"):
        t = state[key]
        if tuple(t.shape) != (dim,) or not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            return f"{key} genome has shape {tuple(t.shape)} and dtype {t.dtype}, expected ({dim},) finite floats for this config"
    elapsed = state.get("elapsed_s", 0.0)
    if not isinstance(elapsed, (int, float)) or not 0 <= elapsed < float("inf"):
        return f"elapsed_s is {short_repr(elapsed)}, not a time >= 0"
    from es_l2l.outer.shell import loop_of, setting_of

    return loop_of(cfg).state_problem(setting_of(cfg), state["searcher"], dim)


class ResumeError(RuntimeError):
    """The run to resume, or its resume file, cannot be used (one line for the user)."""


def fetch_run(run_id: str, uri: str, error: type[Exception] = RuntimeError,
              where: str = "--set tracking.uri=... or MLFLOW_TRACKING_URI"):
    """MLflow run ``run_id`` at ``uri``, after the same probe as ``es-l2l run`` (a dead or silent server,
    or one that is not MLflow, is named within seconds). Raises ``error`` with one line: the store does
    not answer, or it has no such run."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from es_l2l.errors import PreflightError

    from es_l2l.tracking.preflight import probe_tracking
    from es_l2l.tracking.redact import redact_text, redact_uri

    try:
        probe_tracking(uri)
    except PreflightError as exc:
        raise error(str(exc)) from None
    try:
        return MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise error(f"no MLflow run '{run_id}' at {redact_uri(uri)}; pass the tracking URI it was logged to ({where})") from None
        raise error(f"the tracking store at {redact_uri(uri)} did not give run '{run_id}' "
                    f"({redact_text(str(exc).strip().splitlines()[0][:200]) if str(exc).strip() else type(exc).__name__}); "
                    "check the server and retry") from None
    except Exception as exc:  # requests' errors after MLflow's (short) retries
        raise error(f"the tracking store at {redact_uri(uri)} did not answer for run '{run_id}' ({type(exc).__name__}); "
                    "check the server and retry") from None


DRIVER_TAG = "es_l2l.driver"  # "HOST PID": the process driving the run (set when it starts or resumes)


def driver_lock(run_id: str):
    """An exclusive lock that the process driving run ``run_id`` holds while it runs (the kernel drops it
    when that process dies, even by SIGKILL); an open file, or None when another process on this
    machine holds it. Checking closes the file, which drops the lock of the checking process only."""
    import fcntl
    import os

    try:
        fh = open(_lock_path(run_id), "a")
    except OSError:  # an unwritable temporary folder: run unguarded rather than not at all
        return open(os.devnull)
    try:  # a POSIX record lock: per process, so the driver itself may reopen its own run
        fcntl.lockf(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    return fh


def release_driver_lock(run_id: str, fh, remove: bool = True) -> None:
    """Release the lock (the run has ended: its file goes too; a mere check keeps it, so that two
    processes checking at once never lock two different files)."""
    import contextlib

    if fh is not None and not fh.closed:
        if remove:
            with contextlib.suppress(OSError):
                _lock_path(run_id).unlink()
        fh.close()


def _lock_path(run_id: str) -> Path:
    import os
    import tempfile

    folder = Path(tempfile.gettempdir()) / f"es-l2l-drivers-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    return folder / f"{run_id}.lock"


def check_driver_gone(run, force: bool = False) -> None:
    """Refuse (:class:`ResumeError`) to resume a RUNNING run whose driver may still be alive: on this machine
    its driver lock says so for sure; on another machine nobody can tell, so ``--force`` is needed."""
    import socket

    if run.info.status != "RUNNING":
        return
    run_id = run.info.run_id
    host, _, pid = run.data.tags.get(DRIVER_TAG, "").partition(" ")
    if not host:
        return  # logged by an older es-l2l: nothing to check
    if host == socket.gethostname():
        lock = driver_lock(run_id)
        if lock is None:
            raise ResumeError(f"MLflow run '{run_id}' is still RUNNING: its driver (PID {pid} on this machine) is alive; "
                              f"wait for it, or stop it (kill {pid}: it is marked KILLED) and resume then")
        release_driver_lock(run_id, lock, remove=False)
        return
    if not force:
        raise ResumeError(f"MLflow run '{run_id}' is RUNNING, driven by PID {pid} on {host}, which this machine cannot check; "
                          f"if that driver is really dead (host down, process killed), resume with --force")


def fetch_resume(run_id: str, uri: str, force: bool = False) -> dict:
    """The resume state of MLflow run ``run_id`` at ``uri``, checked: an ES run, not FINISHED, with a
    ``resume.pt`` (a legacy ``resume.pkl`` is refused, never unpickled). Raises :class:`ResumeError`."""
    import tempfile

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    run = fetch_run(run_id, uri, ResumeError)
    client = MlflowClient(tracking_uri=uri)
    check_driver_gone(run, force)
    from es_l2l.outer import OUTER_LOOPS, get_loop

    outer = run.data.params.get("outer", next(iter(OUTER_LOOPS)))
    try:
        resumable = get_loop(outer).resumable
    except ValueError:
        resumable = False
    if not resumable:
        which = ", ".join(k for k, loop in OUTER_LOOPS.items() if loop.resumable)
        raise ResumeError(f"MLflow run '{run_id}' is an outer={outer} run; only {which} runs resume, so start it again instead")
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
