"""Learning from a teacher (supervised learning-to-learn; Bellec et al. 2018, Fig. 2).

A task is a function ``G(x1, x2) = s * (v . sigmoid(W x + c) + d)`` computed by a 2-layer network
with ``H`` sigmoid hidden units whose weights and biases are uniform in ``[-r, r]``. With
``frequent_targets`` K > 0, K fixed networks of that kind (from ``frequent_seed``, the same for every
run seed) recur: each training episode's G is one of them with probability ``frequent_share``
(:data:`TARGETS_TRAINING`), and the held-out report adds episodes whose G is one of them, in
turn (:data:`TARGETS_FREQUENT`); validation and the other test episodes have a fresh G each. Trial ``i``
shows a new input ``x_i`` together with the target ``G(x_{i-1})`` of the preceding trial; the
readout, averaged over the trial's last ``readout_ms`` steps, predicts ``G(x_i)``.

Every variable is population coded: ``neurons_per_variable`` input neurons with Gaussian tuning
curves over the variable's range fire Poisson spikes for the whole trial. Inputs to the network:
x1, x2 (over ``[-input_range, input_range]``) and the previous target (over
``[-target_range, target_range]``; silent in the first trial); with ``show_previous_input`` also
the previous trial's x1, x2 (silent in the first trial), after the target.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from es_l2l.families.teacher.config import TeacherConfig
from es_l2l.seeds import STREAM_FREQUENT, generator

# Which target networks a batch's episodes have: a fresh G each (validation, test and, with
# frequent_targets 0, training); the training mix (one of the K fixed networks with probability
# frequent_share); the K fixed networks in turn (the held-out frequent group).
TARGETS_FRESH, TARGETS_TRAINING, TARGETS_FREQUENT = "fresh", "training", "frequent"
Targets = Literal["fresh", "training", "frequent"]


class TeacherTasks(NamedTuple):
    """A batch of ``B`` episodes."""

    x: torch.Tensor  # (B, n_trials, 2) inputs
    y: torch.Tensor  # (B, n_trials) targets G(x)
    spikes: torch.Tensor  # (B, T, n_in) input spike trains, T = n_trials * trial_ms
    readout_steps: torch.Tensor  # (n_trials * readout_ms,) steps whose readout is averaged
    which: torch.Tensor  # (B,) int64: the episode's fixed (frequent) network, -1 for a fresh one

    @property
    def batch(self) -> int:
        return self.x.shape[0]


class TargetNets(NamedTuple):
    w1: torch.Tensor  # (B, H, 2)
    c1: torch.Tensor  # (B, H)
    v: torch.Tensor  # (B, H)
    d: torch.Tensor  # (B,)


def n_inputs(task: TeacherConfig) -> int:
    return (5 if task.show_previous_input else 3) * task.neurons_per_variable


def sample_target_nets(task: TeacherConfig, gen: torch.Generator, batch: int) -> TargetNets:
    r, h = task.weight_range, task.hidden_units
    u = lambda *shape: (torch.rand(*shape, generator=gen) * 2 - 1) * r  # noqa: E731
    return TargetNets(w1=u(batch, h, 2), c1=u(batch, h), v=u(batch, h), d=u(batch))


def frequent_nets(task: TeacherConfig) -> TargetNets:
    """The ``frequent_targets`` fixed networks (leading axis K), a function of ``frequent_seed`` alone."""
    return sample_target_nets(task, generator(task.frequent_seed, STREAM_FREQUENT), task.frequent_targets)


def replace_nets(nets: TargetNets, fixed: TargetNets, which: torch.Tensor) -> TargetNets:
    """``nets`` (B episodes) with episode ``b`` given ``fixed[which[b]]`` where ``which[b] >= 0``."""
    use = which >= 0
    idx = which.clamp(min=0)
    pick = lambda a, f: torch.where(use.view(-1, *([1] * (a.dim() - 1))), f[idx], a)  # noqa: E731
    return TargetNets(*(pick(a, f) for a, f in zip(nets, fixed)))


def draw_frequent(task: TeacherConfig, gen: torch.Generator, batch: int) -> torch.Tensor:
    """(B,) per training episode: the index of its fixed network, or -1 for a fresh one (each episode
    independently frequent with probability ``frequent_share``, then which of the K uniform)."""
    frequent = torch.rand(batch, generator=gen) < task.frequent_share
    which = torch.randint(task.frequent_targets, (batch,), generator=gen)
    return torch.where(frequent, which, torch.full_like(which, -1))


def evaluate_target(task: TeacherConfig, nets: TargetNets, x: torch.Tensor) -> torch.Tensor:
    """G(x) for x: (B, K, 2) -> (B, K)."""
    hidden = torch.sigmoid(torch.einsum("bhi,bki->bkh", nets.w1, x) + nets.c1[:, None, :])
    return task.output_scale * (torch.einsum("bkh,bh->bk", hidden, nets.v) + nets.d[:, None])


def population_code(u: torch.Tensor, lo: float, hi: float, n: int, max_rate_hz: float, dt: float = 1.0) -> torch.Tensor:
    """Spike probability per step of ``n`` Gaussian-tuned neurons: (...,) -> (..., n)."""
    centers = torch.linspace(lo, hi, n)
    width = (hi - lo) / (n - 1)
    rate = max_rate_hz * torch.exp(-0.5 * ((u.unsqueeze(-1) - centers) / width) ** 2)
    return (rate * dt * 1e-3).clamp(max=1.0)


def trial_probabilities(task: TeacherConfig, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-trial spike probabilities of all input neurons: (B, n_trials, n_in)."""
    n = task.neurons_per_variable
    px = population_code(x, -task.input_range, task.input_range, n, task.max_rate_hz)  # (B, K, 2, n)
    py = population_code(y, -task.target_range, task.target_range, n, task.max_rate_hz)  # (B, K, n)
    py_prev = torch.cat([torch.zeros_like(py[:, :1]), py[:, :-1]], dim=1)  # target of trial i-1
    parts = [px.flatten(2), py_prev]
    if task.show_previous_input:  # input of trial i-1 beside its target
        px_prev = torch.cat([torch.zeros_like(px[:, :1]), px[:, :-1]], dim=1).flatten(2)
        parts.append(px_prev)
    return torch.cat(parts, dim=-1)


