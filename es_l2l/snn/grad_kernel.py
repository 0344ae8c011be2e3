"""C kernels for exact BPTT through the LSNN: a forward that records what backward needs, and a
fused backward that runs the adjoint recursion of :func:`es_l2l.snn.lsnn.lsnn_step` step by step
in one call. Driven by :mod:`es_l2l.snn.fused_grad`; built and loaded through the hardened cache
of :func:`es_l2l.snn.kernel.build_and_load`.

The source is written once and instantiated for ``float`` (``_f32``) and ``double`` (``_f64``).

Forward (``lsnn_fwd_*``): the time loop of ``lsnn_step`` (same operations, same order, built with
``-ffp-contract=off``; input current from the nonzero inputs, recurrent input from the spiking
rows of ``W_rec``, ascending), per work item (member, group of rows). It records, per neuron and
step ``t``: ``v_{t-1}`` (the membrane the spike test reads) and ``z_t`` as one bit, and every
:data:`CHECKPOINT` steps the adaptation ``b`` entering the segment; backward recomputes ``b_t``
inside a segment from that checkpoint and the spike bits with the forward's own operations (bit
for bit). That is ``sizeof(real) * (1 + ceil(T / 16) / T) + 8 * ceil(N / 64) / N`` bytes per
neuron-step (4.40 for float32 at N=220, T=784; see :func:`recorded_bytes`). It also returns the readout trace ``zf`` at the readout steps, the spike
count and, when the readout decay ``kappa`` needs a gradient, ``d zf / d kappa`` at the readout
steps (forward-mode sensitivity; ``zf`` never feeds back into the dynamics).

Backward (``lsnn_bwd_*``), from the last step with a nonzero incoming gradient down to 0, with
adjoints ``gv = dL/dv_t``, ``gb = dL/db_t``, ``gzf = dL/dzf_t``, ``gz = dL/dz_t`` (from step
``t+1``'s use of ``z_t`` as ``z_prev``), per neuron:

- ``gz_t += (1-kappa) gzf_t (+ dL/dzf_t at a readout) + dL/dcount``; ``gzf_{t-1} = kappa gzf_t``
- ``A = b0 + beta b_t``, ``vs = (v_{t-1} - A) / A``, ``gvs = gz_t * gamma max(0, 1-|vs|) * m_t``
  (``m_t = 0`` while refractory: recomputed from the spike bits of the last ``n_ref`` steps)
- ``gI = (1-alpha) gv``;  ``gA = -z_{t-1} dt gv - gvs / A - (gvs / A) vs``
- ``galpha += (v_{t-1} - I_t) gv`` (``I_t`` recomputed from the spikes, only when asked)
- ``gv_{t-1} = alpha gv + gvs / A``;  ``gbt = gb + beta gA``; ``gb0 += gA``; ``gbeta += b_t gA``
- ``grho += (b_{t-1} - z_{t-1}) gbt``;  ``gb_{t-1} = rho gbt``
- ``gz_{t-1} = -A dt gv + (1-rho) gbt + W_rec gI``   (the one dense product per step: register
  tiles over ``W_rec^T``)
- ``gW_rec[j, :] += gI`` for each ``j`` with ``z_{t-1,j} = 1`` and ``gW_in[k, :] += x_{t,k} gI``
  for each nonzero input: event-driven.

Gradients per work item go to separate slices (``P * G`` of them, ``G`` row groups per member),
summed by the caller.
"""

from __future__ import annotations

import ctypes
import math

from es_l2l.snn import kernel

HEADER = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* 512-bit vectors where the CPU has AVX-512, else 256-bit (rows are padded to 16 floats either way). */
#if defined(__AVX512F__) && !defined(ES_L2L_NARROW)
typedef float vf32 __attribute__((vector_size(64), aligned(4)));
typedef double vf64 __attribute__((vector_size(64), aligned(8)));
#define VL_f32 16
#define VL_f64 8
#else
typedef float vf32 __attribute__((vector_size(32), aligned(4)));
typedef double vf64 __attribute__((vector_size(32), aligned(8)));
#define VL_f32 8
#define VL_f64 4
#endif

