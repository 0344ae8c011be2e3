"""The benchmark suite: ``es-l2l bench [--quick] [--only ...]`` (= ``benchmarks/run.py`` = ``make bench``).

Sections, each writing ``<out>/<section>[-quick].json`` with the date, machine, versions and
shapes, and printing a table:

- ``sim``: LSNN population simulation, forward and forward + backward, P x N grid at B=32,
  T=500: neuron-steps/s against a loop over members, against the bare ``bmm`` of the same shapes
  timed in the same run (fraction of roofline) and against the previous plain-torch step loop;
  the event-driven ``W_rec z`` term against the dense product by firing rate; auto against dense
  end to end across firing regimes; the neuron-update implementations (C kernel, in-place,
  ``torch.compile`` with its compile cost); bf16 against fp32; CUDA (graph capture) where present;
- ``norse``: Norse's LSNN cell on one network (in its own venv) against our batched population;
- ``es``: one ES generation at P=256 on 1 and 2 Ray workers: simulation, driver, communication, bytes;
- ``bptt``: one BPTT step at the same shapes: seconds and autograd memory;
- ``bptt_fused``: the fused C BPTT against autograd and the three-bmm roofline (:mod:`es_l2l.bench.bptt_fused`);
- ``outer_steps``: seconds per gradient step of the shipped gradient configs, fused backward against autograd;
- ``guided``: one guided-ES generation against one plain ES generation plus one BPTT step (the shipped configs of ``benchmarks/guided.yaml``).
- ``lowrank``: one ES generation's forward, full-rank members against low-rank ones (r = 1, 4, 16) and pure
  batch inference, P x N grid (:mod:`es_l2l.bench.lowrank`).
- ``scaling``: ES generation and BPTT step against workers split into their parts, coordination with up to 32 actors
  on a loopback multi-node cluster, and the scaling model fitted to them (:mod:`es_l2l.bench.scaling`, docs/scaling.md).
"""

from __future__ import annotations

import torch

from es_l2l.bench.common import machine, reference_params, write  # noqa: F401  (re-exported)

SECTIONS = ("sim", "norse", "es", "bptt", "bptt_fused", "outer_steps", "guided", "lowrank", "scaling")


def main(quick: bool = False, out: str = "benchmarks/results", console=None, only=None, pops=None, neurons=None,
         repeats=None, threads=None, workers=(1, 2), build_norse: bool = True) -> int:
    say = print if console is None else (lambda s: console.print(s, highlight=False))
    if threads:
        torch.set_num_threads(threads)
    only = tuple(only or SECTIONS)
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown benchmark section(s) {unknown}; choose from {SECTIONS}")
    say(f"es-l2l bench{' --quick' if quick else ''}: {', '.join(only)}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)")
    sim_result = None
    if "sim" in only:
        from es_l2l.bench import sim

        sim_result = sim.run(quick, pops=pops, neurons=neurons, repeats=repeats, log=say)
        path = write(out, "sim", quick, sim_result)
        say(sim.report(sim_result))
        say(f"  written: {path}")
    if "norse" in only:
        from es_l2l.bench import norse_peer, sim

        res = norse_peer.run(quick, log=say, build=build_norse)
        forward = (sim_result or {}).get("forward") or []
        if "skipped" not in res and not any(c["N"] == res["N"] and c["B"] == res["B"] and c["T"] == res["T"] for c in forward):
            p = 8 if quick else 64  # ours on the same machine, same run
            say(f"  ours, batched P={p} N={res['N']}")
            forward = [sim.forward_cell(p, res["N"], res["B"], res["T"], 1 if quick else 2)]
        res["comparison"] = norse_peer.compare(res, forward)
        res["ours_forward_cells"] = forward if sim_result is None else "see sim.json"
        path = write(out, "norse", quick, res)
        if "skipped" in res:
            say(f"norse: skipped ({res['skipped']})")
        else:
            say(f"norse LSNNRecurrentCell, one network N={res['N']} B={res['B']} T={res['T']}: "
                f"{res['network_steps_per_s']:.3g} network-steps/s")
            for r in (res["comparison"] or {}).get("by_population", []):
                say(f"  ours batched P={r['P']}: {r['ours_network_steps_per_s']:.3g} network-steps/s = "
                    f"{r['ratio_over_norse']:.1f}x norse (dense path {r['ratio_dense_over_norse']:.1f}x)")
        say(f"  written: {path}")
    if "es" in only:
        from es_l2l.bench import es_gen

        res = es_gen.run(quick, workers=workers, log=say)
        path = write(out, "es", quick, res)
        say(es_gen.report(res))
        say(f"  written: {path}")
    if "bptt" in only:
        from es_l2l.bench import bptt_step

        res = bptt_step.run(quick, neurons=neurons, log=say)
        path = write(out, "bptt", quick, res)
        say(bptt_step.report(res))
        say(f"  written: {path}")
    if "bptt_fused" in only:
        from es_l2l.bench import bptt_fused

        res = bptt_fused.run(quick, repeats=repeats, log=say)
        path = write(out, "bptt_fused", quick, res)
        say(bptt_fused.report(res))
        say(f"  written: {path}")
    if "outer_steps" in only:
        from es_l2l.bench import outer_steps

        res = outer_steps.run(quick, log=say)
        path = write(out, "outer_steps", quick, res)
        say(outer_steps.report(res))
        say(f"  written: {path}")
    if "guided" in only:
        from es_l2l.bench import guided_gen

        res = guided_gen.run(quick, log=say)
        path = write(out, "guided", quick, res)
        say(guided_gen.report(res))
        say(f"  written: {path}")
    if "lowrank" in only:
        from es_l2l.bench import lowrank

        res = lowrank.run(quick, pops=pops, neurons=neurons, repeats=repeats, log=say)
        path = write(out, "lowrank", quick, res)
        say(lowrank.report(res))
        say(f"  written: {path}")
    if "scaling" in only:
        from es_l2l.bench import scaling

        res = scaling.run(quick, log=say, workers=tuple(workers))
        path = write(out, "scaling", quick, res)
        say(scaling.report(res))
        say(f"  written: {path}")
    return 0
