"""Hand-fused CPU kernels for the LSNN time loop, compiled on first use and called through ctypes.

``lsnn_run_f32`` runs the whole time loop of a rollout in one call: for each member (or, when
there are fewer members than threads, each group of a member's rows) it does what
``lsnn_step`` does in about twenty tensor passes, step after step, while that member's state
and ``W_rec`` stay in cache (members are independent networks, so nothing is shared across
items): input current ``W_in x_t`` from the input spikes, the recurrent input ``W_rec z``
(dense register tiles with fused multiply-adds, or event-driven: the rows of ``W_rec`` whose
neurons spiked, each read once per step), adaptation, threshold, spike with refractoriness,
membrane with reset, readout trace and spike count. The recurrent input is chosen per item and
step by the previous step's spikes (``auto``). Since spikes are 0 or 1, the dense and the
event-driven sums round identically: the choice never changes a number. OpenMP spreads the
items over ``torch.get_num_threads()`` threads. ``rec_add_f32`` is the recurrent term alone,
for the benchmark.

Built with the system C compiler (``cc -O3 -march=native -fopenmp -ffp-contract=off
-fno-trapping-math``: no multiply-add is fused where the reference rounds twice and nothing is
reassociated, so every operation rounds as the reference's does; selects may be vectorised;
only the dense recurrent tiles fuse, where the product by a spike is exact)
into a private per-user cache (:func:`build_and_load`: 0700 directory checked for owner and
mode, key over the source, the flags, the compiler's ``--version`` and the CPU, sha256 of each
library recorded at build time and verified before it is loaded). :func:`load` returns ``None``
(and :func:`why_not` says why) where no compiler works; the caller then falls back to the
in-place tensor update.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import stat as _stat
import subprocess
import tempfile
from pathlib import Path

SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32), aligned(4)));  /* 8 floats, unaligned loads and stores */

/* Steps 1-3 and 5 for one row of N neurons, given the row's input current cur (step 4). z holds
   the previous step's spikes on entry and this step's on exit (element i is read before it is
   written). Written without branches so that it vectorises; the spike test is the reference's
   (v - A) / A > 0, and with n_ref = 0 the refractory count stays 0 so the same code needs no
   special case. */
static inline long update_row(long N, float n_ref_f, float dt, const float *restrict cur, float *z,
                              const float *restrict rh, const float *restrict om, const float *restrict al,
                              const float *restrict oa, const float *restrict b0p, const float *restrict bep,
                              float kp, float okp, float *restrict vr, float *restrict br, float *restrict rf,
                              float *restrict zr, float *restrict cr)
{
    float spikes = 0.0f;
    for (long i = 0; i < N; ++i) {
        float zpi = z[i];
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
        z[i] = zi;
        spikes += zi;
    }
    return (long)spikes;
}

/* The dense recurrent input of `rows` networks of one member: cur (rows x NP, stride NP) +=
   z (rows x N, stride N) W (N x NP, NP a multiple of 8, padding columns zero), summed over the
   presynaptic k in ascending order. A register tile of RB rows x 8*NV columns keeps its
   accumulators in registers while W's tile (N x 8*NV floats) stays in L1 across the rows.
   Since z is 0 or 1, each fused multiply-add's product is exact and the sum rounds exactly as
   the event-driven one (event_rec) does: dense and event paths give the same floats, up to the
   sign of a zero. */
#pragma GCC push_options
#pragma GCC optimize ("fp-contract=fast")
static inline __attribute__((always_inline)) void tile(const int RB, const int NV, long N, long NP, const float *restrict W,
                                                       const float *restrict z, float *restrict cur, long i0)
{
    v8 a[6][2];
    for (int r = 0; r < RB; ++r)
        for (int u = 0; u < NV; ++u) a[r][u] = *(const v8 *)(cur + r * NP + i0 + 8 * u);
    for (long k = 0; k < N; ++k) {
        const float *w = W + k * NP + i0;
        __builtin_prefetch(w + 6 * NP);                  /* W's tile walks rows NP apart: fetch ahead */
        v8 w0 = *(const v8 *)w;
        v8 w1 = NV > 1 ? *(const v8 *)(w + 8) : w0;
        for (int r = 0; r < RB; ++r) {
            float s = z[r * N + k];
            a[r][0] += s * w0;
            if (NV > 1) a[r][1] += s * w1;
        }
    }
    for (int r = 0; r < RB; ++r)
        for (int u = 0; u < NV; ++u) *(v8 *)(cur + r * NP + i0 + 8 * u) = a[r][u];
}

static void dense_rec(long rows, long N, long NP, const float *restrict W, const float *restrict z, float *restrict cur)
{
    long i0 = 0;
    for (; i0 + 16 <= NP; i0 += 16) {
        long b = 0;
        for (; b + 6 <= rows; b += 6) tile(6, 2, N, NP, W, z + b * N, cur + b * NP, i0);
        for (; b + 2 <= rows; b += 2) tile(2, 2, N, NP, W, z + b * N, cur + b * NP, i0);
        for (; b < rows; ++b) tile(1, 2, N, NP, W, z + b * N, cur + b * NP, i0);
    }
    for (; i0 < NP; i0 += 8) {
        long b = 0;
        for (; b + 6 <= rows; b += 6) tile(6, 1, N, NP, W, z + b * N, cur + b * NP, i0);
        for (; b < rows; ++b) tile(1, 1, N, NP, W, z + b * N, cur + b * NP, i0);
    }
}
#pragma GCC pop_options

/* The event-driven recurrent input, the same sum: for each presynaptic j in ascending order,
   row j of W is added to the rows whose neuron j spiked (found from a bit mask per j, built
   in one vectorised pass over z), so each row of W is read once per step however many rows
   use it, in address order, each fetched a few rows ahead. mask: 2 N words of scratch. */
static void event_rec(long rows, long N, long NP, const float *restrict W, const float *restrict z, float *restrict cur,
                      uint64_t *restrict mask)
{
    long *list = (long *)(mask + N);
    for (long g = 0; g < rows; g += 64) {
        long gn = rows - g < 64 ? rows - g : 64;
        for (long j = 0; j < N; ++j) mask[j] = 0;
        for (long r = 0; r < gn; ++r) {
            const float *zr = z + (g + r) * N;
            uint64_t bit = (uint64_t)1 << r;
            for (long j = 0; j < N; ++j) mask[j] |= zr[j] != 0.0f ? bit : 0;
        }
        long nj = 0;                                  /* the presynaptic neurons that spiked, ascending */
        for (long j = 0; j < N; ++j) {
            list[nj] = j;
            nj += mask[j] != 0;
        }
        for (long q = 0; q < nj; ++q) {
            long j = list[q];
            if (q + 4 < nj)                           /* rows are far apart in memory: fetch ahead */
                for (long o = 0; o < NP; o += 16) __builtin_prefetch(W + list[q + 4] * NP + o);
            uint64_t m = mask[j];
            const v8 *w = (const v8 *)(W + j * NP);
            do {
                v8 *c = (v8 *)(cur + (g + __builtin_ctzll(m)) * NP);
                for (long u = 0; u < NP / 8; ++u) c[u] += w[u];
                m &= m - 1;
            } while (m);
        }
    }
}

/* Steps t0 .. t0+n_steps-1 of P members x B tasks x N neurons, float32, the time loop inside.
   Work items are (member, group of rows); a member's rows are split into G groups only when
   there are fewer members than threads. An item's state and its member's W_rec stay in cache
   through the whole loop. Each item step takes the recurrent input dense (mode 0), event-driven
   (mode 1), or (mode 2) event-driven while at most event_threshold of its units spiked on the
   previous step. x: input spikes, element (p, b, t, k) at x[p*xs_p + b*xs_b + t*n_in + k]
   (xs_p = 0: shared across members). w_rec: (P, N, NP), rows padded to NP (a multiple of 8)
   with zeros. Per-neuron coefficients are (P, N); kappa is (P). State (P*B, N) is updated in
   place; z holds the spikes of the step before t0 on entry, of the last step on exit.
   keep[s] is the readout slot of step t0+s or -1: zf goes to zf_out[(row*K + slot)*N];
   spikes_out (row, T_total, N) or NULL. out[0] receives the dense item-steps, out[1] the
   number of items. Returns the spike count. */
long lsnn_run_f32(long P, long B, long N, long NP, long n_in, long n_ref, float dt, int nthreads,
                  long t0, long n_steps, long T_total, const float *x, long xs_p, long xs_b,
                  const float *w_in, const float *w_rec,
                  const float *rho, const float *omr, const float *alpha, const float *oma,
                  const float *b0, const float *beta, const float *kappa, const float *omk,
                  float *v, float *b, float *r, float *zf, float *count, float *z,
                  int mode, float event_threshold, const long *keep, long K, float *zf_out, float *spikes_out,
                  long *out)
{
    long G = 1;
    if (P < nthreads) {
        G = (nthreads + P - 1) / P;
        if (G > B) G = B;
    }
    long per = (B + G - 1) / G;
    long total = 0, n_dense = 0;
    #pragma omp parallel num_threads(nthreads) reduction(+:total, n_dense)
    {
        float *cur = aligned_alloc(64, ((per * NP * sizeof(float) + 63) / 64) * 64);
        uint64_t *mask = malloc(2 * N * sizeof(uint64_t));
        #pragma omp for schedule(static)
        for (long item = 0; item < P * G; ++item) {
            long p = item / G, lo = (item % G) * per;
            long hi = lo + per < B ? lo + per : B;
            if (lo >= hi) continue;
            long rows = hi - lo, row0 = p * B + lo;
            const float *wi = w_in + p * n_in * N, *W = w_rec + p * N * NP;
            const float *rh = rho + p * N, *om = omr + p * N, *al = alpha + p * N, *oa = oma + p * N;
            const float *b0p = b0 + p * N, *bep = beta + p * N;
            const float kp = kappa[p], okp = omk[p];
            float *zz = z + row0 * N;
            long cnt = 0;
            for (long i = 0; i < rows * N; ++i) cnt += zz[i] != 0.0f;
            float limit = event_threshold * (float)(rows * N);
            for (long s = 0; s < n_steps; ++s) {
                long t = t0 + s;
                for (long q = 0; q < rows; ++q) {            /* I = W_in x_t */
                    float *c = cur + q * NP;
                    memset(c, 0, NP * sizeof(float));
                    const float *xr = x + p * xs_p + (lo + q) * xs_b + t * n_in;
                    for (long k = 0; k < n_in; ++k) {
                        float xk = xr[k];
                        if (xk != 0.0f) {
                            const float *w = wi + k * N;
                            for (long i = 0; i < N; ++i) c[i] += xk * w[i];
                        }
                    }
                }
                if (mode == 0 || (mode == 2 && (float)cnt > limit)) {   /* + W_rec z_prev */
                    dense_rec(rows, N, NP, W, zz, cur);
                    n_dense += 1;
                } else if (cnt > 0) {
                    event_rec(rows, N, NP, W, zz, cur, mask);
                }
                cnt = 0;
                for (long q = 0; q < rows; ++q) {
                    long o = (row0 + q) * N;
                    cnt += update_row(N, (float)n_ref, dt, cur + q * NP, z + o, rh, om, al, oa, b0p, bep, kp, okp,
                                      v + o, b + o, r + o, zf + o, count + o);
                }
                total += cnt;
                if (keep[s] >= 0)
                    for (long q = 0; q < rows; ++q)
                        memcpy(zf_out + ((row0 + q) * K + keep[s]) * N, zf + (row0 + q) * N, N * sizeof(float));
                if (spikes_out)
                    for (long q = 0; q < rows; ++q)
                        memcpy(spikes_out + ((row0 + q) * T_total + t) * N, z + (row0 + q) * N, N * sizeof(float));
            }
        }
        free(cur);
        free(mask);
    }
    out[0] = n_dense;
    out[1] = P * G;
    return total;
}

/* cur (P*B rows, stride NP) += W_rec z (z: (P*B, N) of 0/1; w_rec (P, N, NP)), the recurrent
   term alone, dense (dense != 0) or event-driven, for the benchmark's comparison with a bmm. */
void rec_add_f32(long P, long B, long N, long NP, int dense, int nthreads, float *cur, const float *z, const float *w_rec)
{
    #pragma omp parallel num_threads(nthreads)
    {
        uint64_t *mask = malloc(2 * N * sizeof(uint64_t));
        #pragma omp for schedule(static)
        for (long p = 0; p < P; ++p) {
            if (dense)
                dense_rec(B, N, NP, w_rec + p * N * NP, z + p * B * N, cur + p * B * NP);
            else
                event_rec(B, N, NP, w_rec + p * N * NP, z + p * B * N, cur + p * B * NP, mask);
        }
        free(mask);
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


def _compiler() -> tuple[str, str]:
    """The C compiler's path and its ``--version`` output (part of every cache key)."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH")
    if _STATE.get("cc", (None,))[0] != cc:
        done = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        _STATE["cc"] = (cc, done.stdout.strip() or done.stderr.strip())
    return _STATE["cc"]