static inline void *scratch(size_t bytes) { return aligned_alloc(64, ((bytes + 63) / 64) * 64 + 64); }
"""

# REAL, VEC, VLEN and SUF are replaced per instantiation.
BODY = r"""
/* out (rows x NP, stride NP) += c (rows x N, stride cs) W (N x NP, NP a multiple of 8): register
   tiles of RB rows x NV vectors, the accumulators in registers while W's column panel stays in L1. */
#pragma GCC push_options
#pragma GCC optimize ("fp-contract=fast")
static inline __attribute__((always_inline)) void tile_SUF(const int RB, const int NV, long N, long NP,
        const REAL *restrict W, const REAL *restrict c, long cs, REAL *restrict out, long i0)
{
    VEC a[6][2];
    for (int r = 0; r < RB; ++r)
        for (int u = 0; u < NV; ++u) a[r][u] = *(const VEC *)(out + r * NP + i0 + VLEN * u);
    for (long k = 0; k < N; ++k) {
        const REAL *w = W + k * NP + i0;
        __builtin_prefetch(w + 6 * NP);
        VEC w0 = *(const VEC *)w;
        VEC w1 = NV > 1 ? *(const VEC *)(w + VLEN) : w0;
        for (int r = 0; r < RB; ++r) {
            REAL s = c[r * cs + k];
            a[r][0] += s * w0;
            if (NV > 1) a[r][1] += s * w1;
        }
    }
    for (int r = 0; r < RB; ++r)
        for (int u = 0; u < NV; ++u) *(VEC *)(out + r * NP + i0 + VLEN * u) = a[r][u];
}

static void dense_SUF(long rows, long N, long NP, const REAL *restrict W, const REAL *restrict c, long cs,
                      REAL *restrict out)
{
    long i0 = 0;
    for (; i0 + 2 * VLEN <= NP; i0 += 2 * VLEN) {
        long b = 0;
        for (; b + 6 <= rows; b += 6) tile_SUF(6, 2, N, NP, W, c + b * cs, cs, out + b * NP, i0);
        for (; b + 2 <= rows; b += 2) tile_SUF(2, 2, N, NP, W, c + b * cs, cs, out + b * NP, i0);
        for (; b < rows; ++b) tile_SUF(1, 2, N, NP, W, c + b * cs, cs, out + b * NP, i0);
    }
    for (; i0 < NP; i0 += VLEN) {
        long b = 0;
        for (; b + 6 <= rows; b += 6) tile_SUF(6, 1, N, NP, W, c + b * cs, cs, out + b * NP, i0);
        for (; b < rows; ++b) tile_SUF(1, 1, N, NP, W, c + b * cs, cs, out + b * NP, i0);
    }
}
#pragma GCC pop_options

/* c += the rows j of W (N x NP) whose bit is set in zb, ascending j. */
static inline void add_rows_SUF(long NW, long NP, const uint64_t *restrict zb, const REAL *restrict W, REAL *restrict c)
{
    VEC *cv = (VEC *)c;
    for (long w = 0; w < NW; ++w) {
        uint64_t m = zb[w];
        while (m) {
            long j = w * 64 + __builtin_ctzll(m);
            m &= m - 1;
            const VEC *wr = (const VEC *)(W + j * NP);
            for (long u = 0; u < NP / VLEN; ++u) cv[u] += wr[u];
        }
    }
}

/* c (N) = W_in x_t for one row: the rows of W_in (n_in x N) of the nonzero inputs, ascending k. */
static inline void input_row_SUF(long N, long n_in, const REAL *restrict xr, const REAL *restrict wi, REAL *restrict c)
{
    for (long k = 0; k < n_in; ++k) {
        REAL xk = xr[k];
        if (xk != 0) {
            const REAL *w = wi + k * N;
            for (long i = 0; i < N; ++i) c[i] += xk * w[i];
        }
    }
}

static inline void pack_SUF(long N, const REAL *restrict z, uint64_t *restrict out)
{
    for (long w = 0; w * 64 < N; ++w) {
        long hi = N - w * 64 < 64 ? N - w * 64 : 64;
        uint64_t m = 0;
        for (long i = 0; i < hi; ++i) m |= (uint64_t)(z[w * 64 + i] != 0) << i;
        out[w] = m;
    }
}

static inline void unpack_SUF(long N, const uint64_t *restrict bits, REAL *restrict out, int negate)
{
    for (long i = 0; i < N; ++i) {
        REAL bit = (REAL)((bits[i >> 6] >> (i & 63)) & 1);
        out[i] = negate ? 1 - bit : bit;
    }
}

