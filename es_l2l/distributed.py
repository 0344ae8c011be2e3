"""Ray start-up or attachment, and the evaluation actors.

Each :class:`EvalWorker` rebuilds the genome layout from the config (a pure function of it)
and evaluates its contiguous share of the population in one vectorised call. Since an
evaluation is a pure function of (genome, task seed), a restarted actor repeats a lost
evaluation with the same result, and the number of workers never changes the numbers.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Protocol

import numpy as np
import torch

from es_l2l.config import ExperimentConfig
from es_l2l.fitness import TeacherEval, evaluate
from es_l2l.genome import Genome, build_genome
from es_l2l.tasks.teacher import n_inputs


class ClusterError(RuntimeError):
    """Ray could not be started or reached, or a worker was lost for good."""


class Evaluator(Protocol):
    def __call__(self, vectors: torch.Tensor, seed_keys: tuple[int, ...]) -> TeacherEval: ...

    def close(self) -> None: ...


def concat(evals: list[TeacherEval]) -> TeacherEval:
    return TeacherEval(
        fitness=torch.cat([e.fitness for e in evals]),
        mse=torch.cat([e.mse for e in evals]),
        mse_per_trial=torch.cat([e.mse_per_trial for e in evals]),
        rate_hz=torch.cat([e.rate_hz for e in evals]),
        predictions=torch.cat([e.predictions for e in evals]),
        neuron_steps=sum(e.neuron_steps for e in evals),
    )


def _light(e: TeacherEval) -> TeacherEval:
    """Drop per-task predictions before sending results back (traffic stays O(P))."""
    return e._replace(predictions=e.predictions.new_zeros(e.predictions.shape[0], 0, 0))


class LocalEvaluator:
    """Evaluate the whole population in this process (``run.workers = 0``)."""

    def __init__(self, cfg: ExperimentConfig, genome: Genome):
        self.cfg, self.genome = cfg, genome

    def __call__(self, vectors, seed_keys):
        return _light(evaluate(self.cfg, self.genome, vectors, seed_keys, device=self.cfg.run.device))

    def close(self) -> None:
        pass


def init_ray(cfg: ExperimentConfig) -> None:
    """Attach to ``run.address`` or start a quiet local Ray bound to 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
    address = cfg.run.address
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, **quiet)
        except Exception as exc:  # Ray raises ConnectionError, TimeoutError, RuntimeError...
            raise _unreachable(address, type(exc).__name__) from None
        return
    cpus = max(int(np.ceil(cfg.run.workers * cfg.run.cpus_per_worker)), os.cpu_count() or 1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=cpus,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        dashboard_host="127.0.0.1",
        **quiet,
    )


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a host:port that does not answer (Ray itself retries for minutes)."""
    if address == "auto" or "://" in address and not address.startswith("ray://"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"Ray address '{address}' is not of the form HOST:PORT or ray://HOST:PORT; fix --address")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise _unreachable(address, exc.strerror or type(exc).__name__) from None


def _unreachable(address: str, why: str) -> ClusterError:
    return ClusterError(
        f"cannot reach a Ray cluster at '{address}' ({why}); start one with 'ray start --head' or fix "
        "--address (e.g. ray://HEAD:10001 or HEAD:6379), or leave it out to run on a local Ray"
    )


class _Worker:
    """Body of the evaluation actor (wrapped by ``ray.remote`` lazily, so importing is cheap)."""

    def __init__(self, cfg_tree: dict):
        self.cfg = ExperimentConfig.model_validate(cfg_tree)
        self.genome = build_genome(self.cfg, n_inputs(self.cfg.task))
        self.device = self.cfg.run.device

    def evaluate(self, vectors: np.ndarray, seed_keys: tuple[int, ...]) -> TeacherEval:
        e = evaluate(self.cfg, self.genome, torch.from_numpy(vectors), seed_keys, device=self.device)
        return TeacherEval(*[t.cpu() if isinstance(t, torch.Tensor) else t for t in _light(e)])

    def pid(self) -> int:
        return os.getpid()


class RayEvaluator:
    """A pool of Ray evaluation actors; owns them and kills them on ``close``."""

    def __init__(self, cfg: ExperimentConfig, n_workers: int):
        import ray

        init_ray(cfg)
        self._ray = ray
        gpus = 1.0 if cfg.run.device == "cuda" else 0.0
        have = ray.cluster_resources().get("GPU", 0.0)
        if gpus and have < n_workers * gpus:
            raise ClusterError(
                f"run.device=cuda asks for {n_workers} GPU worker(s) but the Ray cluster has {have:g} GPU(s); "
                "add GPU nodes, lower run.workers, or set run.device=cpu"
            )
        actor = ray.remote(max_restarts=3, max_task_retries=3)(_Worker)
        tree = cfg.model_dump(mode="json")
        self.actors = [
            actor.options(num_cpus=cfg.run.cpus_per_worker, num_gpus=gpus).remote(tree) for _ in range(n_workers)
        ]

    def __call__(self, vectors: torch.Tensor, seed_keys: tuple[int, ...]) -> TeacherEval:
        chunks = [c for c in torch.tensor_split(vectors.detach().cpu(), len(self.actors)) if len(c)]
        refs = [a.evaluate.remote(c.numpy(), seed_keys) for a, c in zip(self.actors, chunks)]
        try:
            return concat(self._ray.get(refs))
        except self._ray.exceptions.ActorDiedError as exc:
            raise ClusterError(
                f"an evaluation worker died and could not be restarted ({str(exc).splitlines()[0][:200]}); "
                "check the worker's memory and logs, then rerun"
            ) from None
        except self._ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise ClusterError(f"an evaluation failed on a worker: {type(cause).__name__}: {cause}") from None

    def pids(self) -> list[int]:
        return self._ray.get([a.pid.remote() for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []


def make_evaluator(cfg: ExperimentConfig, genome: Genome) -> Evaluator:
    if cfg.run.workers == 0:
        if cfg.run.device == "cuda" and not torch.cuda.is_available():
            raise ClusterError("run.device=cuda but this torch sees no GPU; install a CUDA build of torch or set run.device=cpu")
        return LocalEvaluator(cfg, genome)
    return RayEvaluator(cfg, cfg.run.workers)
