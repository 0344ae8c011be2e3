"""Genome layout: exact batched round trip, transforms, bounds, frozen blocks, masks."""

import math

import pytest
import torch

from es_l2l.config import ExperimentConfig, build_config
from es_l2l.genome import build_genome


def small_cfg(**over) -> ExperimentConfig:
    sets = ["model.n_lif=3", "model.n_alif=4"] + [f"{k}={v}" for k, v in over.items()]
    return build_config({}, sets)


def test_round_trip_is_exact_for_a_population():
    genome = build_genome(small_cfg(), n_in=5)
    vectors = torch.randn(6, genome.dim, generator=torch.Generator().manual_seed(0)) * 3
    genes = genome.decode(vectors)
    assert torch.equal(genome.encode(genes), vectors)
    assert genes["w_rec"].shape == (6, 7, 7) and genes["tau_a"].shape == (6, 4)


def test_dim_counts_only_searched_blocks():
    cfg = small_cfg(**{"genome.search": "[w_out, tau_a]"})
    genome = build_genome(cfg, n_in=5)
    assert genome.dim == 7 * 1 + 4
    genes = genome.decode(torch.zeros(2, genome.dim))
    # Frozen blocks keep their initial values for every member.
    assert torch.equal(genes["w_rec"][1], genome.base["w_rec"])


def test_initial_vector_reproduces_the_config_values():
    cfg = small_cfg(**{"model.tau_m": 15.0, "model.tau_a": 700.0, "model.b0": 0.02, "model.beta": 1.8})
    genome = build_genome(cfg, n_in=5)
    p = genome.params(genome.initial_vector().unsqueeze(0))
    torch.testing.assert_close(p.alpha, torch.full((1, 7), math.exp(-1 / 15)))
    torch.testing.assert_close(p.rho[:, 3:], torch.full((1, 4), math.exp(-1 / 700)))
    torch.testing.assert_close(p.b0, torch.full((1, 7), 0.02))
    assert p.beta[0].tolist() == pytest.approx([0, 0, 0, 1.8, 1.8, 1.8, 1.8])  # LIF neurons never adapt
    assert torch.equal(torch.diagonal(p.w_rec[0]), torch.zeros(7))  # no autapses
    assert p.w_in.std().item() == pytest.approx(1 / math.sqrt(5), rel=0.5)


def test_log_transform_and_bounds():
    genome = build_genome(small_cfg(), n_in=5)
    sl = genome.slices()["tau_m"]
    v = genome.initial_vector().unsqueeze(0).repeat(3, 1)
    v[0, sl] = math.log(50.0)
    v[1, sl] = math.log(1e6)  # far above the 200 ms bound
    v[2, sl] = -100.0  # far below the 2 ms bound
    alpha = genome.params(v).alpha
    torch.testing.assert_close(alpha[0], torch.full((7,), math.exp(-1 / 50)))
    torch.testing.assert_close(alpha[1], torch.full((7,), math.exp(-1 / 200)))
    torch.testing.assert_close(alpha[2], torch.full((7,), math.exp(-1 / 2)))
    lo, hi = genome.search_bounds()
    assert lo[sl][0].item() == pytest.approx(math.log(2.0)) and hi[sl][0].item() == pytest.approx(math.log(200.0))


def test_connectivity_masks_from_logits():
    cfg = small_cfg(**{"model.p_rec": 0.3, "genome.search": "[w_rec, mask_rec]"})
    genome = build_genome(cfg, n_in=5)
    v = genome.initial_vector().unsqueeze(0)
    p = genome.params(v)
    active = (p.w_rec[0] != 0).float().mean().item()
    assert 0.05 < active < 0.5  # about 30% of connections exist
    # Flipping all mask logits positive connects everything except the diagonal.
    v2 = v.clone()
    v2[0, genome.slices()["mask_rec"]] = 1.0
    assert (genome.params(v2).w_rec[0] != 0).sum().item() == 7 * 6


