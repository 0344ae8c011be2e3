"""A population of LSTMs (the non-spiking baseline), pure and vectorised over members.

``P`` independent one-layer LSTMs with ``n_in`` inputs, ``H`` units and a linear readout of the
hidden state to ``n_out``. Parameters are named tensors with a leading population axis; gates are
ordered (input, forget, cell, output) as in :class:`torch.nn.LSTM`, whose two biases
``b_ih + b_hh`` are one bias ``b`` here. Inputs multiply from the left (``x @ w_ih``), so
``w_ih[p] = lstm.weight_ih_l0.T``.

One step (torch's LSTM for one member, :func:`lstm_rollout`; a batched cell for a population)::

    i, f, g, o = split(x_t @ w_ih + h @ w_hh + b)
    c <- sigmoid(f) * c + sigmoid(i) * tanh(g)
    h <- sigmoid(o) * tanh(c)
    y_t = h @ w_out + b_out

All states start at zero. Sizing against an LSNN: :func:`lstm_param_count` and
:func:`lstm_hidden_for` give the largest ``H`` within a parameter budget (e.g.
:func:`lsnn_weight_count`).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from pydantic import Field

from es_l2l.models.base import Block, ModelKind
from es_l2l.schema import Strict


class LSTMConfig(Strict):
    """A one-layer LSTM with a linear readout (``model.kind: lstm``), the non-spiking control."""

    kind: Literal["lstm"] = Field("lstm", description="model kind")
    lstm_units: int = Field(16, ge=1, le=4096, description="hidden units")
    lstm_forget_bias: float = Field(1.0, description="added to the forget gates' initial bias")


class LSTMParams(NamedTuple):
    w_ih: torch.Tensor  # (P, n_in, 4H)
    w_hh: torch.Tensor  # (P, H, 4H)
    b: torch.Tensor  # (P, 4H)
    w_out: torch.Tensor  # (P, H, n_out)
    b_out: torch.Tensor  # (P, n_out)

    @property
    def pop_size(self) -> int:
        return self.w_hh.shape[0]

    @property
    def hidden(self) -> int:
        return self.w_hh.shape[1]


def init_lstm(pop: int, n_in: int, hidden: int, n_out: int, gen: torch.Generator, *,
              forget_bias: float = 0.0, dtype=torch.float32) -> LSTMParams:
    """torch.nn.LSTM's initialisation, drawn from ``gen``: every LSTM weight and bias uniform in
    ``[-1/sqrt(H), 1/sqrt(H)]`` (here one bias, not the sum of two), ``forget_bias`` added to the
    forget gate's bias; readout ``N(0, 1) / sqrt(H)``, readout bias 0."""
    k = 1.0 / math.sqrt(hidden)
    u = lambda *shape: (torch.rand(*shape, generator=gen, dtype=dtype) * 2 - 1) * k  # noqa: E731
    w_ih, w_hh, b = u(pop, n_in, 4 * hidden), u(pop, hidden, 4 * hidden), u(pop, 4 * hidden)
    b[:, hidden : 2 * hidden] += forget_bias
    w_out = torch.randn(pop, hidden, n_out, generator=gen, dtype=dtype) / math.sqrt(hidden)
    return LSTMParams(w_ih=w_ih, w_hh=w_hh, b=b, w_out=w_out, b_out=torch.zeros(pop, n_out, dtype=dtype))


def lstm_param_count(n_in: int, hidden: int, n_out: int) -> int:
    """Parameters per member: ``4H (n_in + H + 1) + H n_out + n_out``."""
    return 4 * hidden * (n_in + hidden + 1) + hidden * n_out + n_out


def lstm_hidden_for(n_params: int, n_in: int, n_out: int) -> int:
    """The largest ``H >= 1`` whose :func:`lstm_param_count` is at most ``n_params`` (1 if none)."""
    # 4H^2 + H (4 n_in + 4 + n_out) + n_out <= n_params
    a, b, c = 4.0, 4.0 * n_in + 4.0 + n_out, float(n_out - n_params)
    h = max(1, int((-b + math.sqrt(max(0.0, b * b - 4 * a * c))) / (2 * a)))
    while h > 1 and lstm_param_count(n_in, h, n_out) > n_params:
        h -= 1
    while lstm_param_count(n_in, h + 1, n_out) <= n_params:
        h += 1
    return h


