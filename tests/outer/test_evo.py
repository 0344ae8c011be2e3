"""The one seam to evotorch's private attributes, pinned for the installed version."""

import pytest
import torch

from es_l2l.config import build_config
from es_l2l.outer.evo import MetaProblem, center_of, make_searcher, sampling_state, stdev_of


class _Zero:
    def __call__(self, vectors, seed_keys):
        raise AssertionError("not evaluated here")

    def close(self):
        pass


@pytest.mark.parametrize("algorithm", ["pgpe", "snes", "cem"])
def test_gaussian_searchers_expose_what_seed_traffic_reads(algorithm):
    import evotorch

    cfg = build_config({}, [f"es.algorithm={algorithm}", "es.popsize=8"])
    problem = MetaProblem(5, _Zero(), seed=1)
    searcher = make_searcher(cfg.es, problem, torch.zeros(5))
    popsize, dist = sampling_state(searcher)
    assert popsize == 8, f"evotorch {evotorch.__version__} renamed _popsize; update es_l2l.outer.evo.sampling_state"
    assert dist is not None and torch.equal(dist.parameters["mu"], torch.zeros(5)), (
        f"evotorch {evotorch.__version__} renamed _distribution; update es_l2l.outer.evo.sampling_state")
    assert torch.equal(center_of(searcher), torch.zeros(5)) and stdev_of(searcher) == pytest.approx(cfg.es.stdev_init)


def test_cmaes_has_no_sampling_state_and_uses_vector_traffic():
    cfg = build_config({}, ["es.algorithm=cmaes", "es.popsize=8"])
    searcher = make_searcher(cfg.es, MetaProblem(5, _Zero(), seed=1), torch.zeros(5))
    assert sampling_state(searcher)[1] is None and not cfg.es.seed_traffic
