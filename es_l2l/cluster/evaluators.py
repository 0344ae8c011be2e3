"""Ray start-up or attachment, and the evaluation actors.

Each :class:`EvalWorker` rebuilds the genome layout from the config (a pure function of it)
and evaluates its contiguous share of the population in one vectorised call. Since an
evaluation is a pure function of (genome, task seed), a restarted actor repeats a lost
evaluation with the same result, and the number of workers never changes the numbers. What
travels to and from the actors (members or seeds, packed results) is :mod:`es_l2l.cluster.seed_traffic`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from typing import Callable, NamedTuple

import numpy as np
import torch

from es_l2l.config import ExperimentConfig
from es_l2l.context import RunContext
from es_l2l.errors import ClusterError  # noqa: F401  (raised here; re-exported for callers)
from es_l2l.families.base import Evaluation
from es_l2l.fitness import concat, evaluate, light
from es_l2l.genome import Genome, build_genome
from es_l2l.cluster.seed_traffic import INLINE_BYTES, Evaluator, SampleRecipe, checksums, lean, pack, recipe_bytes, rows, unpack


class LocalEvaluator:
    """Evaluate the whole population in this process (``run.workers = 0``)."""

    def __init__(self, cfg: ExperimentConfig, genome: Genome):
        self.cfg, self.genome = cfg, genome
        self.ctx = RunContext.of(cfg)

    def __call__(self, vectors, seed_keys):
        return light(evaluate(self.cfg, self.genome, vectors, seed_keys, device=self.cfg.run.device, ctx=self.ctx))

    def evaluate_lowrank(self, recipe, seed_keys):
        """A low-rank generation's members (es_l2l.outer.lowrank), with the forward that shares the centre where it applies."""
        return light(recipe.evaluate(self.cfg, self.genome, 0, recipe.popsize, seed_keys, self.cfg.run.device)[0])

    def close(self) -> None:
        pass


