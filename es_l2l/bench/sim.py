"""LSNN population simulation: throughput grid (forward; forward + backward), the event-driven
recurrent term against the dense product, the auto choice across firing regimes, fusion options
(C kernel, in-place, torch.compile with its compile cost), bf16, and CUDA where present.

Throughput is neuron-steps per second, ``P * B * N * T / seconds``. The roofline is the bare
``bmm`` of the same shapes (``T`` products ``(P, B, N) x (P, N, N)``; three for forward +
backward), timed in the same run, interleaved with the simulation: fraction of roofline =
``bmm seconds / simulation seconds``. Where all members' ``W_rec`` outgrow the caches that bare
``bmm`` streams them from memory every step, while the C kernel keeps each member's in cache for
its whole time loop; so the forward cells also state the stricter compute-bound figure: the dense
step's ``W_rec z`` FLOP rate against ``bmm`` on two members (in cache), same run.
"""

from __future__ import annotations

import torch

from es_l2l.bench.common import fmt, input_spikes, interleaved, median, reference_params, table, timed
from es_l2l.snn import LSNNParams, kernel, rollout
from es_l2l.snn.fast import fast_rollout
from es_l2l.snn.lsnn import step_rollout

N_IN, N_REF = 10, 5
SPARSE_B0 = 0.06  # ~1% of units spike per step with these inputs, as in trained networks
LOOP_MEMBERS = 16  # the loop over members is timed on this many and scaled to P (stated in the JSON)
BACKWARD_MAX_GIB = 6.0  # forward + backward cells whose autograd memory would exceed this are not run
REFERENCE_MAX_POP = 64  # the plain-torch step loop is timed up to this population
BIG_CELL_FLOPS = 2 * 64 * 32 * 400 * 400  # cells above this bmm size per step get one repeat
IN_CACHE_CALLS = 500  # bmm calls on two members (W_rec in L2) that time the compute-bound bmm speed

FULL = dict(pops=(1, 16, 64, 256), neurons=(100, 200, 400), batch=32, steps=500, repeats=2)
QUICK = dict(pops=(4,), neurons=(32,), batch=4, steps=60, repeats=1)


def _members(params: LSNNParams, count: int) -> list[LSNNParams]:
    return [LSNNParams(*[t[p : p + 1] for t in params]) for p in range(count)]


def _rate(params, x, last) -> tuple[float, dict]:
    stats = {}
    out = fast_rollout(params, x, n_ref=N_REF, readout_steps=last, stats=stats)
    return out.spike_count.sum().item() / out.spike_count.numel() / out.n_steps, stats


@torch.no_grad()
def forward_cell(pop: int, n: int, batch: int, steps: int, repeats: int) -> dict:
    params = reference_params(pop, n, N_IN, b0=SPARSE_B0)
    x = input_spikes(batch, steps, N_IN)
    last = torch.tensor([steps - 1])
    loop_n = min(pop, LOOP_MEMBERS)
    members = _members(params, loop_n)
    z = (torch.rand(pop, batch, n, generator=torch.Generator().manual_seed(2)) < 0.05).float()
    out = torch.empty(pop, batch, n)
    fns = {
        "batched_auto": lambda: rollout(params, x, n_ref=N_REF, readout_steps=last),
        "batched_dense": lambda: rollout(params, x, n_ref=N_REF, readout_steps=last, recurrent="dense"),
        "loop": lambda: [rollout(m, x, n_ref=N_REF, readout_steps=last) for m in members],
        "bare_bmm": lambda: [torch.bmm(z, params.w_rec, out=out) for _ in range(steps)],
    }
    if pop <= REFERENCE_MAX_POP:
        fns["reference_step_loop"] = lambda: step_rollout(params, x, n_ref=N_REF, readout_steps=last)
    small = min(pop, 2)  # two members' W_rec stay in L2: bmm at its compute-bound speed, no memory traffic
    z_small, w_small, out_small = z[:small].clone(), params.w_rec[:small].clone(), out[:small].clone()
    fns["bmm_in_cache"] = lambda: [torch.bmm(z_small, w_small, out=out_small) for _ in range(IN_CACHE_CALLS)]
    reps = 1 if 2 * pop * batch * n * n > BIG_CELL_FLOPS else repeats
    times = interleaved(fns, reps)
    med = {k: median(v) for k, v in times.items()}
    med["loop"] *= pop / loop_n  # scaled from loop_n members to the population
    work = pop * batch * n * steps
    rate, stats = _rate(params, x, last)
    in_cache = 2 * small * batch * n * n * IN_CACHE_CALLS / med.pop("bmm_in_cache") / 1e9
    dense_gflops = 2 * work * n / med["batched_dense"] / 1e9
    return {
        "P": pop, "B": batch, "N": n, "T": steps, "repeats": reps,
        "seconds": times, "median_seconds": med,
        "loop_timed_members": loop_n,
        "neuron_steps_per_s": {k: work / v for k, v in med.items()},
        "ratio_batched_over_loop": med["loop"] / med["batched_auto"],
        "fraction_of_roofline_dense": med["bare_bmm"] / med["batched_dense"],
        "fraction_of_roofline_auto": med["bare_bmm"] / med["batched_auto"],
        "speedup_over_reference_step_loop": (med["reference_step_loop"] / med["batched_auto"]
                                             if "reference_step_loop" in med else None),
        "bare_bmm_gflops": 2 * work * n / med["bare_bmm"] / 1e9,
        "bmm_in_cache_gflops": in_cache,
        "dense_step_gflops": dense_gflops,
        "fraction_of_in_cache_bmm_dense": dense_gflops / in_cache,
        "firing_rate_per_step": rate,
        "auto_event_steps": stats["event_steps"],
        "fused": stats["fused"],
    }


