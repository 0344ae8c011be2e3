"""Hand-fused CPU kernels for the LSNN step, compiled on first use and called through ctypes.

``lsnn_step_f32``: one pass over each (member p, task b) row of ``N`` neurons does what
``lsnn_step`` does in about twenty tensor passes: input current ``W_in x_t`` (from the input
spikes), the recurrent input (added from the rows of ``W_rec`` whose neurons spiked, or taken
from a dense ``bmm`` done before), adaptation, threshold, spike with refractoriness, membrane
with reset, readout trace and spike count, while the row is in L1 cache. ``lsnn_chunk_f32`` runs
a chunk of steps with the event-driven recurrent input, the time loop inside each row (every
(p, b) row is an independent network, so its state never leaves the cache during the chunk).
OpenMP spreads the rows over ``torch.get_num_threads()`` threads. Both return the spike count,
which the ``auto`` recurrent mode reads to choose the next path at no extra cost.

Built with the system C compiler (``cc -O3 -march=native -fopenmp -ffp-contract=off
-fno-trapping-math``: no multiply-add is fused where the reference rounds twice and nothing is
reassociated, so every operation rounds as the reference's does; selects may be vectorised)
into a per-user cache keyed by the source, the flags and the CPU. :func:`load` returns ``None``
(and :func:`why_not` says why) where no compiler works; the caller then falls back to the
in-place tensor update.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = r"""
#include <stdint.h>

/* Steps 1-3 and 5 for one row of N neurons, given the row's input current cur (step 4). Written
   without branches so that it vectorises; the spike test is the reference's (v - A) / A > 0, and
   with n_ref = 0 the refractory count stays 0 so the same code needs no special case. */
static inline float update_row(long N, float n_ref_f, float dt, const float *restrict cur, const float *restrict zp,
                               const float *restrict rh, const float *restrict om, const float *restrict al,
                               const float *restrict oa, const float *restrict b0p, const float *restrict bep,
                               float kp, float okp, float *restrict vr, float *restrict br, float *restrict rf,
                               float *restrict zr, float *restrict cr, float *restrict zo)
{
    float spikes = 0.0f;
    for (long i = 0; i < N; ++i) {
        float zpi = zp[i];
        float bi = rh[i] * br[i] + om[i] * zpi;            /* 1. adaptation */
        float thr = b0p[i] + bep[i] * bi;                  /* 2. threshold A */
        float vi = vr[i];
        float ri = rf[i];
        float zi = (float)(((vi - thr) / thr > 0.0f) & !(ri > 0.0f));   /* 3. spike, not refractory */
        float dec = ri - 1.0f;
        dec = dec > 0.0f ? dec : 0.0f;
        rf[i] = zi * n_ref_f + (1.0f - zi) * dec;          /* exact: zi is 0 or 1, both terms integers */
        vr[i] = (al[i] * vi + oa[i] * cur[i]) - (thr * zpi) * dt;   /* 5. membrane, reset */
        br[i] = bi;
        zr[i] = kp * zr[i] + okp * zi;                     /* readout trace */
        cr[i] += zi;
        zo[i] = zi;
        spikes += zi;
    }
    return spikes;
}

/* One LSNN step (Bellec et al. 2018; DESIGN.md's order) for P*B rows of N neurons, float32.
   x: input spikes of this step, element (p, b, k) at x[p*xs_p + b*xs_b + k] (xs_p = 0: shared).
   rec: (P*B, N) dense W_rec z_prev from a bmm, or NULL: then the rows of W_rec whose neurons
   spiked (z_prev != 0) are added here. Per-neuron coefficients are (P, N); kappa is (P).
   State (P*B, N) is updated in place; z_out receives this step's spikes. Returns their count. */
