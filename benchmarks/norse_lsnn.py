"""Norse's LSNN recurrent cell on one network: the peer figure for the simulation benchmark.

Runs inside the separate virtual environment that ``es_l2l.bench.norse_peer`` builds (norse
beside the project's torch would replace or break it). Reads one JSON object of shapes from
argv[1], prints one JSON object of timings. Imports nothing from es_l2l.

Norse's model is not quite ours (current-based synapses with their own time constant, reset to
v_reset, no refractory period): the comparison is per network-step at the same N, B, T and
input, each simulator doing its own model's step.
"""

import json
import sys
import time

import torch

args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from importlib.metadata import version  # noqa: E402
from norse.torch import LSNNParameters, LSNNRecurrentCell  # noqa: E402

n, batch, steps, n_in = args["N"], args["B"], args["T"], args["n_in"]
torch.manual_seed(0)  # norse draws its initial weights from the global generator; this process is norse's alone
cell = LSNNRecurrentCell(n_in, n, p=LSNNParameters(tau_adapt_inv=torch.tensor(1 / 700.0), beta=torch.tensor(1.8)),
                         autapses=False)
g = torch.Generator().manual_seed(1)
x = (torch.rand(steps, batch, n_in, generator=g) < 0.05).float() * 5.0


@torch.no_grad()
def run():
    state, spikes = None, 0.0
    for t in range(steps):
        z, state = cell(x[t], state)
        spikes += float(z.sum()) if t == steps - 1 else 0.0
    return spikes


run()  # warm-up
seconds = []
for _ in range(args["repeats"]):
    t0 = time.perf_counter()
    run()
    seconds.append(time.perf_counter() - t0)
print(json.dumps({"seconds": seconds, "norse": version("norse"),
                  "torch": torch.__version__, "threads": torch.get_num_threads(), "cell": "norse.torch.LSNNRecurrentCell",
                  "N": n, "B": batch, "T": steps}))