def test_same_seed_same_initial_genome_other_seed_differs():
    a = build_genome(small_cfg(), n_in=5).initial_vector()
    b = build_genome(small_cfg(), n_in=5).initial_vector()
    c = build_genome(small_cfg(**{"run.seed": 1}), n_in=5).initial_vector()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_decode_rejects_wrong_width():
    genome = build_genome(small_cfg(), n_in=5)
    with pytest.raises(ValueError, match=r"expected genomes of shape \(P, "):
        genome.decode(torch.zeros(2, genome.dim + 1))


def mirror_cfg(code: str = "cell", mirror: bool = True) -> ExperimentConfig:
    sets = ["task.family=maze", f"genome.mirror={mirror}", "model.n_lif=5", "model.n_alif=6", "model.p_rec=0.7"]
    return build_config({}, sets + [f"task.position_code={code}", "task.neurons_per_channel=2"])


def mirrored(g: torch.Tensor, perms: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """An unbatched block re-indexed by its per-axis mirror maps."""
    g = g.unsqueeze(0)
    for axis, perm in enumerate(perms, start=1):
        g = g.index_select(axis, perm)
    return g[0]


def test_mirror_genome_starts_symmetric_from_the_plain_draws_and_projects():
    genome, plain = build_genome(mirror_cfg()), build_genome(mirror_cfg(mirror=False))
    assert genome.mirror is not None and plain.mirror is None and genome.dim == plain.dim
    perms = genome.block_perms()
    assert perms["tau_m"][0].tolist() == [4, 3, 2, 1, 0, 10, 9, 8, 7, 6, 5]  # reversal within LIF, within ALIF
    for name, value in genome.base.items():
        assert torch.equal(mirrored(value, perms[name]), value), name  # invariant under the mirror
        # Every entry is the plain draw of itself or of its mirror image (no averaging).
        plain_value = plain.base[name]
        assert torch.all((value == plain_value) | (value == mirrored(plain_value, perms[name]))), name
    vectors = torch.randn(3, genome.dim, generator=torch.Generator().manual_seed(0))
    once = genome.symmetrize(genome.decode(vectors))
    twice = genome.symmetrize(once)
    assert all(torch.allclose(once[k], twice[k], atol=1e-7) for k in once)  # a projection
    assert not torch.equal(once["w_rec"], genome.decode(vectors)["w_rec"])
    params, plain_params = genome.params(vectors), plain.params(vectors)
    assert torch.equal(params.b_out[:, 2], params.b_out[:, 3])  # left and right biases are tied
    assert not torch.equal(plain_params.b_out[:, 2], plain_params.b_out[:, 3])


@pytest.mark.parametrize("code", ["cell", "rowcol", "both"])
def test_mirror_network_commutes_with_the_mirror(code):
    """Mirrored input spikes give exactly the mirrored spike trains and readout (float64)."""
    from es_l2l.snn import rollout

    genome, plain = build_genome(mirror_cfg(code)), build_genome(mirror_cfg(code, mirror=False))
    perm_in, perm_out = genome.mirror
    hidden = genome.block_perms()["tau_m"][0]
    vectors = genome.initial_vector() + 0.3 * torch.randn(3, genome.dim, generator=torch.Generator().manual_seed(1))
    x = (torch.rand(4, 200, genome.n_in, generator=torch.Generator().manual_seed(2)) < 0.1).double()
    for g, equivariant in ((genome, True), (plain, False)):
        params = g.params(vectors)
        params = type(params)(*(t.double() for t in params))
        run, image = (rollout(params, xs, n_ref=2, record_spikes=True) for xs in (x, x[..., perm_in]))
        assert run.spikes.sum() > 1000
        assert torch.equal(image.spikes, run.spikes[..., hidden]) == equivariant  # an untied network does not
        if equivariant:
            torch.testing.assert_close(image.y, run.y[..., perm_out], rtol=0, atol=1e-12)