def lsnn_weight_count(n_in: int, n_rec: int, n_out: int) -> int:
    """Trainable weights of a dense LSNN: ``W_in``, ``W_rec`` without its diagonal, ``W_out``, ``b_out``
    (the per-neuron constants tau, b0, beta are left out)."""
    return n_in * n_rec + n_rec * (n_rec - 1) + n_rec * n_out + n_out


def lstm_rollout(params: LSTMParams, x: torch.Tensor, readout_steps: torch.Tensor | None = None) -> torch.Tensor:
    """Run all ``P`` LSTMs from the zero state; differentiable by autograd.

    ``x``: (B, T, n_in) shared by the population, or (P, B, T, n_in). ``readout_steps``: (K,)
    step indices (all ``T`` when None). Returns the readout ``y`` (P, B, K, n_out).

    One member (``P = 1``, every BPTT step) runs on torch's own LSTM (:func:`torch_lstm_hidden`: one
    call over the sequence, forward and backward in C++/oneDNN). A population (``P > 1``, ES) runs
    the cell stepped over time with one ``bmm`` per step for all members (:func:`cell_lstm_hidden`):
    torch's LSTM takes one set of weights per call, so a population would need a loop of ``P``
    calls. On one CPU thread at store-recall's size (5 units) such a loop ran 4-14% faster than the
    batched cell at P = 16-64 (40% at P = 4; docs/benchmarks.md), within this machine's noise at
    ES's sizes; the cell stays: one call per step for the whole population, and the batched form a
    GPU wants. Both paths give the same numbers to float32 rounding (tests/models/test_lstm.py).
    """
    steps = x.shape[-2]
    x = x.to(params.w_ih.dtype)
    if readout_steps is None:
        keep = torch.arange(steps, device=x.device)
    else:  # ascending and without repeats, as the cell path keeps them
        mask = torch.zeros(steps, dtype=torch.bool)
        mask[readout_steps.cpu()] = True
        keep = mask.nonzero().squeeze(1).to(x.device)
    if params.pop_size == 1:
        hk = torch_lstm_hidden(params, x)[:, :, keep]  # (1, B, K, H)
    else:
        hk = cell_lstm_hidden(params, x, keep)  # (P, B, K, H)
    return torch.matmul(hk, params.w_out.unsqueeze(1)) + params.b_out[:, None, None, :]


def torch_lstm_hidden(params: LSTMParams, x: torch.Tensor) -> torch.Tensor:
    """The hidden state (1, B, T, H) of one member (``P = 1``) at every step, by torch's LSTM.

    torch's layout against the genome's: ``weight_ih = w_ih[0].T`` and ``weight_hh = w_hh[0].T``
    (gates in the same order, input, forget, cell, output), ``bias_ih = b[0]`` and ``bias_hh = 0``
    (torch adds two bias vectors; the genome has their sum). Its backward runs with subnormal
    floats flushed to zero (:class:`_TorchLSTM`)."""
    batch, steps, n_in = x.shape[-3], x.shape[-2], x.shape[-1]
    xt = x.reshape(batch, steps, n_in).transpose(0, 1)  # (T, B, n_in)
    w_ih, w_hh, b = params.w_ih[0].T, params.w_hh[0].T, params.b[0]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (xt, w_ih, w_hh, b)):
        out = _TorchLSTM.apply(xt, w_ih, w_hh, b)
    else:
        out = _torch_lstm(xt, w_ih, w_hh, b, train=False)
    return out.transpose(0, 1).unsqueeze(0)  # (1, B, T, H)


def _torch_lstm(xt: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b: torch.Tensor, train: bool) -> torch.Tensor:
    """torch's LSTM on time-major ``xt`` (T, B, n_in) from the zero state: the output (T, B, H)."""
    h0 = xt.new_zeros(1, xt.shape[1], w_hh.shape[1])
    # torch._VF.lstm is what torch.nn.LSTM.forward calls: (input, (h0, c0), weights, has_biases,
    # num_layers, dropout, train, bidirectional, batch_first) -> (output, h_n, c_n). Time-major
    # (batch_first=False): torch's CPU kernels run time-major; batch-first adds copies.
    return torch._VF.lstm(xt, (h0, h0), [w_ih, w_hh, b, torch.zeros_like(b)], True, 1, 0.0, train, False, False)[0]


