"""DEEP R keeps the number of active connections and every connection's sign."""

from pathlib import Path

import torch

from es_l2l.config import load_config
from es_l2l.genome import build_genome
from es_l2l.outer import deep_r
from es_l2l.outer.driver import drive
from es_l2l.seeds import generator
from es_l2l.families.teacher.tasks import n_inputs

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_rewiring_keeps_count_and_signs_while_connections_die_and_revive():
    n = 12
    w = torch.randn(n, n, generator=generator(0, 1))
    rw, theta = deep_r.init_rewiring(w, 0.25, generator(0, 2), no_self=True, dale=False, excitatory_fraction=0.8)
    n_active = round(0.25 * (n * n - n))
    assert int(rw.active.sum()) == n_active and not rw.active.diagonal().any()
    sign0 = rw.sign.clone()
    assert torch.equal(sign0, torch.where(w >= 0, 1.0, -1.0))  # signs come from the initial weights
    revived_total = 0
    for step in range(50):
        # A strong l1 pull kills weak connections every step; as many dormant ones must come alive.
        theta, rw, reset = deep_r.rewire(theta, rw, lr=0.05, l1=2.0, temperature=0.01, gen=generator(0, 3, step), upper=10.0)
        revived_total += int(reset.sum())
        assert int(rw.active.sum()) == n_active
        assert not rw.active.diagonal().any()
        assert (theta >= 0).all() and (theta[~rw.active] == 0).all()
        weights = deep_r.weights(theta, rw)
        nz = weights != 0
        assert torch.equal(torch.sign(weights[nz]), sign0[nz])  # every weight keeps its sign
        assert torch.equal(rw.sign, sign0)
    assert revived_total > n_active  # connections really were rewired, many times over


def test_dale_law_gives_every_presynaptic_neuron_one_sign():
    w = torch.randn(40, 40, generator=generator(1, 1))
    rw, theta = deep_r.init_rewiring(w, 0.5, generator(1, 2), no_self=True, dale=True, excitatory_fraction=0.75)
    rows = rw.sign[:, 0]
    assert torch.equal(rw.sign, rows[:, None].expand(40, 40))
    assert 0.5 < float((rows > 0).float().mean()) < 0.95


def test_bptt_with_deep_r_keeps_the_active_count_in_the_genome():
    cfg = load_config(
        CONFIGS / "smoke_bptt.yaml",
        ["run.generations=6", "run.validate_every=2", "bptt.deep_r.enabled=true", "bptt.deep_r.blocks=[w_in, w_rec]",
         "bptt.deep_r.connectivity=0.3", "bptt.deep_r.l1=0.5", "bptt.deep_r.dale=true", "bptt.lr=0.01"],
    )
    genome = build_genome(cfg, n_inputs(cfg.task))
    seen = []
    result = drive(cfg, genome, None, [seen.append])
    sl, n = genome.slices(), cfg.model.n_lif + cfg.model.n_alif
    w0 = result.initial[sl["w_rec"]].view(n, n)
    counts = {s["active_w_rec"] for s in seen[1:]}
    assert counts == {round(0.3 * (n * n - n))}
    for s in seen:
        if "genomes" in s:
            w = s["genomes"]["center"][sl["w_rec"]].view(n, n)
            assert int((w != 0).sum()) <= round(0.3 * (n * n - n))
            row_signs = torch.sign(w0.sum(dim=1, keepdim=True) + 1e-30)  # Dale: one sign per presynaptic row
            assert ((torch.sign(w) == row_signs) | (w == 0)).all()