long lsnn_step_f32(long P, long B, long N, long n_in, long n_ref, float dt, int positive_thr, int nthreads,
                   const float *x, long xs_p, long xs_b, const float *w_in, const float *rec,
                   const float *z_prev, const float *w_rec,
                   const float *rho, const float *omr, const float *alpha, const float *oma,
                   const float *b0, const float *beta, const float *kappa, const float *omk,
                   float *v, float *b, float *r, float *zf, float *count, float *z_out)
{
    long total = 0;
    #pragma omp parallel for num_threads(nthreads) reduction(+:total) schedule(static)
    for (long row = 0; row < P * B; ++row) {
        long p = row / B, bb = row % B;
        float cur[N];
        const float *xr = x + p * xs_p + bb * xs_b;
        const float *wi = w_in + p * n_in * N;
        for (long i = 0; i < N; ++i) cur[i] = 0.0f;
        for (long k = 0; k < n_in; ++k) {          /* I = W_in x_t */
            float xk = xr[k];
            if (xk != 0.0f) {
                const float *w = wi + k * N;
                for (long i = 0; i < N; ++i) cur[i] += xk * w[i];
            }
        }
        const float *zp = z_prev + row * N;
        if (rec) {                                   /* + W_rec z_prev, dense */
            const float *rr = rec + row * N;
            for (long i = 0; i < N; ++i) cur[i] += rr[i];
        } else {                                     /* + W_rec z_prev, one row per spike */
            const float *W = w_rec + p * N * N;
            for (long j = 0; j < N; ++j) {
                if (zp[j] != 0.0f) {
                    const float *w = W + j * N;
                    for (long i = 0; i < N; ++i) cur[i] += w[i];
                }
            }
        }
        const float *rh = rho + p * N, *om = omr + p * N, *al = alpha + p * N, *oa = oma + p * N;
        const float *b0p = b0 + p * N, *bep = beta + p * N;
        const float kp = kappa[p], okp = omk[p];
        float *vr = v + row * N, *br = b + row * N, *rf = r + row * N, *zr = zf + row * N;
        float *cr = count + row * N, *zo = z_out + row * N;
        long spikes = (long)update_row(N, (float)n_ref, dt, cur, zp, rh, om, al, oa, b0p, bep, kp, okp,
                                       vr, br, rf, zr, cr, zo);
        total += spikes;
    }
    return total;
}

/* T consecutive steps (t0 .. t0+n_steps-1) of every row with the event-driven recurrent input,
   the whole time loop inside the row so that its state stays in L1 cache. State buffers as in
   lsnn_step_f32; z_prev holds the previous step's spikes on entry and the last step's on exit.
   keep[t] (t relative to t0) is the readout slot of step t or -1: zf goes to
   zf_out[(row * K + keep[t]) * N]; spikes_out (row, T_total, N) or NULL. Returns the spike count. */
long lsnn_chunk_f32(long P, long B, long N, long n_in, long n_ref, float dt, int positive_thr, int nthreads,
                    long t0, long n_steps, const float *x, long xs_p, long xs_b, const float *w_in,
                    const float *w_rec, const float *rho, const float *omr, const float *alpha, const float *oma,
                    const float *b0, const float *beta, const float *kappa, const float *omk,
                    float *v, float *b, float *r, float *zf, float *count, float *z_prev,
                    const long *keep, long K, float *zf_out, float *spikes_out, long T_total)
{
    long total = 0;
    #pragma omp parallel for num_threads(nthreads) reduction(+:total) schedule(static)
    for (long row = 0; row < P * B; ++row) {
        long p = row / B, bb = row % B;
        float cur[N], znew[N];
        const float *wi = w_in + p * n_in * N, *W = w_rec + p * N * N;
        const float *rh = rho + p * N, *om = omr + p * N, *al = alpha + p * N, *oa = oma + p * N;
        const float *b0p = b0 + p * N, *bep = beta + p * N;
        const float kp = kappa[p], okp = omk[p];
        float *vr = v + row * N, *br = b + row * N, *rf = r + row * N, *zr = zf + row * N;
        float *cr = count + row * N, *zp = z_prev + row * N;
        long spikes = 0;
        for (long s = 0; s < n_steps; ++s) {
            const float *xr = x + p * xs_p + bb * xs_b + (t0 + s) * n_in;
            for (long i = 0; i < N; ++i) cur[i] = 0.0f;
            for (long k = 0; k < n_in; ++k) {
                float xk = xr[k];
                if (xk != 0.0f) {
                    const float *w = wi + k * N;
                    for (long i = 0; i < N; ++i) cur[i] += xk * w[i];
                }
            }
            for (long j = 0; j < N; ++j) {
                if (zp[j] != 0.0f) {
                    const float *w = W + j * N;
                    for (long i = 0; i < N; ++i) cur[i] += w[i];
                }
            }
            spikes += (long)update_row(N, (float)n_ref, dt, cur, zp, rh, om, al, oa, b0p, bep, kp, okp,
                                       vr, br, rf, zr, cr, znew);
            for (long i = 0; i < N; ++i) zp[i] = znew[i];
            if (keep[s] >= 0) {
                float *o = zf_out + (row * K + keep[s]) * N;
                for (long i = 0; i < N; ++i) o[i] = zr[i];
            }
            if (spikes_out) {
                float *o = spikes_out + (row * T_total + t0 + s) * N;
                for (long i = 0; i < N; ++i) o[i] = znew[i];
            }
        }
        total += spikes;
    }
    return total;
}