class _TorchLSTM(torch.autograd.Function):
    """:func:`_torch_lstm` whose backward runs with subnormal floats flushed to zero.

    Over long sequences (sMNIST's 800 steps) the gradients carried back through the forget gates
    decay into the subnormal range, where x86 arithmetic is 10-100x slower: the LSTM backward of
    the sequential-MNIST LSTM config took 3.0-3.2 CPU seconds a step with subnormals and 0.22-0.24 s flushed
    (docs/benchmarks.md). Flushing changes gradients by less than 1e-38 per entry. The setting
    is the calling thread's (CPU backward runs there) and is restored after the backward.
    """

    @staticmethod
    def forward(ctx, xt, w_ih, w_hh, b):
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_(t.requires_grad) for t in (xt, w_ih, w_hh, b)]
            out = _torch_lstm(*inputs, train=True)
        ctx.graph = (out, inputs)
        return out.detach()

    @staticmethod
    def backward(ctx, grad_out):
        out, inputs = ctx.graph
        wanted = [t for t in inputs if t.requires_grad]
        flushed = _flushes_denormals()
        torch.set_flush_denormal(True)
        try:
            grads = iter(torch.autograd.grad(out, wanted, grad_out))
        finally:
            torch.set_flush_denormal(flushed)
        del ctx.graph
        return tuple(next(grads) if t.requires_grad else None for t in inputs)


def _flushes_denormals() -> bool:
    """Whether this thread flushes subnormal floats to zero now (torch has a setter, no getter)."""
    return float(torch.tensor([1e-40]) * 1.0) == 0.0


