"""The shell's side of the outer-loop boundary: what a loop receives, built from the root config.

An outer loop sees its own config section, the :class:`es_l2l.context.RunContext` and the
:class:`es_l2l.outer.base.LoopInputs` built here; its facts read a :class:`es_l2l.outer.base.LoopSetting`.
This is the one module under ``outer/`` that reads the root config and calls the task family and
the model kind on the loops' behalf (the gradient loss, validation, the status extras, the model's
blocks), so that a change of those signatures is a change here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch

from es_l2l.families import family_of
from es_l2l.models import get_model
from es_l2l.outer import OUTER_LOOPS, get_loop
from es_l2l.outer.base import GradientLoss, LoopInputs, LoopSetting, OuterLoop
from es_l2l.seeds import STREAM_VALIDATION, SeedKey

if TYPE_CHECKING:
    from es_l2l.config import ExperimentConfig
    from es_l2l.families.base import Evaluation
    from es_l2l.genome import Genome
    from es_l2l.outer.bptt import GradientTrainer


def loop_of(cfg: ExperimentConfig) -> OuterLoop:
    """The outer loop of a validated config."""
    return get_loop(cfg.outer)


def sections_of(cfg: ExperimentConfig) -> dict[str, Any]:
    """Every outer-loop section of the config, by key."""
    loops = [*OUTER_LOOPS.values(), get_loop(cfg.outer)]
    return {loop.section: getattr(cfg, loop.section) for loop in loops if loop.section and hasattr(cfg, loop.section)}


def section_of(cfg: ExperimentConfig, loop: OuterLoop | None = None) -> Any:
    """The loop's own section (None for a loop without one)."""
    loop = loop or loop_of(cfg)
    return getattr(cfg, loop.section, None) if loop.section else None


def setting_of(cfg: ExperimentConfig) -> LoopSetting:
    """What a loop may read of ``cfg`` when it checks it and states its facts."""
    family, model = family_of(cfg.task), get_model(cfg.model.kind)

    def model_blocks() -> tuple:
        n_in, n_out = family.io_sizes(cfg.task)
        return tuple(model.blocks(cfg.model, cfg.genome, n_in, n_out))

    return LoopSetting(sections=sections_of(cfg), genome=cfg.genome, task=cfg.task, family=family, model=cfg.model,
                       spiking=model.spiking, workers=cfg.run.workers, validation_tasks=cfg.run.validation_tasks,
                       model_blocks=model_blocks, units=model.units(cfg.model))


def check_config(cfg: ExperimentConfig) -> None:
    """The loop's checks of a config (ValueError, one sentence), and data-parallel BPTT's."""
    from es_l2l.outer.bptt import check_data_parallel

    setting = setting_of(cfg)
    loop_of(cfg).check(setting)
    if "bptt" in setting.sections:
        check_data_parallel(setting.sections["bptt"], setting, cfg.outer)  # bptt.workers > 1: the loop and the family can split a step's tasks


def gradient_loss_of(cfg: ExperimentConfig) -> GradientLoss | None:
    """The family's gradient loss as a loop calls it: ``(params, seed_keys, batch, shard=None) -> (loss, ev, terms)``."""
    from es_l2l.context import RunContext

    family = family_of(cfg.task)
    if family.gradient_loss_name is None:
        return None
    # the loops that take gradients through the spikes do so along bptt.backend's path (auto: the fused C backward on CPU)
    backend = getattr(sections_of(cfg).get("bptt"), "backend", None)
    ctx = RunContext.of(cfg) if backend is None else RunContext.of(cfg).with_backend(backend)

    def loss(params, seed_keys: tuple[int, ...], batch: int, shard: tuple[int, int] | None = None):
        if shard is not None:
            return family.gradient_loss_shard(cfg.task, ctx, params, SeedKey(*seed_keys), batch, *shard)
        return family.gradient_loss(cfg.task, ctx, params, SeedKey(*seed_keys), batch)

    return loss


def inputs_of(cfg: ExperimentConfig, genome: Genome, evaluator=None, loop: OuterLoop | None = None) -> LoopInputs:
    """What the shell hands ``loop`` (default: the config's) when it starts."""
    loop = loop or loop_of(cfg)
    sections = sections_of(cfg)
    declared = {k: sections[k] for k in loop.sections if k in sections and k != loop.section}
    return LoopInputs(genome=genome, evaluator=evaluator, gradient_loss=gradient_loss_of(cfg), batch_size=cfg.task.batch_size,
                      sections=declared, generations=cfg.run.generations)


def gradient_trainer(cfg: ExperimentConfig, genome: Genome, vector: torch.Tensor | None = None) -> GradientTrainer:
    """A :class:`es_l2l.outer.bptt.GradientTrainer` of ``cfg``'s ``bptt.train`` blocks, from ``vector``
    (default: the genome's initial vector): data-parallel replicas, benchmarks and tests build theirs here."""
    from es_l2l.context import RunContext
    from es_l2l.outer.bptt import GradientTrainer

    b = cfg.bptt
    vector = genome.initial_vector() if vector is None else vector
    return GradientTrainer(b, RunContext.of(cfg), genome, gradient_loss_of(cfg), b.batch_size or cfg.task.batch_size, vector, b.train)


def held_out(cfg: ExperimentConfig, genome: Genome, vector: torch.Tensor, stream: int) -> Evaluation:
    """One genome on the fixed held-out tasks of ``stream`` (validation or test)."""
    from es_l2l.fitness import evaluate

    keys = (cfg.run.seed, stream)
    return evaluate(cfg, genome, vector.unsqueeze(0), keys, batch=cfg.run.validation_tasks, device=cfg.run.device)


def validation_metrics(cfg: ExperimentConfig, genome: Genome, vector: torch.Tensor) -> dict[str, float]:
    """One genome's scalar summaries on the validation tasks (``val_*``, the family's)."""
    return family_of(cfg.task).validation_metrics(held_out(cfg, genome, vector, STREAM_VALIDATION))


def driver_services(cfg: ExperimentConfig, genome: Genome) -> tuple[Callable, Callable, Any]:
    """What the driver asks of the family: (validation of a vector, the status extras of a generation, the objective)."""
    family = family_of(cfg.task)
    return (lambda vector: validation_metrics(cfg, genome, vector)), (lambda generation: family.status_extras(cfg.task, generation)), family.objective