def _saved_bytes(leaves: LSNNParams, x: torch.Tensor, last: torch.Tensor) -> int:
    """Bytes autograd keeps for backward over one rollout (unique storages)."""
    seen, total = set(), [0]

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total[0] += key[1]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = rollout(leaves, x, n_ref=N_REF, readout_steps=last)
    del out
    return total[0]


def backward_cell(pop: int, n: int, batch: int, steps: int, repeats: int, bytes_per_neuron_step: float) -> dict:
    estimate = bytes_per_neuron_step * pop * batch * n * steps
    cell = {"P": pop, "B": batch, "N": n, "T": steps, "estimated_autograd_bytes": estimate}
    if estimate > BACKWARD_MAX_GIB * 2**30:
        cell["capped"] = (f"not run: autograd would keep ~{estimate / 2**30:.1f} GiB (> {BACKWARD_MAX_GIB:g} GiB cap "
                          f"on this {torch.get_num_threads()}-thread, shared machine)")
        return cell
    params = reference_params(pop, n, N_IN, b0=SPARSE_B0)
    leaves = LSNNParams(*[t.clone().requires_grad_(True) for t in params])
    x = input_spikes(batch, steps, N_IN)
    last = torch.tensor([steps - 1])
    loop_n = min(pop, LOOP_MEMBERS)
    members = _members(leaves, loop_n)

    def fb(p):
        out = rollout(p, x, n_ref=N_REF, readout_steps=last)
        (out.y.pow(2).mean() + 1e-3 * out.spike_count.mean()).backward()

    g = torch.Generator().manual_seed(3)
    z = (torch.rand(pop, batch, n, generator=g) < 0.05).float()
    grad = torch.randn(pop, batch, n, generator=g)
    w = params.w_rec
    wt = w.transpose(1, 2)
    outs = [torch.empty(pop, batch, n), torch.empty(pop, batch, n), torch.empty(pop, n, n)]

    def three_bmm():  # z W, then backward's g W^T and z^T g
        for _ in range(steps):
            torch.bmm(z, w, out=outs[0])
            torch.bmm(grad, wt, out=outs[1])
            torch.bmm(z.transpose(1, 2), grad, out=outs[2])

    fns = {
        "batched": lambda: fb(leaves),
        "loop": lambda: [fb(m) for m in members],
        "bare_bmm_x3": lambda: torch.no_grad()(three_bmm)(),
    }
    reps = 1 if 2 * pop * batch * n * n > BIG_CELL_FLOPS else repeats
    times = interleaved(fns, reps)
    med = {k: median(v) for k, v in times.items()}
    med["loop"] *= pop / loop_n
    work = pop * batch * n * steps
    cell.update({
        "repeats": reps, "seconds": times, "median_seconds": med, "loop_timed_members": loop_n,
        "neuron_steps_per_s": {k: work / v for k, v in med.items()},
        "ratio_batched_over_loop": med["loop"] / med["batched"],
        "fraction_of_roofline": med["bare_bmm_x3"] / med["batched"],
    })
    return cell


