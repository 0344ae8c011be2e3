"""Store-recall: a working-memory task family (computing capability; Bellec et al. 2018, Fig. 3).

A sequence of frames shows random bits; the network must output, at a RECALL cue, the bit shown
with the STORE cue up to seconds earlier (:mod:`es_l2l.families.store_recall.task`). Objective:
validation recall error (lower is better). Gradient loss: the recall cross-entropy plus the rate
regulariser (``-fitness``); ES maximises the same fitness. Runs any model kind (LSNN, LIF-only,
LSTM) through the run context (``ctx.simulate``).
"""

from __future__ import annotations

from es_l2l.families.classification import ClassificationFamily
from es_l2l.families.store_recall.config import StoreRecallTaskConfig
from es_l2l.families.store_recall.evaluate import OBJECTIVE, evaluate_params


class StoreRecallFamily(ClassificationFamily):
    name = "store_recall"
    config = StoreRecallTaskConfig
    objective = OBJECTIVE
    gradient_loss_name = "recall cross-entropy"
    metric = "recall_error"
    report_module = "es_l2l.families.store_recall.report"
    evaluate_params = staticmethod(evaluate_params)


FAMILY = StoreRecallFamily()
