"""BPTT outer loop: Adam through the unrolled spiking dynamics (pseudo-derivative).

Trains the genome's differentiable blocks listed in ``bptt.train`` on the same task batches and
the same loss as ES (``-fitness``: the MSE plus the firing-rate regulariser), with gradient-norm
clipping, a learning-rate schedule and optional DEEP R rewiring of ``w_in`` / ``w_rec``. The
genome stays a flat search-space vector with ES's layout, so checkpoints, validation and the
held-out report are shared with ES unchanged.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Literal

import torch
from pydantic import Field, model_validator

from es_l2l.fitness import detach
from es_l2l.outer import deep_r
from es_l2l.outer.base import FLOAT, GradientLoss, LoopInputs, LoopSetting, OuterLoop, Search, centre_problem
from es_l2l.outer.deep_r import DeepRConfig
from es_l2l.schema import DIFFERENTIABLE, Strict
from es_l2l.seeds import STREAM_INIT, STREAM_REWIRE, STREAM_TRAIN, generator

if TYPE_CHECKING:
    from es_l2l.context import RunContext
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

    def __init__(self, bptt: BPTTConfig, ctx: RunContext, genome: Genome, loss: GradientLoss, batch: int,
                 vector: torch.Tensor, names: list[str] | tuple[str, ...]):
        self.bptt, self.seed, self.genome, self.loss, self.batch = bptt, ctx.seed, genome, loss, batch
        self.names = tuple(n for n in names if n in genome.block_map)  # the blocks the model kind has
        self.vector = vector.detach().clone().cpu()  # the genome stays on the CPU; the leaves live on run.device
        self.device = torch.device(ctx.device)
        self.slices = genome.slices()
        genes = genome.decode(self.vector.unsqueeze(0))
        self.bounds = {n: genome.block_map[n].bounds_search() for n in self.names}
        dr = bptt.deep_r
        self.rewired: dict[str, deep_r.Rewiring] = {}
        self.leaves: dict[str, torch.Tensor] = {}
        for i, name in enumerate(self.names):
            value = genes[name][0].clone()
            if dr.enabled and name in dr.blocks:
                gen = generator(ctx.seed, STREAM_INIT, STREAM_REWIRE, i)
                rw, value = deep_r.init_rewiring(
                    value, dr.connectivity, gen, no_self=name == "w_rec", dale=dr.dale, excitatory_fraction=dr.excitatory_fraction
                )
                self.rewired[name] = rw
            self.leaves[name] = value.to(self.device).requires_grad_(True)
        self._write_back()
        b = bptt
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
        return self.loss(params, seed_keys, self.batch, shard)

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
        b = self.bptt
        lr = learning_rate(b, self.steps_done, total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss, ev, terms = self.loss_and_eval(seed_keys, shard)
        leaves = list(self.leaves.values())
        if shard is None:
            loss.backward()
        else:
            (loss * ((shard[1] - shard[0]) / self.batch)).backward()
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
                    gen = generator(self.seed, STREAM_REWIRE, self.steps_done, len(name))
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

    def state(self) -> dict:
        """The trainer's state as plain data (the genome, the trained leaves, Adam's moments and step
        counts, DEEP R's masks, the steps taken), from which :meth:`restore` continues exactly."""
        adam = self.optimizer.state
        return {
            "format": 1,
            "class": "GradientTrainer",
            "vector": self.vector.clone(),
            "leaves": {n: leaf.detach().cpu().clone() for n, leaf in self.leaves.items()},
            "adam": {n: {k: v.detach().cpu().clone() for k, v in adam[leaf].items()} for n, leaf in self.leaves.items() if leaf in adam},
            "rewired": {n: rw._asdict() for n, rw in self.rewired.items()},
            "steps_done": self.steps_done,
        }

    def restore(self, state: dict) -> None:
        """Continue from :meth:`state` of a trainer built from the same config."""
        if not (isinstance(state, dict) and state.get("class") == "GradientTrainer" and state.get("format") == 1):
            raise ValueError("resume state does not fit this run: it was not saved by a gradient trainer")
        if set(state["leaves"]) != set(self.leaves) or set(state["rewired"]) != set(self.rewired):
            raise ValueError(f"resume state does not fit this run: it trains {', '.join(state['leaves'])}, "
                             f"the config {', '.join(self.leaves)}")
        for name, leaf in self.leaves.items():
            saved = state["leaves"][name]
            if saved.shape != leaf.shape:
                raise ValueError(f"resume state does not fit this run: {name} has shape {tuple(saved.shape)}, expected {tuple(leaf.shape)}")
            with torch.no_grad():
                leaf.copy_(saved.to(leaf.device, leaf.dtype))
            if name in state["adam"]:
                self.optimizer.state[leaf] = {k: v.to(leaf.device) if k != "step" else v.clone() for k, v in state["adam"][name].items()}
        self.rewired = {n: deep_r.Rewiring(**{k: v.clone() for k, v in rw.items()}) for n, rw in state["rewired"].items()}
        self.vector = state["vector"].clone()
        self.steps_done = int(state["steps_done"])