/* cur (P*B, N) += W_rec z (z: (P*B, N) of 0/1) from the rows of spiking neurons: the recurrent
   term alone, for the benchmark's comparison with a dense bmm. */
void event_add_f32(long P, long B, long N, int nthreads, float *cur, const float *z, const float *w_rec)
{
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (long row = 0; row < P * B; ++row) {
        const float *zr = z + row * N, *W = w_rec + (row / B) * N * N;
        float *c = cur + row * N;
        for (long j = 0; j < N; ++j) {
            if (zr[j] != 0.0f) {
                const float *w = W + j * N;
                for (long i = 0; i < N; ++i) c[i] += w[i];
            }
        }
    }
}
"""

FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math", "-fPIC", "-shared", "-std=c11"]
_STATE: dict = {}


def _cpu_id() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_dir() -> Path:
    root = os.environ.get("ES_L2L_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "es_l2l")
    return Path(root) / "kernels"


def _build() -> ctypes.CDLL:
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH")
    key = hashlib.sha256("\n".join([SOURCE, " ".join(FLAGS), cc, _cpu_id()]).encode()).hexdigest()[:16]
    lib = cache_dir() / f"lsnn_step_{key}.so"
    if not lib.exists():
        lib.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:  # several Ray workers may build at once
            src, out = Path(tmp) / "lsnn_step.c", Path(tmp) / "lsnn_step.so"
            src.write_text(SOURCE)
            done = subprocess.run([cc, *FLAGS, str(src), "-o", str(out)], capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise RuntimeError(f"{Path(cc).name} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
            os.replace(out, lib)  # atomic: a concurrent builder's identical file is fine
    dll = ctypes.CDLL(str(lib))
    fn = dll.lsnn_step_f32
    L, F, I, P = ctypes.c_long, ctypes.c_float, ctypes.c_int, ctypes.c_void_p
    fn.argtypes = [L, L, L, L, L, F, I, I, P, L, L, P, P, P, P] + [P] * 8 + [P] * 6
    fn.restype = L
    chunk = dll.lsnn_chunk_f32
    chunk.argtypes = [L, L, L, L, L, F, I, I, L, L, P, L, L, P, P] + [P] * 8 + [P] * 6 + [P, L, P, P, L]
    chunk.restype = L
    _STATE["chunk"] = chunk
    add = dll.event_add_f32
    add.argtypes = [L, L, L, I, P, P, P]
    add.restype = None
    _STATE["event_add"] = add
    return fn


def load():
    """The compiled step function, or ``None`` where it cannot be built (see :func:`why_not`)."""
    if "fn" not in _STATE:
        if os.environ.get("ES_L2L_NO_KERNEL"):
            _STATE.update(fn=None, why="disabled by ES_L2L_NO_KERNEL")
        else:
            try:
                _STATE.update(fn=_build(), why=None)
            except Exception as exc:  # no compiler, no OpenMP, read-only cache: fall back, say why
                _STATE.update(fn=None, why=f"C kernel unavailable ({type(exc).__name__}: {exc})")
    return _STATE["fn"]


def event_add(current, z, w_rec) -> None:
    """``current += W_rec z`` in place with the kernel's event-driven loop (float32, contiguous, CPU)."""
    import torch

    if load() is None:
        raise RuntimeError(why_not())
    pop, batch, n = z.shape
    _STATE["event_add"](pop, batch, n, torch.get_num_threads(), current.data_ptr(), z.data_ptr(), w_rec.data_ptr())


def chunk_fn():
    """The time-loop kernel (event-driven steps, state in cache), or ``None``."""
    return _STATE.get("chunk") if load() is not None else None


def why_not() -> str | None:
    load()
    return _STATE["why"]
