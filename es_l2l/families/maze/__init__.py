"""Learning from rewards: meta-RL navigation in grid mazes (Bellec et al. 2018, Fig. 3).

The network (any model kind with a closed-loop stepper: the LSNN, the LSTM) plays closed-loop
episodes (its actions change its next inputs); objective: validation
reward per episode, higher is better; gradient loss: A2C through the spikes (``task.a2c``). The
family also brings a left-right mirror weight tying (``genome.mirror``) and a training curriculum
(``task.search_curriculum``) that shows up in the status dict.
"""

from __future__ import annotations

from es_l2l.families.base import TaskFamily
from es_l2l.families.maze.config import MazeConfig
from es_l2l.families.maze.evaluate import OBJECTIVE, in_search_curriculum, maze_eval, play_params


class MazeFamily(TaskFamily):
    name = "maze"
    config = MazeConfig
    objective = OBJECTIVE
    gradient_loss_name = "A2C"
    moved_keys = {"a2c": "task.a2c"}

    def io_sizes(self, task) -> tuple[int, int]:
        from es_l2l.families.maze.env import N_ACTIONS, n_inputs

        return n_inputs(task), N_ACTIONS + 1  # four policy logits, then the value

    def episode_steps(self, task) -> int:
        return task.n_steps * task.ms_per_step

    def evaluate(self, task, ctx, params, key, batch):
        return maze_eval(ctx, play_params(task, ctx, params, key, batch))

    def validation_metrics(self, ev) -> dict[str, float]:
        return {
            "val_reward": float(ev.reward[0]),
            "val_found": float(ev.found[0]),
            "val_first_find": float(ev.first_find[0]),
            "val_later_trip": float(ev.later_trip[0]),
            "val_rate_hz": float(ev.rate_hz[0]),
        }

    def gradient_loss(self, task, ctx, params, key, batch):
        from es_l2l.families.maze.a2c import a2c_loss

        return a2c_loss(task, ctx, params, key, batch)

    def report(self, task, ctx, genome, initial, trained):
        from es_l2l.families.maze.report import held_out

        return held_out(task, ctx, genome, initial, trained)

    def summarise_comparison(self, plan, children):
        from es_l2l.families.maze.compare import summarise

        return summarise(plan, children)

    def status_extras(self, task, generation: int) -> dict[str, float]:
        if not task.search_curriculum:
            return {}
        return {"search_curriculum": float(in_search_curriculum(task, generation))}  # trained on relocating goals

    def mirror_permutations(self, task):
        from es_l2l.families.maze.env import mirror_permutations

        return mirror_permutations(task)


FAMILY = MazeFamily()
