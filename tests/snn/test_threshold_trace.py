import torch

from es_l2l.bench.common import reference_params
from es_l2l.snn import input_current, lsnn_step, threshold_trace, zero_state


def test_threshold_trace_is_the_thresholds_the_step_used():
    params = reference_params(1, 12, 8, seed=3)
    params = params._replace(beta=torch.full_like(params.beta, 1.7), rho=torch.full_like(params.rho, 0.99))
    x = (torch.rand(1, 200, 8, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    state = zero_state(1, 1, 12)
    spikes, thresholds = [], []
    for i_in in input_current(x, params.w_in).unbind(2):
        z, state = lsnn_step(i_in, state, params, n_ref=2)
        spikes.append(z[0, 0])
        thresholds.append(params.b0[0] + params.beta[0] * state.b[0, 0])
    spikes = torch.stack(spikes)
    assert spikes.sum() > 0
    assert torch.allclose(threshold_trace(params, spikes), torch.stack(thresholds))
