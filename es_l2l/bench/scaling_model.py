"""The scaling model: one ES generation and one data-parallel BPTT step against W workers, from measured constants.

Pure functions of plain numbers (the measurement is :mod:`es_l2l.bench.scaling`). Symbols:

ES generation at population P on W workers (contiguous shares, ``ceil(P / W)`` members on the busiest):

    t_es(W) = driver + validation / validate_every + tracking          (the driver's serial share)
            + worker_fixed                                            (each worker's share of work that does not shrink
                                                                       with its members: regenerating the P x D sample,
                                                                       a closed-loop family's per-step overhead)
            + sim_per_member * ceil(P / W)                            (the busiest worker's simulation)
            + traffic_1 + coord_per_actor * (W - 1)                   (Ray's send / wait / receive, measured)
            (W taken as min(W, P): beyond W = P the extra workers get no share)
            + network(W)                                              (beyond one machine, modelled)
    network(W) = 2 * latency + (W * bytes_out + bytes_back) / bandwidth
                 (one round trip, fan-out in parallel; the driver's link carries every worker's recipe)

Data-parallel BPTT step with B tasks on W replicas:

    t_bptt(W) = compute_per_task * ceil(B / W) + fixed                (forward, backward, Adam on each replica)
              + coord_base + coord_per_actor * W                       (the driver's step call and its results)
              + allreduce(W)
    allreduce(W) = 2 * (W - 1) * latency + 2 * (W - 1) / W * 4 * D / bandwidth   (ring all-reduce of D floats)

Coordination (many actors, trivial evaluation): ``coord(W) = a + b * W``, fitted by least squares;
with several nodes, ``coord(W, n) = a + b * W + c * n``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# The network this page assumes beyond one machine: in-datacenter, one switch hop.
LATENCY_S = 1e-4  # 0.1 ms one way
BANDWIDTH_BPS = 10e9 / 8  # 10 Gb/s, in bytes per second


def fit_linear(xs: list[list[float]], ys: list[float]) -> list[float]:
    """Least-squares coefficients ``[intercept, *slopes]`` of ``y = c0 + sum_k c_k x_k`` (normal equations, no numpy)."""
    rows = [[1.0, *map(float, x)] for x in xs]
    k = len(rows[0])
    a = [[sum(r[i] * r[j] for r in rows) for j in range(k)] for i in range(k)]
    b = [sum(r[i] * y for r, y in zip(rows, ys)) for i in range(k)]
    # Gauss-Jordan with partial pivoting on the k x k system
    m = [row + [bi] for row, bi in zip(a, b)]
    for col in range(k):
        piv = max(range(col, k), key=lambda r: abs(m[r][col]))
        if abs(m[piv][col]) < 1e-300:
            raise ValueError("the fit is singular: measure at more than one value of each variable")
        m[col], m[piv] = m[piv], m[col]
        for r in range(k):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * y for x, y in zip(m[r], m[col])]
    return [m[i][k] / m[i][i] for i in range(k)]


def network_s(workers: int, bytes_out: float, bytes_back: float, latency: float = LATENCY_S,
              bandwidth: float = BANDWIDTH_BPS) -> float:
    """Seconds the network adds to one ES generation across nodes: one round trip, the driver's link
    carrying every worker's recipe (``bytes_out`` each) and all fitnesses (``bytes_back`` in all)."""
    return 2 * latency + (workers * bytes_out + bytes_back) / bandwidth


def ring_allreduce_s(workers: int, floats: int, latency: float = LATENCY_S, bandwidth: float = BANDWIDTH_BPS) -> float:
    """Seconds of a ring all-reduce of ``floats`` float32 values over ``workers`` (0 for one worker)."""
    if workers <= 1:
        return 0.0
    return 2 * (workers - 1) * latency + 2 * (workers - 1) / workers * 4 * floats / bandwidth


@dataclass
class ESConstants:
    """What one ES generation costs, measured on one worker (seconds, bytes)."""

    popsize: int
    driver_s: float  # the searcher's step minus the evaluation: ranking, update, bookkeeping
    validation_s: float  # one validation of the centre
    validate_every: int
    tracking_s: float  # the status dict to MLflow (and the driver's record), per generation
    worker_fixed_s: float  # a worker's seconds that do not shrink with its share (regenerating the population, per-call costs)
    sim_per_member_s: float  # a worker's seconds per member
    traffic_s: float  # send, wait, receive at W = 1
    coord_per_actor_s: float  # the coordination fit's slope (per actor)
    bytes_out: float  # recipe bytes sent to each worker
    bytes_back: float  # result bytes back from all workers

    def serial_s(self) -> float:
        return self.driver_s + self.validation_s / self.validate_every + self.tracking_s

    def generation_s(self, workers: int, network: bool = False, latency: float = LATENCY_S,
                     bandwidth: float = BANDWIDTH_BPS) -> float:
        """Predicted seconds of one generation (driver's share, validation and tracking included). Beyond W = P the
        extra workers get no share (the pool sends none to them): the time stays at W = P's."""
        w = min(workers, self.popsize)
        t = (self.serial_s() + self.worker_fixed_s + self.sim_per_member_s * math.ceil(self.popsize / w)
             + self.traffic_s + self.coord_per_actor_s * (w - 1))
        if network:
            t += network_s(w, self.bytes_out, self.bytes_back, latency, bandwidth)
        return t

    def step_s(self, workers: int) -> float:
        """Predicted seconds of the searcher's step alone (what the generation split's ``wall`` measures)."""
        return self.generation_s(workers) - self.validation_s / self.validate_every - self.tracking_s

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class BPTTConstants:
    """What one BPTT step costs, measured on one process (seconds)."""

    batch: int  # tasks per step
    gradient_floats: int  # D, the all-reduced gradient's length
    compute_per_task_s: float
    fixed_s: float  # per-step cost that does not shrink with the shard (Adam, clipping, Python)
    coord_base_s: float
    coord_per_actor_s: float

    def step_s(self, workers: int, network: bool = False, latency: float = LATENCY_S,
               bandwidth: float = BANDWIDTH_BPS) -> float:
        t = self.compute_per_task_s * math.ceil(self.batch / workers) + self.fixed_s
        if workers > 1:
            t += self.coord_base_s + self.coord_per_actor_s * workers
            t += ring_allreduce_s(workers, self.gradient_floats, latency, bandwidth) if network else 0.0
        return t

    def as_dict(self) -> dict:
        return asdict(self)


def crossover(es_seconds: dict[int, float], bptt_seconds: dict[int, float]) -> int | None:
    """The smallest W at which ES's time to the target is at most BPTT's (None if it never is)."""
    for w in sorted(es_seconds):
        if w in bptt_seconds and es_seconds[w] <= bptt_seconds[w]:
            return w
    return None