def readout_steps(task: TeacherConfig) -> torch.Tensor:
    starts = torch.arange(task.n_trials) * task.trial_ms + (task.trial_ms - task.readout_ms)
    return (starts[:, None] + torch.arange(task.readout_ms)).flatten()


def episode_targets(task: TeacherConfig, gen: torch.Generator, batch: int, targets: Targets) -> torch.Tensor:
    """(B,) which fixed network each episode has (-1: a fresh one) under ``targets``; draws from
    ``gen`` only for the training mix with ``frequent_targets`` > 0."""
    k = task.frequent_targets
    if targets == TARGETS_FRESH or k == 0:
        if targets == TARGETS_FREQUENT:
            raise ValueError("frequent target episodes need task.frequent_targets > 0")
        return torch.full((batch,), -1, dtype=torch.long)
    if targets == TARGETS_TRAINING:
        return draw_frequent(task, gen, batch)
    return torch.arange(batch) % k  # the K networks in turn: equal counts when K divides B


def sample_tasks(
    task: TeacherConfig,
    gen: torch.Generator,
    batch: int,
    *,
    spikes: bool = True,
    centered: bool = False,
    targets: Targets = TARGETS_FRESH,
) -> TeacherTasks:
    """Sample ``batch`` episodes; a pure function of the generator's state. ``spikes=False`` skips
    the spike trains (an empty tensor in their place); ``x`` and ``y`` are the same either way.
    ``centered`` removes each episode's mean target (the shape curriculum's offset-free tasks).
    ``targets`` names the episodes' networks (see :func:`episode_targets`): the fresh networks are
    drawn either way and then replaced, so the inputs ``x`` of a generator state do not depend on it."""
    nets = sample_target_nets(task, gen, batch)
    x = (torch.rand(batch, task.n_trials, 2, generator=gen) * 2 - 1) * task.input_range
    which = episode_targets(task, gen, batch, targets)
    if bool((which >= 0).any()):
        nets = replace_nets(nets, frequent_nets(task), which)
    y = evaluate_target(task, nets, x)
    if centered:
        y = y - y.mean(dim=1, keepdim=True)
    if not spikes:
        empty = torch.empty(batch, 0, n_inputs(task))
        return TeacherTasks(x=x, y=y, spikes=empty, readout_steps=readout_steps(task), which=which)
    prob = trial_probabilities(task, x, y).repeat_interleave(task.trial_ms, dim=1)  # (B, T, n_in)
    if task.encoding == "analog":  # no spikes: the spike probability per step as an input current
        spikes = prob.to(torch.float32)
    elif task.encoding == "regular":
        spikes = regular_spikes(prob, task.trial_ms)
    else:
        spikes = (torch.rand(prob.shape, generator=gen) < prob).to(torch.float32)
    return TeacherTasks(x=x, y=y, spikes=spikes, readout_steps=readout_steps(task), which=which)


def regular_spikes(prob: torch.Tensor, trial_ms: int) -> torch.Tensor:
    """Deterministic spike trains at the coded rate: (B, T, n_in) probabilities per step, constant within
    each trial of ``trial_ms`` steps, -> 0/1 spikes. Within a trial a neuron with probability ``p`` fires at
    step ``k`` (counted from 0 in the trial) when ``floor(0.5 + (k + 1) p)`` exceeds ``floor(0.5 + k p)``:
    evenly spaced spikes, the first half a period in, ``round(trial_ms * p)`` of them a trial (halves
    round up), the same for every episode with the same inputs."""
    p = prob.to(torch.float64)
    k = (torch.arange(p.shape[1], dtype=torch.float64) % trial_ms).view(1, -1, 1)
    return (torch.floor(0.5 + (k + 1) * p) > torch.floor(0.5 + k * p)).to(torch.float32)


def predictions(task: TeacherConfig, y_readout: torch.Tensor) -> torch.Tensor:
    """Average the readout over each trial's window: (P, B, n_trials * readout_ms, 1) -> (P, B, n_trials)."""
    pop, batch = y_readout.shape[:2]
    return y_readout[..., 0].reshape(pop, batch, task.n_trials, task.readout_ms).mean(-1)
