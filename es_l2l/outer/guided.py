"""Guided evolution strategies: perturbations stretched along the subspace of recent surrogate gradients.

Maheswaranathan, Metz, Tucker, Choi, Sohl-Dickstein, "Guided evolutionary strategies: augmenting
random search with surrogate gradients", ICML 2019 (arXiv:1806.10230), Algorithm 1. Each generation:

1. one surrogate gradient of the family's gradient loss (the BPTT loss through the fused backward,
   an A2C loss in a closed loop) at the search centre, on ``guided.surrogate_batch`` tasks of the
   generation's task seed; the last ``k`` finite ones span the subspace ``U`` (D x k, orthonormal:
   a QR decomposition);
2. ``P / 2`` antithetic pairs ``x +- eps_i`` with ``eps_i = sigma (sqrt(alpha / D) n1 +
   sqrt((1 - alpha) / k) U n2)``, ``n1 ~ N(0, I_D)``, ``n2 ~ N(0, I_k)``: covariance
   ``sigma^2 (alpha / D I + (1 - alpha) / k U U^T)``. Here ``sigma = guided.stdev * sqrt(D)``, so
   that ``guided.stdev`` is the per-coordinate stdev of the isotropic part, on the scale of
   ``es.stdev_init``;
3. the estimate ``g = beta / (2 sigma^2 P/2) sum_i eps_i (w+_i - w-_i)`` from centered-rank shaped
   fitnesses ``w`` (the shaping the ES loop's PGPE uses), and the centre's step through an evotorch
   optimizer (ClipUp, Adam or SGD, as the ES loop's centre).

A surrogate gradient that is not finite joins no subspace; that generation samples the isotropic
part alone (alpha = 1) and ``surrogate_nan`` in the status dict counts such generations.

Ray workers never receive the population: a :class:`GuidedRecipe` (centre, ``U``, the scalars and
the seed keys: O(D + k D) bytes) lets each regenerate its members, pair ``i`` from a generator
keyed by (run seed, search stream, generation, i), so the numbers do not depend on the number of
workers; the rows' checksums come back as with ES's seed traffic. Resumable: the centre, the
gradient history (from which ``U`` is recomputed) and the optimizer's state are plain data.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import torch
from pydantic import Field, model_validator

from es_l2l.outer.base import (
    FLOAT,
    GradientLoss,
    LoopInputs,
    LoopSetting,
    NonFiniteFitness,
    OuterLoop,
    Search,
    centre_problem,
    population_memory,
)
from es_l2l.schema import DIFFERENTIABLE, Strict
from es_l2l.seeds import STREAM_SEARCH, STREAM_TRAIN, generator

if TYPE_CHECKING:
    from es_l2l.context import RunContext
    from es_l2l.genome import Genome
    from es_l2l.cluster.seed_traffic import Evaluator


class GuidedConfig(Strict):
    """Guided ES (Maheswaranathan et al. 2019): isotropic search plus a subspace of surrogate gradients."""

    popsize: int = Field(64, ge=2, description="population size P (even: antithetic pairs)")
    stdev: float = Field(
        0.05, gt=0,
        description="per-coordinate stdev of the isotropic part at alpha=1 (the paper's sigma / sqrt(D)), on the "
        "scale of es.stdev_init",
    )
    alpha: float = Field(0.5, ge=0, le=1, description="share of the variance in the full space; 1 - alpha lies in the gradient subspace")
    k: int = Field(2, ge=1, le=1024, description="the subspace is spanned by the last k surrogate gradients")
    surrogate_batch: int | None = Field(
        None, ge=1, description="tasks of the surrogate gradient, drawn from the generation's task seed (None: task.batch_size, "
        "the generation's own tasks)"
    )
    beta: float = Field(2.0, gt=0, description="the paper's beta: scale of the gradient estimate (felt by sgd only)")
    lr: float = Field(0.1, gt=0, description="centre learning rate (ClipUp step size, Adam or SGD rate)")
    optimizer: Literal["clipup", "adam", "sgd"] = Field("clipup", description="centre optimizer (evotorch's)")
    max_speed: float | None = Field(None, gt=0, description="ClipUp max speed (default 2 * lr)")
    nan_policy: Literal["error", "worst"] = Field(
        "error", description="a NaN fitness stops the run (error) or ranks last (worst)"
    )

    @model_validator(mode="after")
    def _even(self):
        if self.popsize % 2:
            raise ValueError(f"guided.popsize must be even (antithetic pairs), got {self.popsize}")
        return self


# --- the mathematics: pure functions of tensors ------------------------------------------------


def subspace(history: torch.Tensor) -> torch.Tensor:
    """(m, D) surrogate gradients, oldest first -> (D, m) orthonormal basis of their span: QR in float64,
    signed so that R's diagonal is positive (column j is then Gram-Schmidt's, unique: the oldest
    gradient's direction first)."""
    if len(history) == 0:
        return torch.zeros(history.shape[1], 0)
    q, r = torch.linalg.qr(history.double().T, mode="reduced")
    sign = torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(q.dtype)
    return (q * sign).float().contiguous()


