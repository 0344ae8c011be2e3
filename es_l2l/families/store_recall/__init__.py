"""Store-recall: a working-memory task family (computing capability; Bellec et al. 2018, Fig. 3).

A sequence of frames shows random bits; the network must output, at a RECALL cue, the bit shown
with the STORE cue up to seconds earlier (:mod:`es_l2l.families.store_recall.task`). Objective:
validation recall error (lower is better). Gradient loss: the recall cross-entropy plus the rate
regulariser (``-fitness``); ES maximises the same fitness. Runs any model kind (LSNN, LIF-only,
LSTM) through the run context (``ctx.simulate``).
"""

from __future__ import annotations

from es_l2l.families.base import TaskFamily
from es_l2l.families.store_recall.config import StoreRecallTaskConfig
from es_l2l.families.store_recall.evaluate import OBJECTIVE, evaluate_params


class StoreRecallFamily(TaskFamily):
    shared_inputs = True
    name = "store_recall"
    config = StoreRecallTaskConfig
    objective = OBJECTIVE
    gradient_loss_name = "recall cross-entropy"

    def io_sizes(self, task) -> tuple[int, int]:
        return task.n_inputs, task.n_outputs

    def evaluate(self, task, ctx, params, key, batch):
        return evaluate_params(task, ctx, params, key, batch)

    def validation_metrics(self, ev) -> dict[str, float]:
        return {
            "val_recall_error": float(ev.recall_error[0]),
            "val_cross_entropy": float(ev.cross_entropy[0]),
            "val_rate_hz": float(ev.rate_hz[0]),
        }

    def report(self, task, ctx, genome, initial, trained):
        from es_l2l.families.store_recall.report import held_out_report

        return held_out_report(task, ctx, genome, initial, trained)


FAMILY = StoreRecallFamily()