def bytes_per_neuron_step() -> float:
    """Autograd's saved bytes per neuron-step, measured on a small rollout (it is linear in P B N T)."""
    pop, batch, n, steps = 2, 4, 50, 40
    params = reference_params(pop, n, N_IN, b0=SPARSE_B0)
    leaves = LSNNParams(*[t.clone().requires_grad_(True) for t in params])
    return _saved_bytes(leaves, input_spikes(batch, steps, N_IN), torch.tensor([steps - 1])) / (pop * batch * n * steps)


@torch.no_grad()
def event_term(pop: int, batch: int, n: int, reps: int, rates=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1)) -> dict:
    """``W_rec z`` alone, one product over the whole population at a time (``W_rec`` of all
    members does not stay in cache between products): dense ``bmm`` against the event-driven
    sum (C kernel; torch index ops), and the C kernel's own dense register tiles."""
    w = reference_params(pop, n, N_IN).w_rec.contiguous()
    rows = []
    from es_l2l.snn.fast import event_recurrent_

    wk = kernel.padded(w) if kernel.load() is not None else None
    out = torch.empty(pop, batch, n)
    out_k = torch.empty(pop, batch, wk.shape[-1]) if wk is not None else None
    for rate in rates:
        z = (torch.rand(pop, batch, n, generator=torch.Generator().manual_seed(4)) < rate).float()
        fns = {"dense_bmm": lambda: [torch.bmm(z, w, out=out) for _ in range(reps)],
               "event_torch": lambda: [event_recurrent_(out.zero_(), z, w) for _ in range(reps)]}
        if wk is not None:
            fns["event_kernel"] = lambda: [kernel.rec_add(out_k.zero_(), z, wk) for _ in range(reps)]
            fns["dense_kernel"] = lambda: [kernel.rec_add(out_k.zero_(), z, wk, dense=True) for _ in range(reps)]
        times = interleaved(fns, 3)
        med = {k: median(v) / reps for k, v in times.items()}
        best = min(v for k, v in med.items() if k.startswith("event"))
        rows.append({"rate": rate, "seconds_per_product": med, "event_speedup_over_dense": med["dense_bmm"] / best})
    return {"P": pop, "B": batch, "N": n, "products_timed": reps, "rates": rows,
            "note": "event_speedup_over_dense = dense_bmm / the faster event-driven sum"}


@torch.no_grad()
def regimes(pop: int, batch: int, n: int, steps: int, repeats: int, b0s=(0.1, 0.06, 0.01, (0.001, 10.0))) -> dict:
    """End to end, auto against dense across firing regimes (does auto pick the faster path?).
    A regime is ``b0`` or ``(b0, factor on W_in)``."""
    x = input_spikes(batch, steps, N_IN)
    last = torch.tensor([steps - 1])
    rows = []
    for b0 in b0s:
        b0, drive = b0 if isinstance(b0, tuple) else (b0, 1.0)
        params = reference_params(pop, n, N_IN, b0=b0)
        params = params._replace(w_in=params.w_in * drive)
        times = interleaved({
            "auto": lambda: rollout(params, x, n_ref=N_REF, readout_steps=last),
            "dense": lambda: rollout(params, x, n_ref=N_REF, readout_steps=last, recurrent="dense"),
        }, repeats)
        med = {k: median(v) for k, v in times.items()}
        rate, stats = _rate(params, x, last)
        rows.append({"b0": b0, "w_in_factor": drive, "firing_rate_per_step": rate, "auto_event_steps": stats["event_steps"],
                     "median_seconds": med, "auto_speedup_over_dense": med["dense"] / med["auto"]})
    return {"P": pop, "B": batch, "N": n, "T": steps, "regimes": rows}