class GradientRun(Search):
    """BPTT: each step is one Adam step (then DEEP R) on a fresh task batch, a "generation" of the status dict.

    ``trainer``: the shell's :class:`es_l2l.outer.data_parallel.DataParallelTrainer` when
    ``bptt.workers > 1`` (the steps then run on its Ray replicas), else a local :class:`GradientTrainer`.
    """

    def __init__(self, trainer, seed: int, total: int):
        self.trainer, self.seed, self.total = trainer, seed, total

    def step(self, generation: int) -> dict:
        metrics = self.trainer.step((self.seed, STREAM_TRAIN, generation), self.total)
        for name, count in self.trainer.active_connections().items():
            metrics[f"active_{name}"] = count
        return metrics

    def centre(self) -> torch.Tensor:
        return self.trainer.vector.clone()  # DEEP R starts sparse: generation 0's centre is the trainer's

    @property
    def resumable(self) -> bool:
        return hasattr(self.trainer, "state")  # data-parallel replicas keep their state to themselves: no resume

    def state(self) -> dict:
        return self.trainer.state()

    def restore(self, state: dict) -> None:
        self.trainer.restore(state)


def check_gradient_blocks(bptt: BPTTConfig, setting: LoopSetting) -> None:
    """What every loop that takes gradient steps needs of the config (BPTT and the hybrid)."""
    searched = set(setting.genome.search)
    for block in bptt.train:
        if block not in searched:
            raise ValueError(f"bptt.train lists '{block}' but genome.search does not; add it to genome.search")
    if bptt.deep_r.enabled and (setting.model.p_in < 1 or setting.model.p_rec < 1):
        raise ValueError("bptt.deep_r sets the connectivity itself; set model.p_in=1 and model.p_rec=1")
    if bptt.deep_r.enabled and setting.genome.mirror:
        raise ValueError("bptt.deep_r rewires connections one by one and breaks genome.mirror's symmetry; "
                         "set genome.mirror=false or bptt.deep_r.enabled=false")
    if bptt.deep_r.enabled and {"mask_in", "mask_rec"} & searched:
        raise ValueError("bptt.deep_r sets the connectivity itself; remove mask_in and mask_rec from genome.search")


def graph_memory(bptt: BPTTConfig, setting: LoopSetting) -> dict[str, int]:
    """The autograd graph of a gradient step: ~8 floats per neuron and step (measured: 5.5 GB at 64 x 32 x 500 x 200)."""
    b = bptt.batch_size or setting.task.batch_size
    steps = setting.family.episode_steps(setting.task)
    return {"BPTT graph (B x T x N x 8 floats)": b * steps * setting.neurons() * 8 * FLOAT}


class BPTT(OuterLoop):
    """BPTT; resumable (the gradient trainer's state, with ``bptt.workers: 1``)."""

    name = section = "bptt"
    config = BPTTConfig
    driver_gpu = True
    resumable = True
    step_label = "gradient step"

    def state_problem(self, setting: LoopSetting, state: dict, dim: int) -> str | None:
        return centre_problem(state, dim, "vector")

    def check(self, setting: LoopSetting) -> None:
        check_gradient_blocks(self.own(setting), setting)

    def describe(self, setting: LoopSetting) -> str:
        b = self.own(setting)
        how = f"BPTT on the {setting.family.gradient_loss_name} loss (Adam lr={b.lr}) on {', '.join(b.train)}"
        how += " with DEEP R" if b.deep_r.enabled else ""
        return how + (f", each step's tasks split across {b.workers} data-parallel workers" if b.workers > 1 else "")

    def blocks(self, setting: LoopSetting) -> tuple[list[str], list[str]]:
        return [], list(self.own(setting).train)

    def memory(self, setting: LoopSetting, dim: int) -> dict[str, int]:
        return graph_memory(self.own(setting), setting)

    def needs_ray(self, setting: LoopSetting) -> bool:
        return self.own(setting).workers > 1  # the data-parallel replicas

    def start(self, section: BPTTConfig, ctx: RunContext, inputs: LoopInputs) -> Search:
        """``inputs.evaluator``: the data-parallel trainer (``bptt.workers > 1``), or None."""
        trainer = inputs.evaluator
        if trainer is None:
            if section.workers > 1:
                raise ValueError(
                    f"bptt.workers={section.workers} needs the data-parallel trainer: pass "
                    "es_l2l.outer.data_parallel.make_data_parallel(cfg, genome) as the loop's evaluator"
                )
            trainer = GradientTrainer(section, ctx, inputs.genome, inputs.gradient_loss, section.batch_size or inputs.batch_size,
                                      inputs.genome.initial_vector(), section.train)
        return GradientRun(trainer, ctx.seed, inputs.generations)


def check_data_parallel(bptt: BPTTConfig, setting: LoopSetting, outer: str) -> None:
    """What ``bptt.workers > 1`` needs of the config (one sentence naming the keys); ``outer``: the run's loop."""
    w = bptt.workers
    if w == 1:
        return
    if outer != "bptt":
        raise ValueError(
            f"bptt.workers={w} splits the gradient steps of outer=bptt only, not those of outer={outer}; "
            "set bptt.workers=1 or outer=bptt"
        )
    family = setting.family
    if family.gradient_loss_name is None:
        raise ValueError(f"bptt.workers={w}: the {family.name} family has no gradient loss; set bptt.workers=1")
    if not family.shards_tasks:
        raise ValueError(
            f"bptt.workers={w}: the {family.name} family cannot split a step's tasks across workers (it cannot draw a "
            "share of a batch's tasks on its own); set bptt.workers=1"
        )
    batch = bptt.batch_size or setting.task.batch_size
    if w > batch:
        raise ValueError(f"bptt.workers={w} is more than the {batch} tasks of a step; lower bptt.workers or raise bptt.batch_size")
    if setting.spiking and setting.model.rate_reg > 0:
        raise ValueError(
            f"bptt.workers={w} with model.rate_reg={setting.model.rate_reg:g}: the rate regulariser is not a mean over tasks, "
            "so shards would not add up to the batch's gradient; set model.rate_reg=0 or bptt.workers=1"
        )
