"""Every MLflow run ends in a final state, and SIGTERM stops a run like Ctrl-C.

* :func:`final_state` wraps everything that happens after the MLflow run exists: Ctrl-C or
  SIGTERM mark it KILLED, any other exception marks it FAILED with the error as the run's
  ``error`` tag (and the traceback as the artifact ``error.txt``); the logged checkpoints stay.
* :func:`sigterm_as_interrupt` turns SIGTERM into :class:`Terminated` (a ``KeyboardInterrupt``) in
  the main thread, so ``kill PID``, ``ray job stop`` and schedulers stop a run the way Ctrl-C does.
  ``ray.init`` installs its own SIGTERM handler (``sys.exit``); :func:`reinstall` puts ours back,
  and :func:`es_l2l.cluster.evaluators.init_ray` calls it right after ``ray.init``.
"""

from __future__ import annotations

import signal
import threading
import traceback
from contextlib import contextmanager

EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class RunFailed(RuntimeError):
    """The run stopped on an error; its MLflow run is marked FAILED and keeps what it logged."""

    def __init__(self, message: str, run_id: str | None = None):
        super().__init__(message)
        self.run_id = run_id


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


_installed = False


_got_sigterm = False


# Store writes in progress in the main thread, and the interrupt that arrived during one.
_held = 0
_deferred: KeyboardInterrupt | None = None


def _on_sigterm(signum, frame):
    global _got_sigterm
    _got_sigterm = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    _interrupt(Terminated("SIGTERM"))


def _on_sigint(signum, frame):
    _interrupt(KeyboardInterrupt())


def _interrupt(exc: KeyboardInterrupt) -> None:
    global _deferred
    if _held:  # inside a tracking-store write: raised when the write is done
        _deferred = _deferred or exc
        return
    raise exc


@contextmanager
def uninterrupted():
    """Hold SIGTERM and Ctrl-C (within :func:`sigterm_as_interrupt`) until the block is done.

    For tracking-store calls: an interrupt raised inside SQLAlchemy's connection handling can orphan
    a connection that still holds SQLite's lock, and the orderly stop's own writes (the KILLED
    status) then wait 20 s for it and fail with "database is locked" (measured: SIGTERM at random
    moments of a loop of MLflow writes left the store locked within the first ten interrupts).
    """
    global _held, _deferred
    if not _main_thread():
        yield
        return
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if not _held and _deferred is not None:
            exc, _deferred = _deferred, None
            raise exc


def terminated(exc: BaseException) -> bool:
    """Whether this interrupt came from SIGTERM (a library, e.g. Ray Tune's loop, may re-raise our
    :class:`Terminated` as a plain ``KeyboardInterrupt``)."""
    return isinstance(exc, Terminated) or _got_sigterm


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# Once SIGTERM or Ctrl-C arrived, the process ends within this many seconds whatever it is doing.
STOP_DEADLINE_S = 10.0


def _deadline_watch(read_fd: int, deadline: float) -> None:
    """Wait for the signal byte the C-level handler writes (at once, even while the main thread is
    stuck in a C call, where Python's handler cannot run yet); then give the orderly stop ``deadline``
    seconds and end the process if it is still here."""
    import os
    import sys
    import time

    signums: set[int] = set()
    try:
        while not signums & {signal.SIGTERM, signal.SIGINT}:
            data = os.read(read_fd, 64)
            if not data:  # the pipe was closed: the run ended without a signal
                return
            signums |= set(data)
    except OSError:
        return
    finally:
        os.close(read_fd)
    time.sleep(deadline)
    code = EXIT_SIGTERM if signal.SIGTERM in signums else EXIT_SIGINT
    verb = "terminated" if code == EXIT_SIGTERM else "interrupted"
    try:
        where = _dump_stacks()
        sys.stdout.write(f"{verb}; stopping took over {deadline:g} s, so the process ended without waiting "
                         f"(the MLflow run may still read RUNNING; where it was stuck: {where})\n")
        sys.stdout.flush()
    except Exception:
        pass
    kill_descendants()
    os._exit(code)


def _dump_stacks() -> str:
    """Every thread's stack, into a file (not a pipe its reader may not drain): where the stop was stuck."""
    import faulthandler
    import os
    import tempfile

    path = os.path.join(tempfile.gettempdir(), f"es-l2l-stop-{os.getpid()}.txt")
    with open(path, "w") as f:
        faulthandler.dump_traceback(file=f, all_threads=True)
    return path


def kill_descendants(grace: float = 1.0) -> None:
    """SIGTERM, then SIGKILL, every process this one started (Ray's GCS, raylet, agents and workers)."""
    try:
        import psutil

        procs = psutil.Process().children(recursive=True)
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
    except Exception:
        pass


