"""BPTT outer loop: Adam through the unrolled spiking dynamics (pseudo-derivative).

Trains the genome's differentiable blocks listed in ``bptt.train`` on the same task batches and
the same loss as ES (``-fitness``: the MSE plus the firing-rate regulariser), with gradient-norm
clipping, a learning-rate schedule and optional DEEP R rewiring of ``w_in`` / ``w_rec``. The
genome stays a flat search-space vector with ES's layout, so checkpoints, validation and the
held-out report are shared with ES unchanged.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Callable, Literal

import torch
from pydantic import Field, model_validator

from es_l2l.context import RunContext
from es_l2l.families import family_of
from es_l2l.fitness import detach
from es_l2l.outer import deep_r
from es_l2l.outer.base import OuterLoop, RunResult, Subscriber
from es_l2l.outer.deep_r import DeepRConfig
from es_l2l.outer.driver import Driver
from es_l2l.schema import DIFFERENTIABLE, Strict
from es_l2l.seeds import STREAM_INIT, STREAM_REWIRE, STREAM_TRAIN, SeedKey, generator

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig
    from es_l2l.families.base import Evaluation
    from es_l2l.genome import Genome


class BPTTConfig(Strict):
    """Gradient outer loop: Adam through the unrolled spiking dynamics (pseudo-derivative)."""

    train: list[Literal[DIFFERENTIABLE]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["w_in", "w_rec", "w_out", "b_out"],
        description="blocks trained by gradient; any of " + ", ".join(DIFFERENTIABLE),
    )
    batch_size: int | None = Field(None, ge=1, description="tasks per gradient step (None: task.batch_size)")
    backend: Literal["auto", "kernel", "autograd"] = Field(
        "auto",
        description="how gradients go through the spikes: kernel (the fused C backward, exact, CPU), autograd (torch's "
        "graph of every step) or auto (the kernel where it applies: CPU float32/float64 rollouts; autograd elsewhere, "
        "e.g. on CUDA or in a closed loop)",
    )
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    lr_schedule: Literal["constant", "step", "cosine"] = Field("constant", description="learning-rate schedule")
    lr_decay: float = Field(0.5, gt=0, le=1, description="step schedule: multiply the rate by this ...")
    lr_decay_every: int = Field(500, ge=1, description="... every this many steps")
    grad_clip: float | None = Field(1.0, gt=0, description="clip the gradient's global norm (None: no clipping)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas")
    deep_r: DeepRConfig = Field(default_factory=DeepRConfig)
    workers: int = Field(
        1,
        ge=1,
        description="data-parallel processes per gradient step: each takes its share of the step's tasks and the "
        "gradients are all-reduced (1: the single-process loop; see docs/cluster.md)",
    )

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.train)) != len(self.train):
            raise ValueError("bptt.train lists a block twice")
        for block in self.deep_r.blocks if self.deep_r.enabled else ():
            if block not in self.train:
                raise ValueError(f"bptt.deep_r rewires '{block}', so bptt.train must include it")
        return self


def learning_rate(cfg: "BPTTConfig", step: int, total: int) -> float:
    """The scheduled learning rate at (0-based) ``step`` of ``total``."""
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_decay ** (step // cfg.lr_decay_every)
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
    return cfg.lr


class GradientTrainer:
    """Owns one genome's trainable leaves, their Adam state and DEEP R state.

    ``vector`` is the full (D,) search-space genome; only the blocks in ``names`` change.
    """

    def __init__(self, cfg: ExperimentConfig, genome: Genome, vector: torch.Tensor, names: list[str] | tuple[str, ...]):
        self.cfg, self.genome = cfg, genome
        self.ctx = RunContext.of(cfg).with_backend(cfg.bptt.backend)  # gradients through bptt.backend's path
        self.names = tuple(n for n in names if n in genome.block_map)  # the blocks the model kind has
        self.vector = vector.detach().clone().cpu()  # the genome stays on the CPU; the leaves live on run.device
        self.device = torch.device(cfg.run.device)
        self.slices = genome.slices()
        genes = genome.decode(self.vector.unsqueeze(0))
        self.bounds = {n: genome.block_map[n].bounds_search() for n in self.names}
        dr = cfg.bptt.deep_r
        self.rewired: dict[str, deep_r.Rewiring] = {}
        self.leaves: dict[str, torch.Tensor] = {}
        for i, name in enumerate(self.names):
            value = genes[name][0].clone()
            if dr.enabled and name in dr.blocks:
                gen = generator(cfg.run.seed, STREAM_INIT, STREAM_REWIRE, i)
                rw, value = deep_r.init_rewiring(
                    value, dr.connectivity, gen, no_self=name == "w_rec", dale=dr.dale, excitatory_fraction=dr.excitatory_fraction
                )
                self.rewired[name] = rw
            self.leaves[name] = value.to(self.device).requires_grad_(True)
        self._write_back()
        b = cfg.bptt
        self.optimizer = torch.optim.Adam(list(self.leaves.values()), lr=b.lr, betas=b.betas)
        self.steps_done = 0

    def _block_values(self) -> dict[str, torch.Tensor]:
        """Model-space-ready search values of the trained blocks (DEEP R blocks as signed weights)."""
        return {n: deep_r.weights(leaf, self.rewired[n]) if n in self.rewired else leaf for n, leaf in self.leaves.items()}

    def _write_back(self) -> None:
        with torch.no_grad():
            for name, value in self._block_values().items():
                self.vector[self.slices[name]] = value.reshape(-1).cpu()

    def set_vector(self, vector: torch.Tensor) -> None:
        """Take the other (non-trained) blocks from ``vector``; the trained blocks keep their state."""
        self.vector = vector.detach().clone()
        self._write_back()

    def loss_and_eval(
        self, seed_keys: tuple[int, ...], shard: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, Evaluation, dict[str, float]]:
        """The family's gradient loss on the tasks of ``seed_keys``, its evaluation and extra terms
        (on tasks ``shard = (start, stop)`` of the batch only, when given: data-parallel workers)."""
        genes = self.genome.decode(self.vector.unsqueeze(0).to(self.device))
        for name, value in self._block_values().items():
            genes[name] = value.unsqueeze(0)
        params = self.genome.to_model(genes)
        batch = self.cfg.bptt.batch_size or self.cfg.task.batch_size
        if shard is not None:
            return family_of(self.cfg.task).gradient_loss_shard(self.cfg.task, self.ctx, params, SeedKey(*seed_keys), batch, *shard)
        return family_of(self.cfg.task).gradient_loss(self.cfg.task, self.ctx, params, SeedKey(*seed_keys), batch)

    def step(
        self,
        seed_keys: tuple[int, ...],
        total_steps: int,
        shard: tuple[int, int] | None = None,
        reduce: Callable[[list[torch.Tensor]], None] | None = None,
    ) -> dict:
        """One Adam step (then DEEP R) on the tasks of ``seed_keys``; returns the step's metrics.

        A data-parallel worker passes its ``shard`` of the batch and ``reduce``, which turns the
        leaves' shard gradients (each scaled by the shard's share of the batch) into their sum
        over the workers in place, so that every worker then takes the single-process update.
        """
        b = self.cfg.bptt
        lr = learning_rate(b, self.steps_done, total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss, ev, terms = self.loss_and_eval(seed_keys, shard)
        leaves = list(self.leaves.values())
        if shard is None:
            loss.backward()
        else:
            batch = b.batch_size or self.cfg.task.batch_size
            (loss * ((shard[1] - shard[0]) / batch)).backward()
            for leaf in leaves:
                if leaf.grad is None:
                    leaf.grad = torch.zeros_like(leaf)
            reduce([leaf.grad for leaf in leaves])
        if b.grad_clip is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(leaves, b.grad_clip))
        else:
            grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in leaves if p.grad is not None])))
        if not math.isfinite(grad_norm) or not torch.isfinite(loss):
            raise FloatingPointError(
                f"BPTT step {self.steps_done + 1} produced a non-finite loss or gradient; lower bptt.lr or set bptt.grad_clip"
            )
        self.optimizer.step()
        ev = detach(ev)
        with torch.no_grad():
            for name, leaf in self.leaves.items():
                lo, hi = self.bounds[name]
                if name in self.rewired:
                    dr = b.deep_r
                    # Rewiring runs on the CPU (cheap, and its random draws come from CPU generators).
                    gen = generator(self.cfg.run.seed, STREAM_REWIRE, self.steps_done, len(name))
                    theta = leaf.detach().cpu()
                    theta, rw, reset = deep_r.rewire(theta, self.rewired[name], lr=lr, l1=dr.l1, temperature=dr.temperature, gen=gen, upper=hi)
                    leaf.copy_(theta.to(leaf.device))
                    self.rewired[name] = rw
                    state = self.optimizer.state.get(leaf)
                    for key in ("exp_avg", "exp_avg_sq"):
                        if state and key in state:
                            state[key][reset.to(leaf.device)] = 0.0
                else:
                    leaf.clamp_(lo, hi)
        self._write_back()
        self.steps_done += 1
        return {
            "fitness_mean": float(ev.fitness.mean()),
            "fitness_best": float(ev.fitness.max()),
            **ev.summary(),
            **terms,
            "grad_norm": grad_norm,
            "lr": lr,
            "neuron_steps": ev.neuron_steps,
        }

    def active_connections(self) -> dict[str, int]:
        return {name: int(rw.active.sum()) for name, rw in self.rewired.items()}


def run_bptt(cfg: ExperimentConfig, genome: Genome, subscribers: list[Subscriber] = (), trainer=None) -> RunResult:
    """Meta-train the ``bptt.train`` blocks by BPTT; one step per "generation" of the status dict.

    ``trainer``: the shell's :class:`es_l2l.outer.data_parallel.DataParallelTrainer` when
    ``bptt.workers > 1`` (the steps then run on its Ray replicas); None: a local GradientTrainer.
    """
    if trainer is None:
        if cfg.bptt.workers > 1:
            raise ValueError(
                f"bptt.workers={cfg.bptt.workers} needs the data-parallel trainer: pass "
                "es_l2l.outer.data_parallel.make_data_parallel(cfg, genome) as the loop's evaluator"
            )
        trainer = GradientTrainer(cfg, genome, genome.initial_vector(), cfg.bptt.train)
    driver = Driver(cfg, genome, trainer.vector.clone(), subscribers)  # DEEP R starts sparse
    for step in range(1, cfg.run.generations + 1):
        t0 = time.perf_counter()
        metrics = trainer.step((cfg.run.seed, STREAM_TRAIN, step), cfg.run.generations)
        seconds = time.perf_counter() - t0
        steps = metrics.pop("neuron_steps")
        for name, count in trainer.active_connections().items():
            metrics[f"active_{name}"] = count
        if driver.record(step, seconds, steps, metrics, lambda: trainer.vector.clone()):
            break
    return driver.result(trainer.vector.clone())


def check_gradient_blocks(cfg: ExperimentConfig) -> None:
    """What every loop that takes gradient steps needs of the config (BPTT and the hybrid)."""
    searched = set(cfg.genome.search)
    for block in cfg.bptt.train:
        if block not in searched:
            raise ValueError(f"bptt.train lists '{block}' but genome.search does not; add it to genome.search")
    if cfg.bptt.deep_r.enabled and (cfg.model.p_in < 1 or cfg.model.p_rec < 1):
        raise ValueError("bptt.deep_r sets the connectivity itself; set model.p_in=1 and model.p_rec=1")
    if cfg.bptt.deep_r.enabled and cfg.genome.mirror:
        raise ValueError("bptt.deep_r rewires connections one by one and breaks genome.mirror's symmetry; "
                         "set genome.mirror=false or bptt.deep_r.enabled=false")
    if cfg.bptt.deep_r.enabled and {"mask_in", "mask_rec"} & searched:
        raise ValueError("bptt.deep_r sets the connectivity itself; remove mask_in and mask_rec from genome.search")


class BPTT(OuterLoop):
    name = section = "bptt"
    config = BPTTConfig
    driver_gpu = True

    def check(self, cfg: ExperimentConfig) -> None:
        check_gradient_blocks(cfg)

    def describe(self, cfg: ExperimentConfig, family) -> str:
        how = f"BPTT on the {family.gradient_loss_name} loss (Adam lr={cfg.bptt.lr}) on {', '.join(cfg.bptt.train)}"
        how += " with DEEP R" if cfg.bptt.deep_r.enabled else ""
        return how + (f", each step's tasks split across {cfg.bptt.workers} data-parallel workers" if cfg.bptt.workers > 1 else "")

    def run(self, cfg, genome, evaluator, subscribers=(), resume=None) -> RunResult:
        return run_bptt(cfg, genome, subscribers, trainer=evaluator)  # evaluator: the data-parallel trainer, or None


def check_data_parallel(cfg: ExperimentConfig, family) -> None:
    """What ``bptt.workers > 1`` needs of the config (one sentence naming the keys)."""
    from es_l2l.models import get_model

    w = cfg.bptt.workers
    if w == 1:
        return
    if cfg.outer != "bptt":
        raise ValueError(
            f"bptt.workers={w} splits the gradient steps of outer=bptt only, not those of outer={cfg.outer}; "
            "set bptt.workers=1 or outer=bptt"
        )
    if family.gradient_loss_name is None:
        raise ValueError(f"bptt.workers={w}: the {family.name} family has no gradient loss; set bptt.workers=1")
    if not family.shards_tasks:
        raise ValueError(
            f"bptt.workers={w}: the {family.name} family cannot split a step's tasks across workers (it cannot draw a "
            "share of a batch's tasks on its own); set bptt.workers=1"
        )
    batch = cfg.bptt.batch_size or cfg.task.batch_size
    if w > batch:
        raise ValueError(f"bptt.workers={w} is more than the {batch} tasks of a step; lower bptt.workers or raise bptt.batch_size")
    if get_model(cfg.model.kind).spiking and cfg.model.rate_reg > 0:
        raise ValueError(
            f"bptt.workers={w} with model.rate_reg={cfg.model.rate_reg:g}: the rate regulariser is not a mean over tasks, "
            "so shards would not add up to the batch's gradient; set model.rate_reg=0 or bptt.workers=1"
        )