/* 1. adaptation for one row, as the forward computes it: bout = rho bin + (1 - rho) z_prev. */
static inline void adapt_SUF(long N, const REAL *restrict rh, const REAL *restrict om, const REAL *restrict bin,
                             const REAL *restrict zp, REAL *restrict bout)
{
    for (long i = 0; i < N; ++i) bout[i] = rh[i] * bin[i] + om[i] * zp[i];
}

static inline void split_SUF(long P, long B, long G, long item, long *p, long *lo, long *hi)
{
    long per = (B + G - 1) / G;
    *p = item / G;
    *lo = (item % G) * per;
    *hi = *lo + per < B ? *lo + per : B;
}

/* Steps 1-3 and 5 of lsnn_step for one row (N neurons) given the row's input current c (step 4),
   recording v_{t-1} and b_t. z: the previous step's spikes on entry, this step's on exit. */
static inline REAL fwd_row_SUF(long N, REAL n_ref_f, REAL dt, REAL kp, REAL okp, const REAL *restrict c,
        const REAL *restrict rh, const REAL *restrict om, const REAL *restrict al, const REAL *restrict oa,
        const REAL *restrict b0p, const REAL *restrict bep, REAL *restrict vq, REAL *restrict bq, REAL *restrict rq,
        REAL *restrict zfq, REAL *restrict skq, REAL *restrict zq, REAL *restrict cr, REAL *restrict rv, REAL *restrict rb)
{
    REAL s = 0;
    for (long i = 0; i < N; ++i) {
        REAL zpi = zq[i];
        REAL bi = rh[i] * bq[i] + om[i] * zpi;             /* 1. adaptation */
        REAL thr = b0p[i] + bep[i] * bi;                   /* 2. threshold A */
        REAL vi = vq[i], ri = rq[i];
        REAL zi = (REAL)(((vi - thr) / thr > 0) & !(ri > 0));   /* 3. spike, not refractory */
        REAL dec = ri - 1;
        dec = dec > 0 ? dec : 0;
        rq[i] = zi * n_ref_f + (1 - zi) * dec;             /* exact: zi is 0 or 1 */
        rv[i] = vi;
        rb[i] = bi;
        vq[i] = (al[i] * vi + oa[i] * c[i]) - (thr * zpi) * dt;   /* 5. membrane, reset */
        bq[i] = bi;
        REAL zfo = zfq[i];
        zfq[i] = kp * zfo + okp * zi;                      /* readout trace */
        skq[i] = kp * skq[i] + (zfo - zi);                 /* d zf / d kappa */
        cr[i] += zi;
        zq[i] = zi;
        s += zi;
    }
    return s;
}

/* One step of the adjoint recursion for one row (see the module docstring). Reads gz (dL/dz_t from
   step t+1), writes gzp (dL/dz_{t-1} before the W_rec gI term) and gI; updates gv, gb, gzf and
   the per-neuron gradient sums in place. */
static inline void bwd_row_SUF(long N, REAL dt, REAL gamma, REAL kp, REAL okp, const REAL *restrict vp,
        const REAL *restrict bt, const REAL *restrict bprev, const REAL *restrict inj, const REAL *restrict gc,
        const REAL *restrict m, const REAL *restrict zq, const REAL *restrict cq, const REAL *restrict gzq,
        const REAL *restrict rh, const REAL *restrict om, const REAL *restrict al, const REAL *restrict oa,
        const REAL *restrict b0p, const REAL *restrict bep, REAL *restrict gvq, REAL *restrict gbq,
        REAL *restrict gzfq, REAL *restrict gzpq, REAL *restrict gIq, REAL *restrict ga, REAL *restrict gr,
        REAL *restrict gb0, REAL *restrict gbe)
{
    for (long i = 0; i < N; ++i) {
        REAL gzfi = gzfq[i] + inj[i];
        REAL gzt = gzq[i] + okp * gzfi + gc[i];
        gzfq[i] = kp * gzfi;
        REAL A = b0p[i] + bep[i] * bt[i];
        REAL vpi = vp[i];
        REAL vs = (vpi - A) / A;                           /* as the forward's spike test */
        REAL av = vs < 0 ? -vs : vs;
        REAL ps = 1 - av;
        ps = ps > 0 ? gamma * ps : 0;
        REAL gvs = gzt * m[i] * ps;
        REAL gvsA = gvs / A;                               /* d vs / d v = 1 / A, d vs / d A = -(1 + vs) / A */
        REAL gvi = gvq[i];
        gIq[i] = oa[i] * gvi;
        ga[i] += (vpi - cq[i]) * gvi;
        REAL gA = -(zq[i] * dt) * gvi - gvsA - gvsA * vs;
        gvq[i] = al[i] * gvi + gvsA;
        REAL gbt = gbq[i] + bep[i] * gA;
        gb0[i] += gA;
        gbe[i] += bt[i] * gA;
        gr[i] += (bprev[i] - zq[i]) * gbt;
        gbq[i] = rh[i] * gbt;
        gzpq[i] = om[i] * gbt - (A * dt) * gvi;
    }
}

