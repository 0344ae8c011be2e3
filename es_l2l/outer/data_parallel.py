"""Data-parallel BPTT (``bptt.workers = W > 1``): W Ray actors, one torch.distributed group.

Each actor holds a full replica of :class:`es_l2l.outer.bptt.GradientTrainer` (genome, leaves,
Adam and DEEP R state, all built from the config, so the replicas start equal). At every step the
driver sends each actor the step's seed keys and its contiguous share of the batch's tasks (task
``i`` of the batch is the same task whoever evaluates it: the seeds draw the whole batch, the
worker keeps its rows). Each actor computes its shard's loss scaled by the shard's share of the
batch, back-propagates, and the gradients are summed over the actors with one all-reduce (gloo on
the CPU, NCCL with ``run.device=cuda``): the mean over the whole batch, so every replica then takes
the single-process update (clipping, Adam, DEEP R) up to float rounding, and they stay equal. The
actors send back their shard's metrics; rank 0 also sends the genome vector. The driver keeps
everything else: validation, best genome, budgets, checkpoints and MLflow (its subscribers).

The shell builds the replicas (:func:`make_data_parallel`) before any MLflow run, as it builds
ES's evaluation actors, and hands them to the BPTT loop in place of an evaluator; the loop's step
loop is the driver's (:func:`es_l2l.outer.driver.drive`), unchanged. The config checks are
:func:`es_l2l.outer.bptt.check_data_parallel`.

Why Ray actors forming a process group rather than ``ray.train.torch.TorchTrainer``: a
TorchTrainer's training function owns the control flow until ``fit()`` returns, while our driver
must validate, apply budgets and emit the status dict between steps. Calling ``fit()`` once per
step would restart the worker group (seconds) every step; running the whole training inside one
``fit()`` would move validation and the stop decisions out of the driver. A TorchTrainer is this
same thing underneath (Ray actors that join a torch.distributed group), so nothing in the numbers
or the traffic differs.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING

import torch

from es_l2l.errors import CapacityError

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig
    from es_l2l.genome import Genome


def shards(batch: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous task ranges ``(start, stop)``, one per worker (the split ``torch.tensor_split`` makes)."""
    sizes = [len(c) for c in torch.tensor_split(torch.arange(batch), workers)]
    out, start = [], 0
    for size in sizes:
        out.append((start, start + size))
        start += size
    return out


def merge(results: list[dict], bounds: list[tuple[int, int]], batch: int) -> dict:
    """One step's metrics from the shards': task-weighted means (exact for means over tasks), sums of counts."""
    merged: dict = {}
    for key in results[0]:
        values = [r[key] for r in results]
        if key in ("neuron_steps",):
            merged[key] = sum(values)
        elif key in ("grad_norm", "lr", "allreduce_s") or key.startswith("active_"):
            merged[key] = values[0]  # the same on every replica (the reduced gradient's norm, the schedule)
        else:
            merged[key] = sum(v * (b - a) / batch for v, (a, b) in zip(values, bounds))
    merged["fitness_best"] = merged["fitness_mean"]  # one genome: its fitness on the batch
    return merged