@torch.no_grad()
def fusion(pop: int, batch: int, n: int, steps: int, with_compile: bool) -> dict:
    """Dense path with each neuron-update implementation; torch.compile's compile cost stated."""
    params = reference_params(pop, n, N_IN, b0=SPARSE_B0)
    x = input_spikes(batch, steps, N_IN)
    last = torch.tensor([steps - 1])
    run = lambda f: fast_rollout(params, x, n_ref=N_REF, readout_steps=last, recurrent="dense", fused=f)  # noqa: E731
    res = {"P": pop, "B": batch, "N": n, "T": steps}
    fns = {"inplace": lambda: run("inplace"), "reference_step_loop": lambda: step_rollout(params, x, n_ref=N_REF, readout_steps=last)}
    if kernel.load() is not None:
        fns["kernel"] = lambda: run("kernel")
    else:
        res["kernel"] = {"skipped": kernel.why_not()}
    if with_compile:
        from es_l2l.bench.compiled import _update_pure, compiled_rollout

        try:
            step_fn = torch.compile(_update_pure, dynamic=False, fullgraph=True)
            compiled = lambda: compiled_rollout(params, x, n_ref=N_REF, readout_steps=last, step_fn=step_fn)  # noqa: E731
            first = timed(compiled)
            fns["compile"] = compiled
            res["compile_first_call_seconds"] = first
        except Exception as exc:  # no C++ toolchain for inductor, etc.
            res["compile"] = {"skipped": f"torch.compile failed: {type(exc).__name__}: {str(exc)[:200]}"}
    else:
        res["compile"] = {"skipped": "quick run (a compile takes 10-30 s here)"}
    times = interleaved(fns, 2)
    res["median_seconds"] = {k: median(v) for k, v in times.items()}
    if "compile_first_call_seconds" in res:
        res["compile_cost_seconds"] = res["compile_first_call_seconds"] - res["median_seconds"]["compile"]
    return res


@torch.no_grad()
def precision(pop: int, batch: int, n: int, steps: int, device: str = "cpu") -> dict:
    """bf16 (and on CUDA tf32) for the dense ``W_rec z`` against fp32: speed and error."""
    params = LSNNParams(*[t.to(device) for t in reference_params(pop, n, N_IN, b0=SPARSE_B0)])
    x = input_spikes(batch, steps, N_IN).to(device)
    kw = dict(n_ref=N_REF, recurrent="dense", record_spikes=True, fused="inplace")  # the C kernel is fp32 only
    ref = fast_rollout(params, x, **kw)
    variants = {"bf16": dict(matmul_dtype=torch.bfloat16)}
    if device == "cuda":
        variants["tf32"] = dict()
    out = {"P": pop, "B": batch, "N": n, "T": steps, "device": device}
    for name, extra in variants.items():
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
        try:
            fns = {"fp32": lambda: fast_rollout(params, x, **kw), name: lambda: fast_rollout(params, x, **kw, **extra)}
            times = interleaved(fns, 2)
            got = fast_rollout(params, x, **kw, **extra)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
        out[name] = {
            "median_seconds": {k: median(v) for k, v in times.items()},
            "spike_mismatch_fraction": (got.spikes != ref.spikes).float().mean().item(),
            "first_step_with_a_different_spike": _first_diff(got.spikes, ref.spikes),
            "readout_max_abs_error": (got.y - ref.y).abs().max().item(),
            "readout_rms": ref.y.pow(2).mean().sqrt().item(),
        }
    return out


def _first_diff(a: torch.Tensor, b: torch.Tensor) -> int | None:
    diff = (a != b).flatten(0, 1).any(dim=0).any(dim=-1).nonzero()  # over steps
    return int(diff[0]) if len(diff) else None