def _check_private(path: Path) -> None:
    """Refuse a directory that is a symlink, not ours, or writable by group or others."""
    st = os.lstat(path)
    if _stat.S_ISLNK(st.st_mode) or not _stat.S_ISDIR(st.st_mode):
        raise PermissionError(f"refusing the kernel cache {path}: it is a symlink or not a directory; "
                              f"remove it or point ES_L2L_CACHE at a private directory")
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise PermissionError(f"refusing the kernel cache {path}: it is owned by uid {st.st_uid} with mode "
                              f"{oct(st.st_mode & 0o777)} (must be yours and not group/world-writable); run "
                              f"`chmod 700 {path}` (or remove it) or point ES_L2L_CACHE at a private directory")


def private_cache_dir() -> Path:
    """:func:`cache_dir`, created 0700 where missing; it and its parent must be the user's own and
    not writable by group or others (else :class:`PermissionError` naming the directory and the fix)."""
    d = cache_dir()
    if not d.parent.exists():
        d.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not d.exists():
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:  # a concurrent builder made it
            pass
    _check_private(d.parent)
    _check_private(d)
    return d


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_and_load(name: str, source: str, flags: list[str] | None = None) -> ctypes.CDLL:
    """Compile ``source`` into a shared library and load it, through a hardened per-user cache.

    The library is ``<cache>/<name>_<key>.so``, ``key`` hashing the source, the flags, the
    compiler's path and ``--version`` output and the CPU. The cache directory must be private
    (:func:`private_cache_dir`). At build time the library's sha256 is written next to it
    (``.so.sha256``); before every ``ctypes.CDLL`` the library must be a regular file owned by
    the user, not group/world-writable, and hash to that record, else it is refused
    (:class:`PermissionError`, nothing loaded) and the caller falls back.
    """
    flags = list(FLAGS if flags is None else flags)
    cc, version = _compiler()
    key = hashlib.sha256("\n".join([source, " ".join(flags), cc, version, _cpu_id()]).encode()).hexdigest()[:16]
    d = private_cache_dir()
    lib = d / f"{name}_{key}.so"
    sidecar = d / f"{name}_{key}.so.sha256"
    if not lib.exists():
        with tempfile.TemporaryDirectory(dir=d) as tmp:  # several Ray workers may build at once
            src, out = Path(tmp) / f"{name}.c", Path(tmp) / f"{name}.so"
            src.write_text(source)
            # relative names, run in tmp: the binary does not embed the random folder's name, so
            # concurrent builders write identical files (and the same hash)
            done = subprocess.run([cc, *flags, src.name, "-o", out.name], capture_output=True, text=True, timeout=300,
                                  cwd=tmp)
            if done.returncode != 0:
                raise RuntimeError(f"{Path(cc).name} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
            os.chmod(out, 0o700)
            digest = Path(tmp) / "digest"
            digest.write_text(_sha256(out) + "\n")
            os.replace(digest, sidecar)  # the record first, then the library: both atomic
            os.replace(out, lib)
    _verify(lib, sidecar)
    return ctypes.CDLL(str(lib))


def _verify(lib: Path, sidecar: Path) -> None:
    st = os.lstat(lib)
    if not _stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise PermissionError(f"refusing {lib}: not a regular file of yours, or writable by group/others; delete it to rebuild")
    try:
        expected = sidecar.read_text().strip()
    except OSError:
        expected = None
    if expected != _sha256(lib):
        raise PermissionError(f"refusing {lib}: its sha256 does not match the record {sidecar.name} written when it was "
                              f"built; delete both files in {lib.parent} to rebuild")


def _build() -> ctypes.CDLL:
    dll = build_and_load("lsnn_step", SOURCE)
    L, F, I, P = ctypes.c_long, ctypes.c_float, ctypes.c_int, ctypes.c_void_p
    fn = dll.lsnn_run_f32
    fn.argtypes = [L, L, L, L, L, L, F, I, L, L, L, P, L, L, P, P] + [P] * 8 + [P] * 6 + [I, F, P, L, P, P, P]
    fn.restype = L
    add = dll.rec_add_f32
    add.argtypes = [L, L, L, L, I, I, P, P, P]
    add.restype = None
    _STATE["rec_add"] = add
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


def padded(w_rec):
    """``w_rec`` (P, N, N) as the kernel reads it: (P, N, NP), each row padded with zeros to NP,
    the next multiple of 8 (the kernel's vector width); the same tensor where N is one."""
    import torch

    pop, n, _ = w_rec.shape
    width = -(-n // 8) * 8
    if width == n:
        return w_rec.contiguous()
    out = torch.zeros(pop, n, width, dtype=w_rec.dtype, device=w_rec.device)
    out[..., :n] = w_rec
    return out


def rec_add(current, z, w_rec, dense: bool = False) -> None:
    """``current += W_rec z`` in place with the kernel's event-driven loop, or its dense register
    tiles (float32, contiguous, CPU; ``current`` and ``z`` (P, B, N), ``w_rec`` (P, N, N) with
    N a multiple of 8, or as returned by :func:`padded`, then ``current`` (P, B, NP))."""
    import torch

    if load() is None:
        raise RuntimeError(why_not())
    pop, batch, n = z.shape
    width = w_rec.shape[-1]
    if current.shape[-1] != width or width % 8:
        raise ValueError(f"rec_add needs rows padded to a multiple of 8 (kernel.padded); got N={n}, width {width}")
    _STATE["rec_add"](pop, batch, n, width, int(dense), torch.get_num_threads(), current.data_ptr(), z.data_ptr(),
                      w_rec.data_ptr())


def why_not() -> str | None:
    load()
    return _STATE["why"]