/* Forward of P members x B rows x N neurons for T steps from the zero state, recording v_{t-1}
   (P, T, B, N), z_t as bits (P, T, B, NW) and, per segment c of KC steps, the b entering it,
   b_{c KC - 1} (P, C, B, N), C = ceil(T / KC). x element (p, b, t, k) at x[p*xs_p + b*xs_b +
   t*n_in + k]. w_rec (P, N, NP) padded with zeros. Coefficients (P, N), kappa and 1 - kappa (P).
   keep[t]: the readout slot of step t or -1; zf_out and sk_out (d zf / d kappa, may be NULL)
   (P, B, K, N); count (P, B, N), zeroed by the caller. Returns the number of spikes. */
long lsnn_fwd_SUF(long P, long B, long N, long NP, long n_in, long n_ref, REAL dt, int nthreads, long G, long T,
                  const REAL *x, long xs_p, long xs_b, const REAL *w_in, const REAL *w_rec,
                  const REAL *rho, const REAL *omr, const REAL *alpha, const REAL *oma, const REAL *b0, const REAL *beta,
                  const REAL *kappa, const REAL *omk, const long *keep, long K,
                  REAL *zf_out, REAL *sk_out, REAL *count, REAL *rec_v, long KC, REAL *rec_b, uint64_t *rec_z)
{
    const long NW = (N + 63) / 64, per = (B + G - 1) / G, C = (T + KC - 1) / KC;
    const REAL n_ref_f = (REAL)n_ref;
    long total = 0;
    #pragma omp parallel num_threads(nthreads) reduction(+:total)
    {
        REAL *cur = scratch(per * NP * sizeof(REAL));
        REAL *st = scratch(6 * per * N * sizeof(REAL));
        REAL *dummy = scratch(N * sizeof(REAL));
        #pragma omp for schedule(static)
        for (long item = 0; item < P * G; ++item) {
            long p, lo, hi;
            split_SUF(P, B, G, item, &p, &lo, &hi);
            if (lo >= hi) continue;
            const long rows = hi - lo;
            memset(st, 0, 6 * per * N * sizeof(REAL));
            REAL *v = st, *bb = st + per * N, *rf = st + 2 * per * N, *zf = st + 3 * per * N;
            REAL *sk = st + 4 * per * N, *z = st + 5 * per * N;
            const REAL *wi = w_in + p * n_in * N, *W = w_rec + p * N * NP;
            const REAL *rh = rho + p * N, *om = omr + p * N, *al = alpha + p * N, *oa = oma + p * N;
            const REAL *b0p = b0 + p * N, *bep = beta + p * N;
            const REAL kp = kappa[p], okp = omk[p];
            long spikes = 0;
            for (long q = 0; q < rows; ++q)                       /* b entering segment 0: the zero state */
                memset(rec_b + ((p * C) * B + lo + q) * N, 0, N * sizeof(REAL));
            for (long t = 0; t < T; ++t) {
                const long ck = (t + 1) % KC == 0 && t + 1 < T ? (t + 1) / KC : -1;   /* b_t starts segment ck */
                for (long q = 0; q < rows; ++q) {                 /* 4. I = W_in x_t + W_rec z_prev */
                    REAL *c = cur + q * NP;
                    memset(c, 0, NP * sizeof(REAL));
                    input_row_SUF(N, n_in, x + p * xs_p + (lo + q) * xs_b + t * n_in, wi, c);
                    if (t > 0) add_rows_SUF(NW, NP, rec_z + ((p * T + t - 1) * B + lo + q) * NW, W, c);
                }
                for (long q = 0; q < rows; ++q) {
                    const long o = q * N, rec = ((p * T + t) * B + lo + q) * N;
                    REAL *rb = ck >= 0 ? rec_b + ((p * C + ck) * B + lo + q) * N : dummy;
                    REAL s = fwd_row_SUF(N, n_ref_f, dt, kp, okp, cur + q * NP, rh, om, al, oa, b0p, bep, v + o, bb + o,
                                         rf + o, zf + o, sk + o, z + o, count + (p * B + lo + q) * N, rec_v + rec, rb);
                    spikes += (long)s;
                    pack_SUF(N, z + o, rec_z + ((p * T + t) * B + lo + q) * NW);
                }
                if (keep[t] >= 0)
                    for (long q = 0; q < rows; ++q) {
                        long o = ((p * B + lo + q) * K + keep[t]) * N;
                        memcpy(zf_out + o, zf + q * N, N * sizeof(REAL));
                        if (sk_out) memcpy(sk_out + o, sk + q * N, N * sizeof(REAL));
                    }
            }
            total += spikes;
        }
        free(cur);
        free(st);
        free(dummy);
    }
    return total;
}

