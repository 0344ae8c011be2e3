"""Baselines for the teacher family, computed on the same episodes as the LSNN.

Each returns predictions (B, n_trials) for trial ``i`` from what an online learner has seen
before it (the targets of trials ``0..i-1``), except the oracle, which sees the whole episode.
"""

from __future__ import annotations

import torch

from es_l2l.config import TeacherConfig
from es_l2l.tasks import teacher
from es_l2l.tasks.base import STREAM_FAMILY_STATS, generator


def family_mean(cfg: TeacherConfig, seed: int, n_tasks: int = 4096) -> float:
    """Mean target over the family, estimated on tasks the LSNN never sees."""
    gen = generator(seed, STREAM_FAMILY_STATS)
    nets = teacher.sample_target_nets(cfg, gen, n_tasks)
    x = (torch.rand(n_tasks, cfg.n_trials, 2, generator=gen) * 2 - 1) * cfg.input_range
    return float(teacher.evaluate_target(cfg, nets, x).mean())


def predict_family_mean(y: torch.Tensor, mean: float) -> torch.Tensor:
    return torch.full_like(y, mean)


def predict_running_mean(y: torch.Tensor, prior: float) -> torch.Tensor:
    """Mean of the targets seen so far (the prior before any)."""
    seen = torch.cumsum(y, dim=1) - y  # sum of targets 0..i-1
    count = torch.arange(y.shape[1], dtype=y.dtype)
    return torch.where(count > 0, seen / count.clamp(min=1), torch.full_like(y, prior))


def _features(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.ones_like(x[..., :1]), x], dim=-1)  # (B, K, 3)


def predict_online_least_squares(x: torch.Tensor, y: torch.Tensor, prior: float, ridge: float = 1.0) -> torch.Tensor:
    """Linear fit ``[1, x1, x2]`` on trials ``0..i-1``; a ridge on the slopes only, so that with
    fewer points than parameters it predicts the running mean instead of extrapolating wildly."""
    feats = _features(x.double())
    batch, trials, d = feats.shape
    pen = ridge * torch.diag(torch.tensor([0.0] + [1.0] * (d - 1), dtype=feats.dtype))
    preds = torch.full((batch, trials), prior, dtype=feats.dtype)
    yc = y.double() - prior
    for i in range(1, trials):  # loop over trial index (not over members or tasks)
        f, t = feats[:, :i], yc[:, :i]
        gram = f.transpose(1, 2) @ f + pen
        w = torch.linalg.solve(gram, (f.transpose(1, 2) @ t.unsqueeze(-1)))
        preds[:, i] = (feats[:, i : i + 1] @ w).squeeze(-1).squeeze(-1) + prior
    return preds.to(y.dtype)


def predict_oracle_linear(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The best linear predictor fitted to the whole episode (sees the future)."""
    feats = _features(x.double())
    w = torch.linalg.lstsq(feats, y.double().unsqueeze(-1)).solution
    return (feats @ w).squeeze(-1).to(y.dtype)


def baseline_mse_per_trial(cfg: TeacherConfig, tasks: teacher.TeacherTasks, seed: int) -> dict[str, torch.Tensor]:
    """MSE per trial index (n_trials,) of each baseline on ``tasks``."""
    mean = family_mean(cfg, seed)
    preds = {
        "family mean": predict_family_mean(tasks.y, mean),
        "running mean": predict_running_mean(tasks.y, mean),
        "online least squares": predict_online_least_squares(tasks.x, tasks.y, mean),
        "oracle linear": predict_oracle_linear(tasks.x, tasks.y),
    }
    return {name: (p - tasks.y).pow(2).mean(dim=0) for name, p in preds.items()}


def linear_share(tasks: teacher.TeacherTasks) -> float:
    """Share of the within-task target variance that a per-task linear fit explains."""
    resid = (predict_oracle_linear(tasks.x, tasks.y) - tasks.y).pow(2).mean()
    within = tasks.y.var(dim=1, unbiased=False).mean()
    return float(1.0 - resid / within)


def within_share(tasks: teacher.TeacherTasks) -> float:
    """Share of the targets' total variance that lies within tasks (the rest is per-task offset)."""
    return float(tasks.y.var(dim=1, unbiased=False).mean() / tasks.y.var(unbiased=False))