def cell_lstm_hidden(params: LSTMParams, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The hidden state (P, B, K, H) of all ``P`` members at the steps ``keep`` (K,) (ascending), by
    the LSTM cell stepped over time, one ``bmm`` per step for the whole population."""
    pop, n_in, four_h = params.w_ih.shape
    hidden = four_h // 4
    batch, steps = x.shape[-3], x.shape[-2]
    if x.dim() == 3:  # shared inputs: one matmul for the whole population
        pre = torch.matmul(x.reshape(1, batch * steps, n_in), params.w_ih)  # (P, B*T, 4H)
    else:
        pre = torch.bmm(x.reshape(pop, batch * steps, n_in), params.w_ih)
    pre = (pre + params.b[:, None, :]).view(pop, batch, steps, four_h)
    kept_at = set(keep.tolist())
    h = pre.new_zeros(pop, batch, hidden)
    c = pre.new_zeros(pop, batch, hidden)
    kept = []
    for t, pre_t in enumerate(pre.unbind(2)):  # (P, B, 4H)
        gates = torch.baddbmm(pre_t, h, params.w_hh)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        if t in kept_at:
            kept.append(h)
    return torch.stack(kept, dim=2)  # (P, B, K, H), steps in ascending order


__all__ = ["LSTMConfig", "LSTMModel", "LSTMParams", "LSTMStepper", "cell_lstm_hidden", "init_lstm", "lsnn_weight_count", "lstm_hidden_for",
           "lstm_param_count", "lstm_rollout", "torch_lstm_hidden"]


class LSTMStepper:
    """``P`` LSTMs on ``B`` tasks advanced a few steps at a time (a closed loop: the agent's next
    inputs depend on its outputs); the same cell as :func:`cell_lstm_hidden`, from the zero state.
    No spikes: the spike count stays zero (P, B, H)."""

    def __init__(self, params: LSTMParams, batch: int):
        self.params = params
        pop, hidden = params.pop_size, params.hidden
        self.h = params.w_hh.new_zeros(pop, batch, hidden)
        self.c = params.w_hh.new_zeros(pop, batch, hidden)
        self.spike_count = self.h.new_zeros(pop, batch, hidden)

    def advance(self, x: torch.Tensor, record_spikes: bool = False) -> torch.Tensor | None:
        """Run the steps of ``x`` ((B, c, n_in) or (P, B, c, n_in)); zeros (P, B, c, H) when ``record_spikes``."""
        p = self.params
        pre = torch.matmul(x.to(p.w_ih.dtype), p.w_ih.unsqueeze(1)) + p.b[:, None, None, :]  # (P, B, c, 4H)
        for pre_t in pre.unbind(2):
            gates = pre_t + torch.matmul(self.h, p.w_hh)
            i, f, g, o = gates.chunk(4, dim=-1)
            self.c = torch.sigmoid(f) * self.c + torch.sigmoid(i) * torch.tanh(g)
            self.h = torch.sigmoid(o) * torch.tanh(self.c)
        if not record_spikes:
            return None
        return self.h.new_zeros(*self.h.shape[:2], x.shape[-2], self.h.shape[-1])

    def readout(self) -> torch.Tensor:
        """(P, B, n_out): ``h W_out + b_out`` after the last step."""
        return torch.matmul(self.h, self.params.w_out) + self.params.b_out[:, None, :]


class LSTMModel(ModelKind):
    """The LSTM model kind (``model.kind: lstm``, ``model.lstm_units`` units).

    Genome blocks: ``w_in`` (n_in + 1, 4H), the input weights with the gate bias as the weights of
    a constant input (its last row), so the bias is searched and trained with ``w_in``;
    ``w_rec`` (H, 4H); ``w_out`` (H, n_out); ``b_out`` (n_out,). All weights are clipped to
    ``genome.weight_bound``. No spikes: a rollout's spike count is zero (rate 0 Hz) and the rate
    regulariser does not apply.
    """

    name = "lstm"
    config = LSTMConfig
    spiking = False

    def blocks(self, model, genome, n_in, n_out):
        h, wb = model.lstm_units, genome.weight_bound
        return (
            Block("w_in", (n_in + 1, 4 * h), "identity", -wb, wb),
            Block("w_rec", (h, 4 * h), "identity", -wb, wb),
            Block("w_out", (h, n_out), "identity", -wb, wb),
            Block("b_out", (n_out,), "identity", -wb, wb),
        )

    def initial(self, model, n_in, n_out, gen):
        p = init_lstm(1, n_in, model.lstm_units, n_out, gen, forget_bias=model.lstm_forget_bias)
        return {"w_in": torch.cat([p.w_ih[0], p.b[0].unsqueeze(0)]), "w_rec": p.w_hh[0], "w_out": p.w_out[0], "b_out": p.b_out[0]}

    def to_params(self, genome, genes, value) -> LSTMParams:
        w_in = value("w_in")
        return LSTMParams(w_ih=w_in[:, :-1], w_hh=value("w_rec"), b=w_in[:, -1], w_out=value("w_out"), b_out=value("b_out"))

    def simulate(self, ctx, params, x, readout_steps=None, record_spikes=False):
        from es_l2l.snn import Rollout

        y = lstm_rollout(params, x.to(params.w_ih.device), readout_steps)
        pop, batch, steps = y.shape[0], x.shape[-3], x.shape[-2]
        zeros = y.new_zeros(pop, batch, params.hidden)
        spikes = y.new_zeros(pop, batch, steps, params.hidden) if record_spikes else None
        return Rollout(y=y, spike_count=zeros.detach(), spikes=spikes, n_steps=steps)

    def stepper(self, ctx, params, batch):
        return LSTMStepper(params, batch)

    def units(self, model) -> int:
        return model.lstm_units

    def size(self, model) -> str:
        return f"LSTM of {model.lstm_units} units"

    def check(self, model, genome) -> None:
        if genome.mirror:
            raise ValueError("genome.mirror ties LSNN neurons in mirror pairs; set genome.mirror=false for model.kind=lstm")

    def incompatible(self, *, deep_r, trained, es_blocks):
        if deep_r:
            return "bptt.deep_r rewires LSNN synapses; set bptt.deep_r.enabled=false for model.kind=lstm"
        mine = {"w_in", "w_rec", "w_out", "b_out"}
        if trained is not None and not mine & set(trained):
            return "bptt.train lists no block of an LSTM; list some of w_in, w_rec, w_out, b_out"
        if es_blocks is not None and set(es_blocks) - mine:
            other = ", ".join(b for b in es_blocks if b not in mine)
            return (f"hybrid.es_blocks lists {other}, which an LSTM does not have; set hybrid.es_blocks to "
                    "some of w_in, w_rec, w_out, b_out and bptt.train to the others for model.kind=lstm")
        return None


MODEL = LSTMModel()