def init_ray(cfg: ExperimentConfig, min_cpus: float = 0) -> None:
    """Attach to ``run.address`` (or ``RAY_ADDRESS``), else start a quiet private local Ray bound to 127.0.0.1
    (with at least ``min_cpus``), whatever other Ray runs or ran on this machine."""
    import ray

    if ray.is_initialized():
        return
    from es_l2l.cluster.preflight import attach_address, captured_stderr_fd, ray_init_error

    quiet = dict(logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
    address = attach_address(cfg)  # run.address, else RAY_ADDRESS (set by `ray job submit`), else None
    if address:
        _check_reachable(address)
        # Ray's core logs connection retries (and the reason, e.g. a missing token) straight to fd 2:
        # read them to name the cause in one line instead of printing them
        with captured_stderr_fd() as logged:
            try:
                _ray_init(ray, address=address, **quiet)  # an existing cluster: never num_cpus
                replay = logged()
            except Exception as exc:  # Ray raises ConnectionError, TimeoutError, RuntimeError...
                error = ray_init_error(address, exc, logged()) or _unreachable(address, type(exc).__name__)
                replay = None
        if replay is None:
            raise error from None
        if replay.strip():
            print(replay, end="", file=sys.stderr)
        return
    # A local Ray is sized for the actors' reservation (oversubscribing a small machine on purpose);
    # an attached cluster is not, and es_l2l.cluster.preflight.check_cpus says so when it is too small.
    cpus = max(int(np.ceil(max(cfg.run.workers * cfg.run.cpus_per_worker, min_cpus))), os.cpu_count() or 1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _ray_init(
        ray,
        # "local": a private Ray, never the cluster Ray's temp folder records (`ray_current_cluster`,
        # left by any `ray start` on this machine, live or long dead), which a bare ray.init() attaches to
        address="local",
        num_cpus=cpus,
        _node_ip_address="127.0.0.1",  # every Ray port on loopback (docs/failures.md lists them)
        include_dashboard=False,
        dashboard_host="127.0.0.1",
        **quiet,
    )


def _ray_init(ray, **kwargs) -> None:
    """``ray.init``, then our SIGTERM handler back. A SIGTERM during it meets Ray's own handler
    (``sys.exit(15)``, in whatever Ray was doing): whatever Ray had started by then is stopped, and it
    comes out as :class:`~es_l2l.tracking.end_state.Terminated` (one line, exit 143) where the CLI stops on SIGTERM."""
    from es_l2l.tracking import end_state as lifecycle
    before = _descendants()
    try:
        ray.init(**kwargs)
    except SystemExit as exc:
        if exc.code != signal.SIGTERM:
            raise
        _stop_partial_ray(ray, before)
        if lifecycle.sigterm_handled():
            raise lifecycle.Terminated("SIGTERM") from None
        raise
    finally:
        lifecycle.reinstall()  # ray.init replaced our SIGTERM handler with sys.exit


def _descendants() -> dict:
    try:
        import psutil

        return {p.pid: p for p in psutil.Process().children(recursive=True)}
    except Exception:  # no psutil, or a process gone while listed
        return {}


def _stop_partial_ray(ray, before: dict, grace: float = 2.0, rounds: int = 3) -> None:
    """Stop the Ray processes this process started (GCS, raylet, its agents and workers): those that were
    not there before ``ray.init``. A raylet stopped while it starts spawns its agents anyway, which then
    live on for a minute: this process adopts such orphans first (Linux: a child subreaper), so that
    every round finds them among its descendants."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:  # not Linux: what is listed below still goes
        pass
    started = [p for pid, p in _descendants().items() if pid not in before]
    try:
        ray.shutdown()
    except BaseException:  # a half-started Ray may not shut down cleanly: the processes go below anyway
        pass
    try:
        import psutil
    except ImportError:
        return
    for _ in range(rounds):
        seen = {p.pid for p in started}
        started += [p for pid, p in _descendants().items() if pid not in before and pid not in seen]
        alive = [p for p in started if p.is_running()]
        if not alive:
            return
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(alive, timeout=grace)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=grace)
        time.sleep(0.2)  # a raylet's last spawn shows up as an orphan of ours


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


def gpu_shortfall(cfg: ExperimentConfig) -> str | None:
    """Why the configured GPUs are not there (``None`` when they are, or none are asked for)."""
    if cfg.run.device != "cuda":
        return None
    from es_l2l.outer.shell import loop_of

    loop = loop_of(cfg)
    if cfg.run.workers == 0 or loop.driver_gpu:  # gradient steps run in the driver
        if not torch.cuda.is_available():
            who = f"the driver (outer={cfg.outer} takes its gradient steps there)" if loop.driver_gpu else "this torch"
            return f"run.device=cuda but {who} sees no GPU; install a CUDA build of torch or set run.device=cpu"
        if cfg.run.workers == 0 or not loop.uses_evaluator:
            return None
    import ray

    from es_l2l.cluster.preflight import attach_address

    need = cfg.run.workers * cfg.run.gpus_per_worker
    where = "the Ray cluster"
    if not ray.is_initialized() and attach_address(cfg) is None and torch.cuda.device_count() < need:
        # a private local Ray's workers have this machine's torch: short without starting Ray
        have, where = float(torch.cuda.device_count()), "this machine's local Ray"
    else:
        init_ray(cfg)
        have = ray.cluster_resources().get("GPU", 0.0)
    if have >= need:
        return None
    return (
        f"run.device=cuda asks for {cfg.run.workers} GPU worker(s) but {where} has {have:g} GPU(s) "
        f"({need:g} needed at run.gpus_per_worker={cfg.run.gpus_per_worker:g}); add GPU nodes, lower run.workers "
        "or run.gpus_per_worker, set run.device=cpu, or allow run.gpu_fallback=true"
    )


def settle_device(cfg: ExperimentConfig) -> tuple[ExperimentConfig, str | None]:
    """Check the GPU request before anything is logged: the config to run with, and a note when it fell back.

    Raises :class:`ClusterError` when GPUs are missing and ``run.gpu_fallback`` is false.
    """
    why = gpu_shortfall(cfg)
    if why is None:
        return cfg, None
    if not cfg.run.gpu_fallback:
        raise ClusterError(why)
    cpu = cfg.model_copy(update={"run": cfg.run.model_copy(update={"device": "cpu"})})
    return cpu, f"{why.split(';')[0]}; running on CPU instead (run.gpu_fallback=true)"


# Seconds an evaluation actor sleeps before each evaluation when its node's environment sets it:
# a slow-but-alive worker on purpose, for the tests of the straggler policy and of mid-run events.
SLOW_WORKER_ENV = "ES_L2L_SLOW_WORKER_S"


class _Worker:
    """Body of the evaluation actor (wrapped by ``ray.remote`` lazily, so importing is cheap)."""

    def __init__(self, cfg_tree: dict):
        self.cfg = ExperimentConfig.model_validate(cfg_tree)
        self.genome = build_genome(self.cfg)
        self.ctx = RunContext.of(self.cfg)  # what the family knows of the run, built once per worker
        self.device = self.cfg.run.device
        if self.device == "cuda":
            # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU(s), so "cuda" is its own device; a
            # fractional share also caps the memory this process may take on a shared GPU.
            torch.cuda.set_per_process_memory_fraction(min(1.0, self.cfg.run.gpus_per_worker))
        # seconds spent simulating (evaluate) and regenerating members (seed traffic) since the
        # last busy_seconds(); the ES-generation benchmark reads them
        self.busy_s = self.regen_s = 0.0

    def evaluate(self, vectors: np.ndarray, seed_keys: tuple[int, ...]) -> tuple:
        """Evaluate these members; the result :func:`pack`-ed."""
        t0 = time.perf_counter()
        if SLOW_WORKER_ENV in os.environ:  # a deliberately slow node (tests of the straggler policy)
            time.sleep(float(os.environ[SLOW_WORKER_ENV]))
        e = light(evaluate(self.cfg, self.genome, torch.from_numpy(vectors), seed_keys, device=self.device, ctx=self.ctx))
        self.busy_s += time.perf_counter() - t0
        return pack(e)

    def busy_seconds(self) -> tuple[float, float]:
        """Seconds spent simulating and scoring, and regenerating members, since the last call (then reset)."""
        busy, regen, self.busy_s, self.regen_s = self.busy_s, self.regen_s, 0.0, 0.0
        return busy, regen

    def evaluate_rows(
        self, recipe: SampleRecipe, lo: int, hi: int, seed_keys: tuple[int, ...]
    ) -> tuple[tuple, np.ndarray]:
        """Regenerate the population on CPU, evaluate rows ``lo:hi``; the :func:`pack`-ed result
        and the rows' checksums."""
        if hasattr(recipe, "evaluate"):  # a low-rank recipe (es_l2l.outer.lowrank): it picks its forward
            t0 = time.perf_counter()
            ev, members = recipe.evaluate(self.cfg, self.genome, lo, hi, seed_keys, self.device)
            self.busy_s += time.perf_counter() - t0
            return pack(light(ev)), checksums(members).numpy()
        t0 = time.perf_counter()
        members = rows(recipe, lo, hi)
        sums = checksums(members).numpy()
        self.regen_s += time.perf_counter() - t0
        return self.evaluate(members.numpy(), seed_keys), sums

    def evaluate_recipe_rows(self, recipe, lo: int, hi: int, seed_keys: tuple[int, ...]) -> tuple[tuple, np.ndarray]:
        """Rows ``lo:hi`` of the population a recipe with a ``rows(lo, hi)`` method regenerates (guided
        ES's :class:`es_l2l.outer.guided.GuidedRecipe`), evaluated; the :func:`pack`-ed result and the rows' checksums."""
        t0 = time.perf_counter()
        rows = recipe.rows(lo, hi)
        sums = checksums(rows).numpy()
        self.regen_s += time.perf_counter() - t0
        return self.evaluate(rows.numpy(), seed_keys), sums

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        """The id of the Ray node this actor runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()


class _Work(NamedTuple):
    """One generation's evaluation in flight: its shares (``issue(actor) -> reference``, in member
    order) and each outstanding reference's (share index, actor, seconds when sent)."""

    issue: list[Callable]
    pending: dict


# Straggler policy: a share still running when every other share is back, and for longer than
# STRAGGLER_FACTOR times the slowest share that came back (and STRAGGLER_MIN_S), is sent again to an
# idle actor; the first result wins (both are the same numbers: evaluation is pure).
STRAGGLER_FACTOR = 3.0
STRAGGLER_MIN_S = 1.0
RESTARTS_PER_WORKER = 3  # the pool's restart budget: lost actors it replaces, per configured worker
ACTOR_START_S = 60.0  # how long the pool waits for a replacement when it has no live actor
GCS_LOST_S = 10.0  # the cluster's head unreachable this long: the run stops (Ray itself would exit the driver at 60 s)


class RayEvaluator:
    """An elastic pool of Ray evaluation actors; owns them and kills them on ``close``.

    The pool, not Ray, recovers from failures (the actors have no Ray restarts): an actor lost
    with its node has its share re-sent to a live actor in the same generation and is replaced
    where the cluster has room, up to ``RESTARTS_PER_WORKER`` losses per configured worker; a
    straggler's share is re-sent after a timeout (``STRAGGLER_FACTOR``); below ``n_workers`` (after
    a loss) the pool grows back as soon as the cluster has free CPUs, a joining node included, and
    a new actor takes work from the first generation after it started. Every evaluation is a pure
    function of (member, task seed), so none of this changes a number.
    """

    def __init__(self, cfg: ExperimentConfig, n_workers: int):
        import ray

        init_ray(cfg)
        self._ray = ray
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"workers": n_workers})})
        why = gpu_shortfall(cfg)
        if why:
            raise ClusterError(why)
        from es_l2l.cluster.preflight import check_cpus

        check_cpus(cfg, n_workers)  # too few CPUs would leave actors pending forever: one sentence instead
        self._cpus, self._gpus = cfg.run.cpus_per_worker, (cfg.run.gpus_per_worker if cfg.run.device == "cuda" else 0.0)
        self.seed_traffic = seed_traffic(cfg)
        self.target = n_workers
        self.losses, self.budget = 0, RESTARTS_PER_WORKER * n_workers
        self.events: list[str] = []  # what happened to the pool (lost, added, re-sent), in order
        self._gcs = ray.get_runtime_context().gcs_address
        self._tree = cfg.model_dump(mode="json")
        # Our own actors, not evotorch's num_actors (which turns 1 into none): n_workers is what runs.
        self._actor = ray.remote(max_restarts=0, max_task_retries=0)(_Worker)
        self.actors = [self._new_actor() for _ in range(n_workers)]
        self._starting: dict = {}  # ping reference -> actor not yet in the pool
        self._cluster_lost = False
        self._ready = list(self.actors)  # the actors this generation's shares go to
        self._late: dict = {}  # reference of a share that came back from elsewhere first -> its (busy) actor

    def _new_actor(self):
        return self._actor.options(num_cpus=self._cpus, num_gpus=self._gpus).remote(self._tree)

    def _note(self, event: str) -> None:
        self.events.append(event)
        print(f"es-l2l: {event}", file=sys.stderr, flush=True)

    def _grow(self) -> None:
        """Admit started actors; below ``target``, start new ones where the cluster has room."""
        ray = self._ray
        if self._starting:
            ready, _ = ray.wait(list(self._starting), num_returns=len(self._starting), timeout=0)
            for ref in ready:
                actor = self._starting.pop(ref)
                try:
                    ray.get(ref)
                except ray.exceptions.RayActorError:
                    continue  # its node went before it started
                self.actors.append(actor)
                self._note(f"evaluation worker added; {len(self.actors)} of {self.target} in the pool")
        short = self.target - len(self.actors) - len(self._starting)
        if short <= 0:
            return
        free = ray.available_resources()
        fits = int(free.get("CPU", 0.0) // self._cpus + 1e-9)
        if self._gpus:
            fits = min(fits, int(free.get("GPU", 0.0) // self._gpus + 1e-9))
        for _ in range(min(short, fits)):
            actor = self._new_actor()
            self._starting[actor.pid.remote()] = actor

    def _dispatch(self, issue: list[Callable]) -> _Work:
        now = time.monotonic()
        return _Work(issue, {call(a): (i, a, now) for i, (call, a) in enumerate(zip(issue, self._ready))})

    def _shares(self) -> int:
        """How many shares this generation: one per live actor that is not still busy with a share it
        was late with (a straggler rests until it has finished that one)."""
        self._need_actor()
        if self._late:
            ready, _ = self._ray.wait(list(self._late), num_returns=len(self._late), timeout=0)
            for ref in ready:
                del self._late[ref]
        busy = {id(a) for a in self._late.values()}
        self._ready = [a for a in self.actors if id(a) not in busy] or list(self.actors)
        return len(self._ready)

    def _bounds(self, popsize: int) -> list[tuple[int, int]]:
        """Contiguous member ranges, one per actor (the split ``torch.tensor_split`` makes)."""
        sizes = [len(c) for c in torch.tensor_split(torch.arange(popsize), len(self._ready))]
        starts = np.cumsum([0, *sizes])
        return [(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:]) if b > a]

    def submit(self, vectors: torch.Tensor, seed_keys: tuple[int, ...]) -> _Work:
        """Send each actor its members (vector traffic); returns the work in flight."""
        n = self._shares()
        chunks = [c.numpy() for c in torch.tensor_split(vectors.detach().cpu(), n) if len(c)]
        return self._dispatch([lambda a, c=c: a.evaluate.remote(c, seed_keys) for c in chunks])

    def submit_recipe(self, recipe: SampleRecipe, seed_keys: tuple[int, ...]) -> _Work:
        """Send each actor the recipe (inline when small, else through the object store once);
        each regenerates the population and evaluates its rows (seed traffic)."""
        self._shares()
        ref = lean(recipe)
        if recipe_bytes(ref) > INLINE_BYTES:
            ref = self._ray.put(ref)
        bounds = self._bounds(recipe.popsize)
        return self._dispatch([lambda a, lo=lo, hi=hi: a.evaluate_rows.remote(ref, lo, hi, seed_keys) for lo, hi in bounds])

    def submit_rows(self, recipe, seed_keys: tuple[int, ...]) -> _Work:
        """Send each actor a recipe that regenerates its rows itself (``recipe.rows(lo, hi)``, ``recipe.popsize``,
        ``recipe.nbytes``): inline when small, else through the object store once. Collect with the checksums."""
        self._shares()
        ref = self._ray.put(recipe) if recipe.nbytes > INLINE_BYTES else recipe
        bounds = self._bounds(recipe.popsize)
        return self._dispatch([lambda a, lo=lo, hi=hi: a.evaluate_recipe_rows.remote(ref, lo, hi, seed_keys) for lo, hi in bounds])

    def __call__(self, vectors: torch.Tensor, seed_keys: tuple[int, ...]) -> Evaluation:
        return self.collect(self.submit(vectors, seed_keys))

    def evaluate_recipe(self, recipe: SampleRecipe, vectors: torch.Tensor, seed_keys: tuple[int, ...]) -> Evaluation:
        """Evaluate the population ``vectors`` that ``recipe`` regenerates, shipping only the recipe."""
        return self.collect(self.submit_recipe(recipe, seed_keys), expected=checksums(vectors))

    def collect(self, work: _Work, expected: torch.Tensor | None = None) -> Evaluation:
        """Wait for every share's result: a lost actor's share and a straggler's are sent again."""
        results = self._gather(work)
        if expected is None:
            return concat([unpack(r) for r in results])
        evals, sums = zip(*results)
        if not torch.equal(torch.from_numpy(np.concatenate(sums)), expected):  # concatenate copies
            raise ClusterError(
                "workers regenerated different members than the driver sampled (torch or evotorch versions differ "
                "between nodes?); install the same versions everywhere or set es.traffic=vectors"
            )
        return concat([unpack(e) for e in evals])

    def _gather(self, work: _Work) -> list:
        ray = self._ray
        done: dict[int, object] = {}
        slowest, quiet_since = 0.0, time.monotonic()
        while len(done) < len(work.issue):
            ready, _ = ray.wait(list(work.pending), num_returns=1, timeout=0.5)
            now = time.monotonic()
            for ref in ready:
                i, actor, sent = work.pending.pop(ref)
                try:
                    result = ray.get(ref)
                except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError) as exc:
                    self._lost(actor, exc)
                    if i not in done and not any(j == i for j, _, _ in work.pending.values()):
                        self._resend(work, i, now)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                    raise ClusterError(f"an evaluation failed on a worker: {type(cause).__name__}: {cause}") from None
                if i not in done:
                    done[i] = result
                    slowest = max(slowest, now - sent)
            for ref in [r for r, (i, _, _) in work.pending.items() if i in done]:
                self._late[ref] = work.pending.pop(ref)[1]  # lost the race: not waited for, its actor rests
            if ready:
                quiet_since = now
            elif now - quiet_since > 2.0:
                self._check_cluster()
            if done and len(done) + len(work.pending) >= len(work.issue):
                self._stragglers(work, slowest, now)
        return [done[i] for i in range(len(work.issue))]

    def _stragglers(self, work: _Work, slowest: float, now: float) -> None:
        """Re-send a share that runs far longer than the others did, once, to an idle actor."""
        busy = {id(a) for _, a, _ in work.pending.values()} | {id(a) for a in self._late.values()}
        idle = [a for a in self.actors if id(a) not in busy]
        counts: dict[int, int] = {}
        for i, _, _ in work.pending.values():
            counts[i] = counts.get(i, 0) + 1
        for ref, (i, actor, sent) in list(work.pending.items()):
            if not idle:
                return
            if counts[i] == 1 and now - sent > max(STRAGGLER_FACTOR * slowest, STRAGGLER_MIN_S):
                a = idle.pop(0)
                work.pending[work.issue[i](a)] = (i, a, now)
                counts[i] = 2
                self._note(f"share {i + 1} of {len(work.issue)} still running after {now - sent:.1f} s "
                           f"(the others took at most {slowest:.1f} s); sent again to an idle worker")

    def _need_actor(self) -> None:
        """Admit or start actors; with none live, wait for one to start (one line when none can).

        A dead actor's CPU comes back to the cluster a moment after its death is reported, so
        the pool keeps trying to start a replacement for ``ACTOR_START_S``."""
        end = time.monotonic() + ACTOR_START_S
        while True:
            self._check_cluster()  # a lost head would make every call below wait until Ray exits the driver
            self._grow()
            if self.actors:
                return
            if time.monotonic() > end:
                raise ClusterError(self._none_left())
            if self._starting:
                self._ray.wait(list(self._starting), num_returns=1, timeout=1.0)
            else:
                time.sleep(0.5)

    def _resend(self, work: _Work, i: int, now: float) -> None:
        """Send share ``i`` again, to the live actor with the least work in flight."""
        self._need_actor()
        busy = {}
        for _, a, _ in work.pending.values():
            busy[id(a)] = busy.get(id(a), 0) + 1
        actor = min(self.actors, key=lambda a: busy.get(id(a), 0))  # an idle one where there is one
        work.pending[work.issue[i](actor)] = (i, actor, now)

    def _lost(self, actor, exc: Exception) -> None:
        self._check_cluster()  # the whole cluster gone, not one actor: say that instead
        self._late = {r: a for r, a in self._late.items() if a is not actor}
        if actor in self.actors:
            self.actors.remove(actor)
        else:
            return
        self.losses += 1
        if self.losses > self.budget:
            raise ClusterError(
                f"lost {self.losses} evaluation workers, more than the pool replaces ({RESTARTS_PER_WORKER} per worker, "
                f"{self.budget} in all): the cluster keeps losing nodes ({str(exc).splitlines()[0][:160]}); fix the "
                "cluster, then continue with es-l2l run --resume RUN_ID"
            )
        self._note(f"evaluation worker lost ({self.losses} of {self.budget} the pool replaces); "
                   f"{len(self.actors)} left, its share sent again")
        self._grow()

    def _none_left(self) -> str:
        return (
            f"every evaluation worker is lost and the Ray cluster has no free CPUs to start another "
            f"({self.losses} lost so far); add nodes, then continue with es-l2l run --resume RUN_ID"
        )

    def _check_cluster(self) -> None:
        """Stop with one line when the cluster's head does not answer for ``GCS_LOST_S`` (before Ray exits the driver)."""
        host, _, port = self._gcs.rpartition(":")
        end = time.monotonic() + GCS_LOST_S
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=1.0).close()
                return
            except OSError:
                if time.monotonic() > end:
                    break
                time.sleep(0.5)
        self.actors, self._starting, self._cluster_lost = [], {}, True
        raise ClusterError(
            f"lost the Ray cluster: its head at {self._gcs} has not answered for {GCS_LOST_S:g} s; start the "
            "cluster again, then continue with es-l2l run --resume RUN_ID"
        )

    def busy_seconds(self) -> list[tuple[float, float]]:
        """Each actor's (evaluate, regenerate) seconds since the last call (then reset)."""
        return self._ray.get([a.busy_seconds.remote() for a in self.actors])

    def pids(self) -> list[int]:
        """The actors' process ids, once the pool's actors (replacements included) have started."""
        self._grow()
        end = time.monotonic() + ACTOR_START_S
        while self._starting and time.monotonic() < end:
            self._ray.wait(list(self._starting), num_returns=len(self._starting), timeout=1.0)
            self._grow()
        return self._ray.get([a.pid.remote() for a in self.actors])

    def node_ids(self) -> list[str]:
        """The Ray node id of each actor (call :meth:`pids` first to wait for the pool)."""
        return self._ray.get([a.node_id.remote() for a in self.actors])

    def wait_ready(self, say, patience: float = 5.0, address: str | None = None) -> list[int]:
        """Wait for every actor to start (their pids). Actors still pending after ``patience`` seconds
        while the cluster has too few CPUs free for them (another job holds them) are said in one
        line through ``say``, once; the wait goes on (Ctrl-C or SIGTERM stop it)."""
        ray = self._ray
        refs = [a.pid.remote() for a in self.actors]
        _, pending = ray.wait(refs, num_returns=len(refs), timeout=patience)
        if pending:
            cpus = self._cpus
            need = len(pending) * cpus
            free = float(ray.available_resources().get("CPU", 0.0))
            total = float(ray.cluster_resources().get("CPU", 0.0))
            if cpus > 0 and free + 1e-9 < need:  # not just slow to start: no room for them
                where = f"the Ray cluster at '{address}'" if address else "the local Ray"
                say(f"waiting for {need:g} CPU(s) on {where} for {len(pending)} evaluation worker(s): it has {total:g}, "
                    f"{free:g} free, the rest held by other jobs; the run starts when they free up (Ctrl-C stops it)")
        for actor, ref in zip(list(self.actors), refs):
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # its node went while it started: the pool replaces it
                self._lost(actor, exc)
        self._need_actor()
        return self.pids()

    def close(self) -> None:
        if self._cluster_lost:
            self.actors = []
            return  # nothing left to kill, and a call to the lost head would wait
        for a in [*self.actors, *self._starting.values()]:
            try:
                self._ray.kill(a)
            except Exception:  # already gone with its node
                pass
        self.actors, self._starting = [], {}


def seed_traffic(cfg: ExperimentConfig) -> bool:
    """Whether the outer loop's Ray workers regenerate their members from seeds (its traffic mode)."""
    from es_l2l.outer.shell import loop_of, setting_of

    return loop_of(cfg).seed_traffic(setting_of(cfg))


def make_evaluator(cfg: ExperimentConfig, genome: Genome) -> Evaluator:
    if cfg.run.workers == 0:
        why = gpu_shortfall(cfg)
        if why:
            raise ClusterError(why)
        return LocalEvaluator(cfg, genome)
    return RayEvaluator(cfg, cfg.run.workers)