@contextmanager
def sigterm_as_interrupt(deadline: float = STOP_DEADLINE_S):
    """Within this block (main thread only), SIGTERM raises :class:`Terminated`; once SIGTERM or Ctrl-C
    arrived, the process ends within ``deadline`` seconds (a watcher thread ends it if the orderly
    stop, marking the run KILLED and shutting Ray down, has not by then)."""
    global _installed
    if not _main_thread():
        yield
        return
    import os

    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _on_sigterm)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.default_int_handler:  # Ctrl-C as Python's default, but held during store writes
        signal.signal(signal.SIGINT, _on_sigint)
    _installed = True
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:  # not the main interpreter's main thread
        previous_fd = None
    if previous_fd is not None:
        threading.Thread(target=_deadline_watch, args=(read_fd, deadline), name="es-l2l-stop-deadline", daemon=True).start()
    try:
        yield
    finally:
        _installed = False
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if previous_int is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous_int)
        if previous_fd is not None:
            signal.set_wakeup_fd(previous_fd)
            os.close(write_fd)  # the watcher reads EOF and ends, unless a signal came (then its deadline runs on)


def sigterm_handled() -> bool:
    """Whether SIGTERM stops the run here (within :func:`sigterm_as_interrupt`)."""
    return _installed


def reinstall() -> None:
    """Put our SIGTERM handler back after a library (``ray.init``) replaced it."""
    if _installed and _main_thread() and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    if _installed and _main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


def exit_now(code: int):
    """End the process after an interrupt: shut Ray down, flush, and skip the interpreter's finalisation.

    Measured: after ``main`` returns, Ray's native teardown at interpreter exit takes 3-5 s more on a
    busy 2-core machine (after ``ray.shutdown`` itself, ~1.5 s), which broke "Ctrl-C stops within 4 s".
    The run is already marked KILLED and its files are closed by then.
    """
    import os
    import sys

    try:
        if "ray" in sys.modules:
            import ray

            if ray.is_initialized():
                ray.shutdown()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def describe_error(exc: BaseException) -> str:
    """One line: the exception's type and first line, credentials redacted."""
    from es_l2l.tracking.redact import redact_text

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:1000]


def _safely(what, fn, *args, quiet: bool = False) -> bool:
    try:
        fn(*args)
        return True
    except Exception as exc:  # the tracking store itself may be what failed: never hide the first error
        if not quiet:
            import sys

            print(f"warning: could not {what} ({describe_error(exc)})", file=sys.stderr)
        return False


def _end(tracker, status: str, tags: dict[str, str], text: str | None = None) -> str | None:
    """Tag and end the run; returns where the traceback ``text`` went (the artifact, or a local file)."""
    where = None
    _safely("tag the MLflow run", tracker.set_tags, tags)
    if text:
        if _safely("log error.txt", tracker.log_text, text, "error.txt", quiet=True):
            where = "the run's artifact error.txt"
        else:  # the artifact store is what failed: keep the traceback on this machine
            import tempfile
            from pathlib import Path

            local = Path(tempfile.gettempdir()) / f"es-l2l-{tracker.run_id}-error.txt"
            local.write_text(text)
            where = str(local)
    _safely(f"mark the MLflow run {status}", tracker.end, status)
    return where


# Errors whose message already says what to do: passed on as they are.
EXPECTED = ("ClusterError", "NonFiniteFitness", "FloatingPointError", "TuneError", "CompareError")


@contextmanager
def final_state(tracker):
    """Mark ``tracker``'s run KILLED (Ctrl-C, SIGTERM) or FAILED (anything else) when the block raises.

    Exceptions other than interrupts come out as :class:`RunFailed` with one line to print.
    """
    try:
        yield
    except KeyboardInterrupt as exc:
        how = "SIGTERM" if terminated(exc) else "SIGINT"
        _end(tracker, "KILLED", {"stopped_by": how})
        exc.run_marked = True  # the CLI's last line says the run keeps what it logged
        raise
    except SystemExit as exc:  # a library's own SIGTERM handler (sys.exit(15)), or a deliberate stop (Ray Tune's early stopping)
        if exc.code == signal.SIGTERM:
            _end(tracker, "KILLED", {"stopped_by": "SIGTERM"})
            stop = Terminated("SIGTERM")
            stop.run_marked = True
            raise stop from None
        _end(tracker, "KILLED", {"stopped_by": f"SystemExit({exc.code})"})
        raise
    except BaseException as exc:
        line = describe_error(exc)
        where = _end(tracker, "FAILED", {"error": line}, "".join(traceback.format_exception(exc)))
        if type(exc).__name__ in EXPECTED or isinstance(exc, RunFailed):
            msg = str(exc)
        else:
            msg = f"{line} (traceback in {where})"
        raise RunFailed(f"{msg} (MLflow run {tracker.run_id} keeps the metrics and checkpoints logged so far)", tracker.run_id) from exc