class _Replica:
    """One data-parallel worker: a GradientTrainer replica in a torch.distributed group."""

    def __init__(self, tree: dict, rank: int, world: int):
        from es_l2l.config import ExperimentConfig
        from es_l2l.genome import build_genome
        from es_l2l.outer.shell import gradient_trainer

        self.cfg = ExperimentConfig.model_validate(tree)
        if self.cfg.run.threads is not None:
            torch.set_num_threads(self.cfg.run.threads)
        self.rank, self.world = rank, world
        genome = build_genome(self.cfg)
        self.trainer = gradient_trainer(self.cfg, genome)
        self.allreduce_s = 0.0

    def address(self) -> tuple[str, int]:
        """Rank 0's (ip, free port) for the group's rendezvous."""
        import ray

        ip = ray.util.get_node_ip_address()
        with socket.socket() as s:
            s.bind((ip, 0))
            return ip, s.getsockname()[1]

    def join(self, ip: str, port: int) -> int:
        import torch.distributed as dist

        if ip in ("127.0.0.1", "localhost"):
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # a local Ray: the group stays on loopback
        backend = "nccl" if self.cfg.run.device == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://{ip}:{port}", rank=self.rank, world_size=self.world)
        return os.getpid()

    def _reduce(self, grads: list[torch.Tensor]) -> None:
        import torch.distributed as dist

        t0 = time.perf_counter()
        flat = torch.cat([g.reshape(-1) for g in grads])  # one all-reduce of all D gradients
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        self.allreduce_s = time.perf_counter() - t0

    def step(self, seed_keys: tuple[int, ...], total: int, shard: tuple[int, int]) -> tuple[dict, torch.Tensor | None]:
        metrics = self.trainer.step(seed_keys, total, shard=shard, reduce=self._reduce)
        metrics["allreduce_s"] = self.allreduce_s
        for name, count in self.trainer.active_connections().items():
            metrics[f"active_{name}"] = count
        return metrics, (self.trainer.vector.clone() if self.rank == 0 else None)

    def vector(self) -> torch.Tensor:
        return self.trainer.vector.clone()

    def set_vector(self, vector: torch.Tensor) -> None:
        self.trainer.set_vector(vector)

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class DataParallelTrainer:
    """The driver's handle on W replicas; ``step`` is one data-parallel Adam step."""

    def __init__(self, cfg: ExperimentConfig, genome: Genome):
        import ray

        from es_l2l.cluster.evaluators import init_ray

        workers = cfg.bptt.workers
        self.batch = cfg.bptt.batch_size or cfg.task.batch_size
        self.bounds = shards(self.batch, workers)
        init_ray(cfg, min_cpus=workers)
        have = float(ray.cluster_resources().get("CPU", 0.0))
        if workers > have + 1e-9:
            raise CapacityError(
                f"bptt.workers={workers} needs {workers} CPUs but the Ray cluster has {have:g}; lower bptt.workers or add nodes"
            )
        self._ray = ray
        gpus = 1.0 if cfg.run.device == "cuda" else 0.0
        actor = ray.remote(_Replica)
        tree = cfg.model_dump(mode="json")
        self.actors = [actor.options(num_cpus=1, num_gpus=gpus).remote(tree, r, workers) for r in range(workers)]
        ip, port = ray.get(self.actors[0].address.remote())
        self._pids = ray.get([a.join.remote(ip, port) for a in self.actors])  # the group forms when all have joined
        self.vector = ray.get(self.actors[0].vector.remote())
        self.active: dict[str, int] = {}

    def pids(self) -> list[int]:
        """The replicas' process ids (they have started and joined the group)."""
        return list(self._pids)

    def active_connections(self) -> dict[str, int]:
        """DEEP R's active connections after the last step (the same on every replica)."""
        return dict(self.active)

    def step(self, seed_keys: tuple[int, ...], total: int) -> dict:
        refs = [a.step.remote(seed_keys, total, b) for a, b in zip(self.actors, self.bounds)]
        results = self._ray.get(refs)
        self.vector = results[0][1]
        merged = merge([r[0] for r in results], self.bounds, self.batch)
        self.active = {k.removeprefix("active_"): merged.pop(k) for k in [k for k in merged if k.startswith("active_")]}
        return merged

    def close(self) -> None:
        for a in self.actors:
            try:
                self._ray.get(a.close.remote(), timeout=10)
            except Exception:  # noqa: BLE001  (a dead actor has nothing to close)
                pass
            self._ray.kill(a)
        self.actors = []


def make_data_parallel(cfg: ExperimentConfig, genome: Genome) -> DataParallelTrainer | None:
    """The shell's data-parallel trainer for ``bptt.workers > 1`` (None otherwise), built before any MLflow run
    so that Ray errors (too few CPUs) leave none; the BPTT loop takes it as its ``evaluator``."""
    return DataParallelTrainer(cfg, genome) if cfg.bptt.workers > 1 else None
