"""Learning from a teacher (supervised learning-to-learn; Bellec et al. 2018, Fig. 2).

Each task is a random 2-layer sigmoid network G; within an episode the LSNN sees inputs and the
previous trial's target and predicts the current target. Objective: validation MSE over the
second half of each episode, lower is better. Gradient loss: the MSE (``-fitness``). With
``task.frequent_targets`` K > 0, K fixed networks recur in training and the report compares them
with fresh ones (:mod:`es_l2l.families.teacher.groups`).
"""

from __future__ import annotations

from es_l2l.families.base import TaskFamily
from es_l2l.families.teacher.config import TeacherConfig
from es_l2l.families.teacher.evaluate import OBJECTIVE, episode_metrics, evaluate_params, task_batch


class TeacherFamily(TaskFamily):
    shared_inputs = True
    name = "teacher"
    config = TeacherConfig
    objective = OBJECTIVE
    gradient_loss_name = "MSE"
    shards_tasks = True

    def io_sizes(self, task) -> tuple[int, int]:
        from es_l2l.families.teacher.tasks import n_inputs

        return n_inputs(task), 1

    def episode_steps(self, task) -> int:
        return task.n_trials * task.trial_ms

    def evaluate(self, task, ctx, params, key, batch):
        return evaluate_params(task, ctx, params, task_batch(task, key, batch))

    def gradient_loss_shard(self, task, ctx, params, key, batch, start, stop):
        # the whole batch is drawn (cheap next to the rollout), then this worker's episodes kept
        tasks = task_batch(task, key, batch)
        part = tasks._replace(**{k: getattr(tasks, k)[start:stop] for k in ("x", "y", "spikes", "which")})
        ev = evaluate_params(task, ctx, params, part)
        return -ev.fitness.sum(), ev, {}

    def validation_metrics(self, ev) -> dict[str, float]:
        return episode_metrics(ev.mse_per_trial[0], "val")

    def report(self, task, ctx, genome, initial, trained):
        from es_l2l.families.teacher.report import held_out

        return held_out(task, ctx, genome, initial, trained)

    def status_extras(self, task, generation: int) -> dict[str, float]:
        if not task.shape_curriculum:
            return {}
        return {"shape_curriculum": float(generation <= task.shape_curriculum)}  # offset-free training tasks

    def stored_task(self, task: dict) -> dict:
        # ``encoding: rate`` (before 2026-12-02) is ``analog``: the spike probability fed as a current
        return {**task, "encoding": "analog"} if task.get("encoding") == "rate" else task

    def check(self, task, ctx) -> None:
        k, n = task.frequent_targets, ctx.validation_tasks
        if k and n % k:  # the held-out frequent group has each of the K networks equally often
            raise ValueError(f"run.validation_tasks ({n}) must be a multiple of task.frequent_targets ({k}) so that "
                             "the held-out frequent group has each fixed network equally often")

    def summarise_comparison(self, plan, children):
        from es_l2l.families.teacher.compare import summarise

        return summarise(plan, children)


FAMILY = TeacherFamily()
