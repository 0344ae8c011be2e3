"""The forward that shares the centre, in C (:mod:`es_l2l.snn.kernel`'s neuron update and recurrent sums).

``lsnn_lowrank_f32`` runs the whole time loop of :func:`es_l2l.snn.lowrank.lowrank_rollout`: member
after member, each step its ``B`` rows take the centre's input current (``x W_in``, computed once
for the population in torch) plus ``(x a_in) b_in^T``, the centre's ``W_rec z`` (one matrix for
every member, so it stays in cache; event-driven while few units spike, else dense register
tiles) plus ``(z a_rec) b_rec^T - z * diag(a_rec b_rec^T)``, then the neuron update of
``lsnn_run_f32``. The readout is applied in torch. Floats equal the explicit matrices' to
rounding (the sums run in another order). Built as its own library on first use; ``None`` where
it cannot be (the caller then uses the torch forward).
"""

from __future__ import annotations

import ctypes

import torch

from es_l2l.snn import kernel
from es_l2l.snn.event import KERNEL_EVENT_THRESHOLD
from es_l2l.snn.inplace import coeffs
from es_l2l.snn.types import Rollout

SOURCE = kernel.SOURCE + r"""
/* x . y over n floats: eight lanes, then a fixed fold (the same order every call). */
static inline float dot8(const float *restrict x, const float *restrict y, long n)
{
    v8 acc = {0, 0, 0, 0, 0, 0, 0, 0};
    long j = 0;
    for (; j + 8 <= n; j += 8) acc += *(const v8 *)(x + j) * *(const v8 *)(y + j);
    float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; j < n; ++j) sum += x[j] * y[j];
    return sum;
}

/* c += sum_k u_k bt[k, :] (bt: R x N), four ranks a pass over c. */
static inline void add_low(float *restrict c, const float *restrict u, const float *restrict bt, long R, long N)
{
    long k = 0;
    for (; k + 4 <= R; k += 4) {
        const float u0 = u[k], u1 = u[k + 1], u2 = u[k + 2], u3 = u[k + 3];
        const float *b0 = bt + k * N, *b1 = b0 + N, *b2 = b1 + N, *b3 = b2 + N;
        for (long i = 0; i < N; ++i) c[i] += (u0 * b0[i] + u1 * b1[i]) + (u2 * b2[i] + u3 * b3[i]);
    }
    for (; k < R; ++k) {
        const float uk = u[k], *bk = bt + k * N;
        for (long i = 0; i < N; ++i) c[i] += uk * bk[i];
    }
}

/* P members x B rows x N neurons, T steps from the state given (float32). cur_in: (B, T, NP) the
   centre's input current, shared by the members; x: (B, T, n_in) the shared inputs; a_in
   (P, n_in, R), b_in transposed (P, R, N) or NULL; w_rec: (N, NP) the centre's, zero diagonal,
   rows padded; a_rec and b_rec transposed (P, R, N) or NULL, d_rec (P, N) the diagonal of
   a_rec b_rec^T. State (P*B, N). */
long lsnn_lowrank_f32(long P, long B, long N, long NP, long n_in, long R, long n_ref, float dt, int nthreads, long T,
                      const float *x, const float *cur_in, const float *a_in, const float *b_in,
                      const float *w_rec, const float *a_rec, const float *b_rec, const float *d_rec,
                      const float *rho, const float *omr, const float *alpha, const float *oma,
                      const float *b0, const float *beta, const float *kappa, const float *omk,
                      float *v, float *b, float *r, float *zf, float *count, float *z,
                      float event_threshold, const long *keep, long K, float *zf_out)
{
    long total = 0;
    #pragma omp parallel num_threads(nthreads) reduction(+:total)
    {
        float *cur = aligned_alloc(64, ((B * NP * sizeof(float) + 63) / 64) * 64);
        float *u = malloc((R > 0 ? R : 1) * sizeof(float));
        uint64_t *mask = malloc(2 * N * sizeof(uint64_t));
        #pragma omp for schedule(static)
        for (long p = 0; p < P; ++p) {
            long row0 = p * B;
            const float *rh = rho + p * N, *om = omr + p * N, *al = alpha + p * N, *oa = oma + p * N;
            const float *b0p = b0 + p * N, *bep = beta + p * N;
            const float kp = kappa[p], okp = omk[p];
            float *zz = z + row0 * N;
            long cnt = 0;
            for (long i = 0; i < B * N; ++i) cnt += zz[i] != 0.0f;
            float limit = event_threshold * (float)(B * N);
            for (long t = 0; t < T; ++t) {
                for (long q = 0; q < B; ++q) {              /* I = x W_in (shared) + (x a_in) b_in^T */
                    float *c = cur + q * NP;
                    memcpy(c, cur_in + (q * T + t) * NP, NP * sizeof(float));
                    if (a_in) {
                        const float *xr = x + (q * T + t) * n_in, *A = a_in + p * n_in * R, *Bt = b_in + p * R * N;
                        long any = 0;
                        for (long k = 0; k < R; ++k) u[k] = 0.0f;
                        for (long j = 0; j < n_in; ++j)
                            if (xr[j] != 0.0f) { any = 1; for (long k = 0; k < R; ++k) u[k] += xr[j] * A[j * R + k]; }
                        if (any) add_low(c, u, Bt, R, N);
                    }
                }
                if ((float)cnt > limit) dense_rec(B, N, NP, w_rec, zz, cur);   /* + W_rec z (the centre's) */
                else if (cnt > 0) event_rec(B, N, NP, w_rec, zz, cur, mask);
                if (a_rec && cnt > 0) {                     /* + (z a_rec) b_rec^T - z diag(a_rec b_rec^T) */
                    const float *At = a_rec + p * R * N, *Bt = b_rec + p * R * N, *D = d_rec + p * N;
                    for (long q = 0; q < B; ++q) {
                        const float *zr = zz + q * N;
                        float *c = cur + q * NP;
                        long any = 0;
                        for (long j = 0; j < N; ++j) any |= zr[j] != 0.0f;
                        if (!any) continue;
                        for (long k = 0; k < R; ++k) u[k] = dot8(zr, At + k * N, N);   /* u_k = z . a_rec[:, k] */
                        add_low(c, u, Bt, R, N);
                        for (long i = 0; i < N; ++i) c[i] -= zr[i] * D[i];
                    }
                }
                cnt = 0;
                for (long q = 0; q < B; ++q) {
                    long o = (row0 + q) * N;
                    cnt += update_row(N, (float)n_ref, dt, cur + q * NP, z + o, rh, om, al, oa, b0p, bep, kp, okp,
                                      v + o, b + o, r + o, zf + o, count + o);
                }
                total += cnt;
                if (keep[t] >= 0)
                    for (long q = 0; q < B; ++q)
                        memcpy(zf_out + ((row0 + q) * K + keep[t]) * N, zf + (row0 + q) * N, N * sizeof(float));
            }
        }
        free(cur);
        free(u);
        free(mask);
    }
    return total;
}
"""