@torch.no_grad()
def cuda_section(pop: int, batch: int, n: int, steps: int) -> dict:
    """On CUDA: eager step loop against the CUDA-graph replay and the bare bmm; precision options."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device (torch.cuda.is_available() is False): the CUDA-graph path has not run here"}
    dev = "cuda"
    params = LSNNParams(*[t.to(dev) for t in reference_params(pop, n, N_IN, b0=SPARSE_B0)])
    x = input_spikes(batch, steps, N_IN).to(dev)
    last = torch.tensor([steps - 1])
    z = (torch.rand(pop, batch, n, device=dev) < 0.05).float()
    out = torch.empty(pop, batch, n, device=dev)
    sync = torch.cuda.synchronize

    def s(f):
        return lambda: (f(), sync())

    fns = {
        "reference_step_loop": s(lambda: step_rollout(params, x, n_ref=N_REF, readout_steps=last)),
        "eager_inplace": s(lambda: fast_rollout(params, x, n_ref=N_REF, readout_steps=last, recurrent="dense", fused="inplace")),
        "cuda_graph": s(lambda: fast_rollout(params, x, n_ref=N_REF, readout_steps=last, cuda_graph=True)),
        "bare_bmm": s(lambda: [torch.bmm(z, params.w_rec, out=out) for _ in range(steps)]),
    }
    for f in fns.values():
        f()  # warm-up (CUDA context, cuBLAS handles, graph capture)
    times = interleaved(fns, 3)
    med = {k: median(v) for k, v in times.items()}
    ref = fast_rollout(params, x, n_ref=N_REF, recurrent="dense", fused="inplace", record_spikes=True)
    got = fast_rollout(params, x, n_ref=N_REF, cuda_graph=True, record_spikes=True)
    work = pop * batch * n * steps
    return {
        "device": torch.cuda.get_device_name(0), "P": pop, "B": batch, "N": n, "T": steps,
        "median_seconds": med, "neuron_steps_per_s": {k: work / v for k, v in med.items()},
        "fraction_of_roofline_cuda_graph": med["bare_bmm"] / med["cuda_graph"],
        "cuda_graph_spikes_equal_eager": bool(torch.equal(ref.spikes, got.spikes)),
        "precision": precision(pop, batch, n, steps, device=dev),
    }


def run(quick: bool, pops=None, neurons=None, repeats=None, parts=("forward", "backward", "event", "regimes", "fusion",
                                                                    "precision", "cuda"), log=print) -> dict:
    g = dict(QUICK if quick else FULL)
    pops, neurons = tuple(pops or g["pops"]), tuple(neurons or g["neurons"])
    reps = repeats or g["repeats"]
    batch, steps = g["batch"], g["steps"]
    head = (64 if 64 in pops else pops[-1], 200 if 200 in neurons else neurons[-1])  # the headline shape
    fast_rollout(reference_params(2, 16, N_IN), input_spikes(2, 5, N_IN), n_ref=N_REF)  # builds/loads the kernel
    res = {"shapes": dict(P=list(pops), N=list(neurons), B=batch, T=steps, n_in=N_IN, n_ref=N_REF,
                          b0=SPARSE_B0, input_spike_probability=0.05),
           "kernel": {"available": kernel.load() is not None, "why_not": kernel.why_not()},
           "notes": [f"loop over members timed on min(P, {LOOP_MEMBERS}) members and scaled to P",
                     f"plain-torch step loop (the previous simulator) timed for P <= {REFERENCE_MAX_POP}",
                     f"cells with a bmm over {BIG_CELL_FLOPS:.3g} FLOP per step are timed once",
                     f"forward+backward cells whose autograd memory would exceed {BACKWARD_MAX_GIB:g} GiB are capped"]}
    if "forward" in parts:
        res["forward"] = []
        for pop in pops:
            for n in neurons:
                log(f"  sim forward P={pop} N={n}")
                res["forward"].append(forward_cell(pop, n, batch, steps, reps))
    if "backward" in parts:
        per = bytes_per_neuron_step()
        res["autograd_bytes_per_neuron_step"] = per
        res["backward"] = []
        for pop in pops:
            for n in neurons:
                log(f"  sim forward+backward P={pop} N={n}")
                res["backward"].append(backward_cell(pop, n, batch, steps, reps, per))
    hp, hn = head
    if "event" in parts:
        log("  event-driven W_rec z term")
        res["event_term"] = event_term(hp, batch, hn, reps=10 if quick else 200)
    if "regimes" in parts:
        log("  auto vs dense across firing regimes")
        res["regimes"] = regimes(hp, batch, hn, steps, reps, b0s=(0.06, (0.001, 10.0)) if quick else (0.1, 0.06, 0.01, (0.001, 10.0)))
    if "fusion" in parts:
        log("  neuron-update implementations")
        res["fusion"] = fusion(hp, batch, hn, steps, with_compile=not quick)
    if "precision" in parts:
        log("  bf16 against fp32")
        res["precision_cpu"] = precision(hp, batch, hn, steps)
    if "cuda" in parts:
        res["cuda"] = cuda_section(hp, batch, hn, steps)
    return res


def report(res: dict) -> str:
    out = []
    if "forward" in res:
        rows = [[f"{c['P']}x{c['N']}", fmt(c["neuron_steps_per_s"]["batched_auto"]), fmt(c["neuron_steps_per_s"]["batched_dense"]),
                 fmt(c["neuron_steps_per_s"]["loop"]), f"{c['ratio_batched_over_loop']:.1f}x",
                 f"{c['fraction_of_roofline_dense']:.0%}", f"{c['fraction_of_in_cache_bmm_dense']:.0%}",
                 f"{c['fraction_of_roofline_auto']:.0%}",
                 "-" if c["speedup_over_reference_step_loop"] is None else f"{c['speedup_over_reference_step_loop']:.1f}x",
                 f"{c['firing_rate_per_step']:.2%}"] for c in res["forward"]]
        out.append("forward, no grad, B=32 (neuron-steps/s; roofline = bare bmm of the same shapes, same run)")
        out.append(table(rows, ["P x N", "auto", "dense", "loop", "auto/loop", "dense %roof", "dense %in-cache bmm", "auto %roof",
                                "vs old step", "rate"]))
    if "backward" in res:
        rows = [[f"{c['P']}x{c['N']}", *(["capped"] * 4 if "capped" in c else
                 [fmt(c["neuron_steps_per_s"]["batched"]), fmt(c["neuron_steps_per_s"]["loop"]),
                  f"{c['ratio_batched_over_loop']:.1f}x", f"{c['fraction_of_roofline']:.0%}"]),
                 f"{c['estimated_autograd_bytes'] / 2**30:.2f}"] for c in res["backward"]]
        out.append("forward + backward (neuron-steps/s; roofline = 3 bare bmm per step)")
        out.append(table(rows, ["P x N", "batched", "loop", "ratio", "%roof", "autograd GiB"]))
    if "event_term" in res:
        e = res["event_term"]
        rows = [[f"{r['rate']:.1%}", *[fmt(r["seconds_per_product"].get(k, None) and r["seconds_per_product"][k] * 1e3)
                                        for k in ("dense_bmm", "dense_kernel", "event_kernel", "event_torch")],
                 f"{r['event_speedup_over_dense']:.1f}x"] for r in e["rates"]]
        out.append(f"W_rec z alone, P={e['P']} B={e['B']} N={e['N']} (ms per product)")
        out.append(table(rows, ["rate", "dense bmm", "dense C", "event C", "event torch", "event gain"]))
    if "regimes" in res:
        r = res["regimes"]
        rows = [[f"{x['b0']:g}" + (f" W_in x{x['w_in_factor']:g}" if x["w_in_factor"] != 1 else ""), f"{x['firing_rate_per_step']:.2%}", f"{x['auto_event_steps']}/{r['T']}",
                 f"{x['median_seconds']['auto']:.3f}", f"{x['median_seconds']['dense']:.3f}",
                 f"{x['auto_speedup_over_dense']:.2f}x"] for x in r["regimes"]]
        out.append(f"auto vs dense end to end, P={r['P']} B={r['B']} N={r['N']} T={r['T']} (seconds)")
        out.append(table(rows, ["b0", "rate", "event steps", "auto", "dense", "gain"]))
    if "fusion" in res:
        f = res["fusion"]
        extra = f" (compile cost {f['compile_cost_seconds']:.1f} s)" if "compile_cost_seconds" in f else ""
        out.append(f"dense step, P={f['P']} N={f['N']}: " + ", ".join(f"{k} {v:.3f} s" for k, v in f["median_seconds"].items()) + extra)
    if "precision_cpu" in res:
        b = res["precision_cpu"]["bf16"]
        out.append(f"bf16 W_rec z (CPU): {b['median_seconds']['bf16']:.3f} s vs fp32 {b['median_seconds']['fp32']:.3f} s; "
                   f"spikes differing {b['spike_mismatch_fraction']:.2%} (first at step {b['first_step_with_a_different_spike']}), "
                   f"readout max error {b['readout_max_abs_error']:.3g} (rms {b['readout_rms']:.3g})")
    if "cuda" in res:
        c = res["cuda"]
        out.append(f"CUDA: {c['skipped']}" if "skipped" in c else
                   f"CUDA {c['device']}: " + ", ".join(f"{k} {v:.3f} s" for k, v in c["median_seconds"].items()))
    return "\n".join(out)