/* Backward from step t_last down to 0 (adjoints are zero after t_last); b_t is recomputed per
   segment of KC steps from the checkpoints rec_b and the spike bits. g_zf (P, B, K, N): dL/dzf
   at the readout slots; g_count (P, B, N) or NULL. w_rec_t (P, N, NP): W_rec transposed
   (post x pre), padded. Gradients go to the item slices (P*G, ...) zeroed by the caller:
   g_w_in (P*G, n_in, N), g_w_rec (P*G, N, NP), g_alpha, g_rho, g_b0, g_beta (P*G, N); g_alpha
   is meaningful only with need_alpha (which recomputes I_t). */
void lsnn_bwd_SUF(long P, long B, long N, long NP, long n_in, long n_ref, REAL dt, REAL gamma, int nthreads, long G,
                  long T, long t_last, const REAL *x, long xs_p, long xs_b, const REAL *w_in, const REAL *w_rec,
                  const REAL *w_rec_t, const REAL *rho, const REAL *omr, const REAL *alpha, const REAL *oma,
                  const REAL *b0, const REAL *beta, const REAL *kappa, const REAL *omk, const long *keep, long K,
                  const REAL *g_zf, const REAL *g_count, const REAL *rec_v, long KC, const REAL *rec_b,
                  const uint64_t *rec_z, int need_alpha, REAL *g_w_in, REAL *g_w_rec, REAL *g_alpha, REAL *g_rho,
                  REAL *g_b0, REAL *g_beta)
{
    const long NW = (N + 63) / 64, per = (B + G - 1) / G, C = (T + KC - 1) / KC;
    #pragma omp parallel num_threads(nthreads)
    {
        const long nbuf = 5 * per * N + 4 * per * NP + 2 * N;
        REAL *buf = scratch(nbuf * sizeof(REAL));
        uint64_t *refr = malloc((NW + 1) * sizeof(uint64_t));
        REAL *segb = scratch(KC * per * N * sizeof(REAL));      /* b_t of the current segment, recomputed */
        #pragma omp for schedule(static)
        for (long item = 0; item < P * G; ++item) {
            long p, lo, hi;
            split_SUF(P, B, G, item, &p, &lo, &hi);
            if (lo >= hi) continue;
            const long rows = hi - lo;
            memset(buf, 0, nbuf * sizeof(REAL));
            REAL *gv = buf, *gb = buf + per * N, *gzf = buf + 2 * per * N, *zp = buf + 3 * per * N;
            REAL *msk = buf + 4 * per * N;
            REAL *gz = buf + 5 * per * N, *gzp = gz + per * NP, *gI = gzp + per * NP, *cur = gI + per * NP;
            REAL *zeros = cur + per * NP, *ones = zeros + N;
            for (long i = 0; i < N; ++i) ones[i] = 1;
            const REAL *wi = w_in + p * n_in * N, *W = w_rec + p * N * NP, *WT = w_rec_t + p * N * NP;
            const REAL *rh = rho + p * N, *om = omr + p * N, *al = alpha + p * N, *oa = oma + p * N;
            const REAL *b0p = b0 + p * N, *bep = beta + p * N;
            const REAL kp = kappa[p], okp = omk[p];
            REAL *gwi = g_w_in + item * n_in * N, *gW = g_w_rec + item * N * NP;
            REAL *ga = g_alpha + item * N, *gr = g_rho + item * N, *gb0 = g_b0 + item * N, *gbe = g_beta + item * N;
            for (long t = t_last; t >= 0; --t) {
                const long c = t / KC, t0 = c * KC;
                if (t == t_last || t % KC == KC - 1) {            /* entering segment c from above: b_t0 .. b_t */
                    for (long s = t0; s <= t; ++s)
                        for (long q = 0; q < rows; ++q) {
                            const REAL *bin = s == t0 ? rec_b + ((p * C + c) * B + lo + q) * N
                                                      : segb + ((s - 1 - t0) * rows + q) * N;
                            REAL *bout = segb + ((s - t0) * rows + q) * N;
                            if (s > 0) unpack_SUF(N, rec_z + ((p * T + s - 1) * B + lo + q) * NW, zp + q * N, 0);
                            else memset(zp + q * N, 0, N * sizeof(REAL));
                            adapt_SUF(N, rh, om, bin, zp + q * N, bout);
                        }
                }
                for (long q = 0; q < rows; ++q) {
                    const uint64_t *zprev = t > 0 ? rec_z + ((p * T + t - 1) * B + lo + q) * NW : NULL;
                    if (zprev) unpack_SUF(N, zprev, zp + q * N, 0);
                    else memset(zp + q * N, 0, N * sizeof(REAL));
                    if (n_ref > 0) {              /* refractory at t iff a spike in steps t-n_ref .. t-1 */
                        for (long w = 0; w < NW; ++w) refr[w] = 0;
                        for (long s = t - 1; s >= 0 && s >= t - n_ref; --s)
                            for (long w = 0; w < NW; ++w) refr[w] |= rec_z[((p * T + s) * B + lo + q) * NW + w];
                        unpack_SUF(N, refr, msk + q * N, 1);
                    }
                    if (need_alpha) {             /* I_t, as the forward computed it */
                        REAL *c = cur + q * NP;
                        memset(c, 0, NP * sizeof(REAL));
                        input_row_SUF(N, n_in, x + p * xs_p + (lo + q) * xs_b + t * n_in, wi, c);
                        if (zprev) add_rows_SUF(NW, NP, zprev, W, c);
                    }
                }
                const long slot = keep[t];
                for (long q = 0; q < rows; ++q) {
                    const long o = q * N, row = p * B + lo + q, rec = ((p * T + t) * B + lo + q) * N;
                    const REAL *bt = segb + ((t - t0) * rows + q) * N;
                    const REAL *bprev = t > t0 ? bt - rows * N : rec_b + ((p * C + c) * B + lo + q) * N;
                    bwd_row_SUF(N, dt, gamma, kp, okp, rec_v + rec, bt, bprev,
                                slot >= 0 ? g_zf + (row * K + slot) * N : zeros, g_count ? g_count + row * N : zeros,
                                n_ref > 0 ? msk + o : ones, zp + o, need_alpha ? cur + q * NP : zeros, gz + q * NP,
                                rh, om, al, oa, b0p, bep, gv + o, gb + o, gzf + o, gzp + q * NP, gI + q * NP, ga, gr, gb0, gbe);
                }
                dense_SUF(rows, N, NP, WT, gI, NP, gzp);          /* gz_{t-1} += W_rec gI */
                for (long q = 0; q < rows; ++q) {                 /* event-driven weight gradients */
                    const REAL *gIq = gI + q * NP;
                    if (t > 0) {
                        const uint64_t *zb = rec_z + ((p * T + t - 1) * B + lo + q) * NW;
                        for (long w = 0; w < NW; ++w) {
                            uint64_t mm = zb[w];
                            while (mm) {
                                long j = w * 64 + __builtin_ctzll(mm);
                                mm &= mm - 1;
                                VEC *g = (VEC *)(gW + j * NP);
                                const VEC *s = (const VEC *)gIq;
                                for (long u = 0; u < NP / VLEN; ++u) g[u] += s[u];
                            }
                        }
                    }
                    const REAL *xr = x + p * xs_p + (lo + q) * xs_b + t * n_in;
                    for (long k = 0; k < n_in; ++k) {
                        REAL xk = xr[k];
                        if (xk != 0) {
                            REAL *g = gwi + k * N;
                            for (long i = 0; i < N; ++i) g[i] += xk * gIq[i];
                        }
                    }
                }
                REAL *tmp = gz; gz = gzp; gzp = tmp;
            }
        }
        free(buf);
        free(refr);
        free(segb);
    }
}
"""

TYPES = {"f32": ("float", "vf32", "VL_f32"), "f64": ("double", "vf64", "VL_f64")}


def source() -> str:
    parts = [HEADER]
    for suf, (real, vec, vlen) in TYPES.items():
        parts.append(BODY.replace("SUF", suf).replace("REAL", real).replace("VEC", vec).replace("VLEN", vlen))
    return "\n".join(parts)


SOURCE = source()
_STATE: dict = {}


def _bind(dll: ctypes.CDLL) -> dict:
    L, I, P = ctypes.c_long, ctypes.c_int, ctypes.c_void_p
    fns = {}
    for suf, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        fwd = getattr(dll, f"lsnn_fwd_{suf}")
        fwd.argtypes = [L, L, L, L, L, L, real, I, L, L, P, L, L, P, P] + [P] * 8 + [P, L] + [P] * 4 + [L, P, P]
        fwd.restype = L
        bwd = getattr(dll, f"lsnn_bwd_{suf}")
        bwd.argtypes = ([L, L, L, L, L, L, real, real, I, L, L, L, P, L, L, P, P, P] + [P] * 8 + [P, L]
                        + [P] * 3 + [L, P, P] + [I] + [P] * 6)
        bwd.restype = None
        fns[suf] = (fwd, bwd)
    return fns


def load():
    """``{"f32": (fwd, bwd), "f64": (fwd, bwd)}``, or ``None`` where the kernel cannot be built
    or loaded (:func:`why_not` says why)."""
    if "fns" not in _STATE:
        import os

        if os.environ.get("ES_L2L_NO_KERNEL"):
            _STATE.update(fns=None, why="disabled by ES_L2L_NO_KERNEL")
        else:
            try:
                _STATE.update(fns=_bind(kernel.build_and_load("lsnn_grad", SOURCE)), why=None)
            except Exception as exc:  # no compiler, refused cache: the caller falls back to autograd
                _STATE.update(fns=None, why=f"C gradient kernel unavailable ({type(exc).__name__}: {exc})")
    return _STATE["fns"]


def why_not() -> str | None:
    load()
    return _STATE["why"]


def padded(w: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
    """(P, N, N) -> (P, N, NP), rows padded with zeros to NP, the next multiple of 16 (the widest vector)."""
    import torch

    pop, n, _ = w.shape
    width = -(-n // 16) * 16
    out = torch.zeros(pop, n, width, dtype=w.dtype)
    out[..., :n] = w
    return out


def words(n: int) -> int:
    """64-bit words of one row's spike bits."""
    return -(-n // 64)


CHECKPOINT = 16  # b is recorded every CHECKPOINT steps and recomputed in between


def segments(steps: int, every: int = CHECKPOINT) -> int:
    return -(-steps // every)


def recorded_bytes(pop: int, batch: int, n: int, steps: int, real_bytes: int = 4, every: int = CHECKPOINT) -> int:
    """Bytes the forward records for backward: ``v`` every step and ``b`` every ``every`` steps as
    reals, spikes as bits (whole 64-bit words per row): per neuron-step
    ``real_bytes * (1 + ceil(T / every) / T) + 8 * ceil(N / 64) / N`` (4.40 for float32, N=220, T=784)."""
    return pop * batch * (steps * real_bytes * n + segments(steps, every) * real_bytes * n + steps * 8 * words(n))


def bytes_per_neuron_step(n: int, steps: int, real_bytes: int = 4, every: int = CHECKPOINT) -> float:
    return recorded_bytes(1, 1, n, steps, real_bytes, every) / (n * steps)


def groups(pop: int, batch: int, threads: int) -> int:
    """Row groups per member: members split into groups of rows only when fewer than threads."""
    if pop >= threads:
        return 1
    return max(1, min(batch, math.ceil(threads / pop)))