_STATE: dict = {}


def load():
    """The compiled function, or ``None`` where it cannot be built (:func:`why_not` says why)."""
    if "fn" not in _STATE:
        try:
            if kernel.load() is None:
                raise RuntimeError(kernel.why_not())
            dll = kernel.build_and_load("lsnn_lowrank", SOURCE)
            L, F, I, P = ctypes.c_long, ctypes.c_float, ctypes.c_int, ctypes.c_void_p
            fn = dll.lsnn_lowrank_f32
            fn.argtypes = [L, L, L, L, L, L, L, F, I, L] + [P] * 8 + [P] * 8 + [P] * 6 + [F, P, L, P]
            fn.restype = L
            _STATE.update(fn=fn, why=None)
        except Exception as exc:  # no compiler, no OpenMP: the torch forward instead
            _STATE.update(fn=None, why=f"low-rank C kernel unavailable ({type(exc).__name__}: {exc})")
    return _STATE["fn"]


def why_not() -> str | None:
    load()
    return _STATE["why"]


def _c(t):
    return None if t is None else t.detach().to(torch.float32).contiguous()


@torch.no_grad()
def kernel_lowrank_rollout(center, factors, x, *, n_ref: int, dt: float = 1.0, readout_steps=None,
                           event_threshold: float | None = None) -> Rollout:
    """:func:`es_l2l.snn.lowrank.lowrank_rollout` in C (CPU, float32); same arguments."""
    fn = load()
    if fn is None:
        raise RuntimeError(why_not())
    pop, n = center.alpha.shape
    batch, steps, n_in = x.shape
    f = factors
    x = x.to(torch.float32).contiguous()
    w_rec = kernel.padded((center.w_rec[0] * (1.0 - torch.eye(n))).unsqueeze(0))[0].contiguous()
    width = w_rec.shape[-1]
    cur_in = torch.zeros(batch, steps, width)
    cur_in[..., :n] = (x.reshape(batch * steps, n_in) @ center.w_in[0]).view(batch, steps, n)  # once for all members
    rank = next((t.shape[-1] for t in (f.a_in, f.a_rec) if t is not None), 0)
    d_rec = None if f.a_rec is None else (f.a_rec * f.b_rec).sum(-1)
    c = coeffs(center)
    coef = [t.expand(pop, 1, n).contiguous() for t in (c.rho, c.one_m_rho, c.alpha, c.one_m_alpha, c.b0, c.beta)]
    coef += [t.reshape(pop).contiguous() for t in (c.kappa, c.one_m_kappa)]
    state = [torch.zeros(pop, batch, n) for _ in range(6)]  # v, b, r, zf, count, z
    if readout_steps is None:
        readout_steps = torch.arange(steps)
    slots = torch.full((steps,), -1, dtype=torch.int64)
    slots[readout_steps.cpu()] = torch.arange(len(readout_steps))
    zf_out = torch.empty(pop, batch, len(readout_steps), n)
    t = lambda b: None if b is None else b.transpose(1, 2)  # noqa: E731  (P, R, N): the kernel's loops run along N
    args = [_c(a) for a in (f.a_in, t(f.b_in), t(f.a_rec), t(f.b_rec), d_rec)]
    ptr = lambda t: None if t is None else t.data_ptr()  # noqa: E731
    fn(pop, batch, n, width, n_in, rank, n_ref, dt, torch.get_num_threads(), steps, ptr(x), ptr(cur_in),
       ptr(args[0]), ptr(args[1]), ptr(w_rec), ptr(args[2]), ptr(args[3]), ptr(args[4]), *[ptr(t) for t in coef],
       *[ptr(t) for t in state], float(KERNEL_EVENT_THRESHOLD if event_threshold is None else event_threshold),
       ptr(slots), len(readout_steps), ptr(zf_out))
    keep = (x, cur_in, w_rec, coef, state, args)  # noqa: F841  (alive through the call)
    y = torch.matmul(zf_out.reshape(1, -1, n), center.w_out[0]).view(pop, batch, zf_out.shape[2], -1)
    if f.a_out is not None:
        low = torch.bmm(zf_out.reshape(pop, -1, n), f.a_out)
        y = y + torch.bmm(low, f.b_out.transpose(1, 2)).view_as(y)
    return Rollout(y=y + center.b_out[:, None, None, :], spike_count=state[4], spikes=None, n_steps=steps)