def pair_noise(keys: tuple[int, ...], pairs: range, dim: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n1 (len(pairs), D), n2 (len(pairs), k)): pair ``i`` from its own generator keyed by ``(*keys, i)``."""
    n1, n2 = torch.empty(len(pairs), dim), torch.empty(len(pairs), k)
    for row, i in enumerate(pairs):
        gen = generator(*keys, i)
        n1[row] = torch.randn(dim, generator=gen)
        if k:
            n2[row] = torch.randn(k, generator=gen)
    return n1, n2


def perturbations(keys: tuple[int, ...], pairs: range, basis: torch.Tensor, stdev: float, alpha: float) -> torch.Tensor:
    """(len(pairs), D) directions ``eps_i = sigma (sqrt(alpha/D) n1 + sqrt((1-alpha)/k) U n2)``, ``sigma = stdev sqrt(D)``.

    Element-wise operations only (the subspace term is summed column by column, in a fixed order),
    so a pair's direction is bit for bit the same whichever rows are generated with it: what makes
    the numbers independent of the number of workers.
    """
    dim, k = basis.shape
    n1, n2 = pair_noise(keys, pairs, dim, k)
    eps = n1 * (stdev * math.sqrt(alpha))  # sigma sqrt(alpha / D) = stdev sqrt(alpha)
    if k and alpha < 1:
        sub = torch.zeros_like(eps)
        for j in range(k):
            sub = sub + n2[:, j : j + 1] * basis[:, j]
        eps = eps + sub * (stdev * math.sqrt(dim * (1.0 - alpha) / k))
    return eps


def antithetic(centre: torch.Tensor, eps: torch.Tensor, first_pair: int, lo: int, hi: int) -> torch.Tensor:
    """Members ``lo:hi`` of the population ``[x + eps_0, x - eps_0, x + eps_1, ...]``, from the
    directions of pairs ``first_pair, first_pair + 1, ...``."""
    members = torch.arange(lo, hi)
    rows = eps[members // 2 - first_pair]
    sign = torch.where(members % 2 == 0, 1.0, -1.0).unsqueeze(1)
    return centre.unsqueeze(0) + rows * sign


def centered_ranks(fitness: torch.Tensor) -> torch.Tensor:
    """Centered-rank shaping (evotorch's ``centered``, as PGPE uses): the ranks spread over [-0.5, 0.5]."""
    from evotorch.tools import rank

    return rank(fitness, "centered", higher_is_better=True)


def estimate(eps: torch.Tensor, fitness: torch.Tensor, stdev: float, beta: float) -> torch.Tensor:
    """The guided ES ascent estimate ``beta / (2 sigma^2 n) sum_i eps_i (w+_i - w-_i)`` over ``n``
    pairs, ``w`` the centered ranks of the (2n,) fitnesses, ``sigma^2 = stdev^2 D``."""
    pairs, dim = eps.shape
    w = centered_ranks(fitness)
    diff = w[0::2] - w[1::2]  # (pairs,)
    return (diff @ eps) * (beta / (2.0 * stdev**2 * dim * pairs))


class GuidedRecipe(NamedTuple):
    """What regenerates one generation's population: O(D + k D) numbers, never the (P, D) members."""

    centre: np.ndarray  # (D,) float32
    basis: np.ndarray  # (D, k') float32, orthonormal; k' = 0 samples the isotropic part alone
    stdev: float
    alpha: float  # this generation's (1 where the surrogate was unusable)
    keys: tuple[int, ...]  # (run seed, search stream, generation): pair i's generator takes (*keys, i)
    popsize: int

    @property
    def nbytes(self) -> int:
        return self.centre.nbytes + self.basis.nbytes

    def directions(self, pairs: range) -> torch.Tensor:
        return perturbations(self.keys, pairs, torch.from_numpy(self.basis), self.stdev, self.alpha)

    def rows(self, lo: int, hi: int) -> torch.Tensor:
        """Members ``lo:hi`` (a worker's share), regenerated from the seeds."""
        if hi <= lo:
            return torch.empty(0, len(self.centre))
        pairs = range(lo // 2, (hi - 1) // 2 + 1)
        return antithetic(torch.from_numpy(self.centre), self.directions(pairs), pairs.start, lo, hi)


# --- the search: centre, gradient history, optimizer ---------------------------------------------


def make_optimizer(cfg: GuidedConfig, dim: int):
    """The centre's evotorch optimizer (what PGPE uses for its centre in the ES loop)."""
    from evotorch.optimizers import SGD, Adam, ClipUp

    if cfg.optimizer == "clipup":
        return ClipUp(solution_length=dim, dtype=torch.float32, stepsize=cfg.lr, max_speed=cfg.max_speed or 2 * cfg.lr)
    if cfg.optimizer == "adam":
        return Adam(solution_length=dim, dtype=torch.float32, stepsize=cfg.lr)
    return SGD(solution_length=dim, dtype=torch.float32, stepsize=cfg.lr)


class GuidedSearch:
    """The guided search's state: centre (D,), the last ``k`` surrogate gradients (m, D), the optimizer."""

    def __init__(self, cfg: GuidedConfig, centre: torch.Tensor, seed: int):
        self.cfg, self.seed = cfg, seed
        self.centre = centre.detach().float().clone()
        self.history = torch.zeros(0, len(self.centre))
        self.optimizer = make_optimizer(cfg, len(self.centre))
        self.surrogate_nan = 0

    def observe(self, gradient: torch.Tensor) -> bool:
        """Add a surrogate gradient to the history; False (nothing added) where it is not finite or zero."""
        gradient = gradient.detach().float().cpu()
        if not bool(torch.isfinite(gradient).all()):
            self.surrogate_nan += 1
            return False
        if not bool(gradient.abs().max() > 0):
            return False
        self.history = torch.cat([self.history, gradient.unsqueeze(0)])[-self.cfg.k :]
        return True

    def recipe(self, generation: int, isotropic: bool = False) -> GuidedRecipe:
        """This generation's population; ``isotropic`` (the surrogate was unusable): alpha = 1."""
        basis = torch.zeros(len(self.centre), 0) if isotropic else subspace(self.history)
        alpha = 1.0 if basis.shape[1] == 0 else self.cfg.alpha
        return GuidedRecipe(self.centre.numpy().copy(), basis.numpy(), self.cfg.stdev, alpha,
                            (self.seed, STREAM_SEARCH, generation), self.cfg.popsize)

    def tell(self, eps: torch.Tensor, fitness: torch.Tensor) -> torch.Tensor:
        """Step the centre along the estimate from the pairs' directions and fitnesses; returns the estimate."""
        g = estimate(eps, fitness, self.cfg.stdev, self.cfg.beta)
        if bool(g.abs().max() > 0):  # all members tied: no direction (ClipUp would divide by zero)
            self.centre = self.centre + self.optimizer.ascent(g)
        return g

    def state(self) -> dict:
        """Plain data (tensors, numbers) from which :meth:`restore` continues exactly."""
        from es_l2l.outer.evo.state import optimizer_state

        return {"format": 1, "class": "GuidedSearch", "centre": self.centre.clone(), "history": self.history.clone(),
                "optimizer": optimizer_state(self.optimizer), "surrogate_nan": self.surrogate_nan}

    def restore(self, state: dict) -> None:
        from es_l2l.outer.evo.state import restore_optimizer

        if not (isinstance(state, dict) and state.get("class") == "GuidedSearch" and state.get("format") == 1):
            raise ValueError("resume state does not fit this searcher: it is not a guided-ES state")
        if state["centre"].shape != self.centre.shape or state["history"].shape[1:] != self.centre.shape:
            raise ValueError(f"resume state does not fit this searcher: its genome has {len(state['centre'])} coordinates, "
                             f"the config's {len(self.centre)}")
        self.centre, self.history = state["centre"].float().clone(), state["history"].float().clone()[-self.cfg.k :]
        restore_optimizer(self.optimizer, state["optimizer"])
        self.surrogate_nan = int(state["surrogate_nan"])


# --- the surrogate and the loop ----------------------------------------------------------------


def surrogate_gradient(loss_fn: GradientLoss, genome: Genome, centre: torch.Tensor, seed_keys: tuple[int, ...],
                       batch: int, device: str = "cpu"):
    """The gradient (D,) of the family's gradient loss ``loss_fn`` at ``centre`` (search space) on
    ``batch`` tasks of ``seed_keys``, with the loss and its evaluation. Through the context's gradient
    backend (auto: the fused C backward on CPU)."""
    from es_l2l.fitness import detach

    v = centre.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)
    with torch.enable_grad():
        loss, ev, _ = loss_fn(genome.params(v.unsqueeze(0)), seed_keys, batch)
        grad = torch.autograd.grad(loss, v, allow_unused=True)[0] if loss.requires_grad else None
    grad = torch.zeros_like(v) if grad is None else grad
    return grad.detach().cpu(), float(loss.detach()), detach(ev)


def evaluate_population(evaluator: Evaluator, recipe: GuidedRecipe, seed_keys: tuple[int, ...]):
    """The population's (P, D) members and their evaluation: Ray workers regenerate their rows from the
    recipe while the driver draws the same directions; else the members go to the evaluator."""
    from es_l2l.cluster.seed_traffic import checksums

    pairs = range(recipe.popsize // 2)
    refs = evaluator.submit_rows(recipe, seed_keys) if hasattr(evaluator, "submit_rows") else None
    eps = recipe.directions(pairs)
    members = antithetic(torch.from_numpy(recipe.centre), eps, 0, 0, recipe.popsize)
    ev = evaluator(members, seed_keys) if refs is None else evaluator.collect(refs, expected=checksums(members))
    return eps, ev


def shaped_input(fitness: torch.Tensor, policy: str, seed_keys) -> torch.Tensor:
    """Fitness with non-finite members ranked last (``worst``) or an error (``error``)."""
    bad = ~torch.isfinite(fitness)
    if not bad.any():
        return fitness
    if policy == "error" or bad.all():
        raise NonFiniteFitness(
            f"{int(bad.sum())} of {len(fitness)} members returned a non-finite fitness on tasks {seed_keys}; lower "
            "guided.stdev or tighten genome bounds, or set guided.nan_policy=worst to rank such members last"
        )
    fitness = fitness.clone()
    fitness[bad] = fitness[~bad].min() - 1.0
    return fitness


class GuidedRun(Search):
    """One guided-ES run: each step is a generation (surrogate, subspace, population, estimate, centre step)."""

    def __init__(self, guided: GuidedConfig, ctx: RunContext, inputs: LoopInputs):
        self.cfg, self.ctx, self.inputs = guided, ctx, inputs
        self.search = GuidedSearch(guided, inputs.genome.initial_vector(), ctx.seed)

    def step(self, generation: int) -> dict:
        g_cfg, search = self.cfg, self.search
        keys = (self.ctx.seed, STREAM_TRAIN, generation)
        t0 = time.perf_counter()
        batch = g_cfg.surrogate_batch or self.inputs.batch_size
        grad, loss, sur = surrogate_gradient(self.inputs.gradient_loss, self.inputs.genome, search.centre, keys, batch,
                                             self.ctx.device)
        surrogate_s = time.perf_counter() - t0
        used = search.observe(grad)
        recipe = search.recipe(generation, isotropic=not used)
        eps, ev = evaluate_population(self.inputs.evaluator, recipe, keys)
        fitness = shaped_input(ev.fitness, g_cfg.nan_policy, keys)
        g = search.tell(eps, fitness)
        return {
            "fitness_mean": float(fitness.mean()),
            "fitness_best": float(fitness.max()),
            "fitness_std": float(fitness.std()),
            **ev.summary(),
            "stdev": g_cfg.stdev,
            "alpha": recipe.alpha,
            "subspace_dim": recipe.basis.shape[1],
            "surrogate_loss": loss,
            **({"surrogate_norm": float(grad.norm())} if used else {}),
            "surrogate_nan": search.surrogate_nan,
            "surrogate_s": surrogate_s,
            "estimate_norm": float(g.norm()),
            "neuron_steps": ev.neuron_steps + sur.neuron_steps,
        }

    def centre(self) -> torch.Tensor:
        return self.search.centre.clone()

    def state(self) -> dict:
        return self.search.state()

    def restore(self, state: dict) -> None:
        self.search.restore(state)


class Guided(OuterLoop):
    """Guided ES; resumable (one status dict a generation, ``resume_state`` every ``run.checkpoint_every``)."""

    name = section = "guided"
    config = GuidedConfig
    uses_evaluator = True
    popsize_key = "guided.popsize"
    resumable = True
    driver_gpu = True  # the surrogate gradient is taken in the driver

    def check(self, setting: LoopSetting) -> None:
        """What guided ES needs of the family and the genome: a gradient of the searched genome."""
        family = setting.family
        if family.gradient_loss_name is None:
            raise ValueError(f"outer=guided needs a surrogate gradient, and the {family.name or setting.task.family} family has no "
                             "gradient loss; use outer=es")
        if not set(setting.genome.search) & set(DIFFERENTIABLE):
            raise ValueError("outer=guided needs a surrogate gradient, and genome.search lists no block a gradient reaches; "
                             f"add some of {', '.join(DIFFERENTIABLE)} or use outer=es")

    def describe(self, setting: LoopSetting) -> str:
        g = self.own(setting)
        return (f"guided ES P={g.popsize} alpha={g.alpha:g} k={g.k}, subspace of the {setting.family.gradient_loss_name} loss's "
                f"gradients ({g.surrogate_batch or setting.task.batch_size} tasks)")

    def popsize(self, setting: LoopSetting) -> int:
        return self.own(setting).popsize

    def memory(self, setting: LoopSetting, dim: int) -> dict[str, int]:
        g = self.own(setting)
        out = population_memory(g.popsize, dim, setting)
        key = "population (P x D x 4 bytes x 3 copies)"
        out[key] += g.k * dim * FLOAT  # the broadcast subspace (D x k)
        b = g.surrogate_batch or setting.task.batch_size
        steps = setting.family.episode_steps(setting.task)
        out["surrogate gradient's graph (B x T x N x 8 floats)"] = b * steps * setting.neurons() * 8 * FLOAT
        return out

    def seed_traffic(self, setting: LoopSetting) -> bool:
        return True  # its workers always regenerate their rows from a GuidedRecipe

    def state_problem(self, setting: LoopSetting, state: dict, dim: int) -> str | None:
        return centre_problem(state, dim, "centre")

    def start(self, section: GuidedConfig, ctx: RunContext, inputs: LoopInputs) -> Search:
        return GuidedRun(section, ctx, inputs)
