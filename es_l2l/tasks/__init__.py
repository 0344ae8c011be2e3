"""Task families: teacher (supervised learning-to-learn) and maze (meta-RL navigation)."""


def io_sizes(task) -> tuple[int, int]:
    """(network inputs, readout outputs) of a task family's config: teacher 1 prediction, maze 4 logits + value."""
    if task.family == "maze":
        from es_l2l.tasks.maze import N_ACTIONS, n_inputs

        return n_inputs(task), N_ACTIONS + 1
    from es_l2l.tasks.teacher import n_inputs

    return n_inputs(task), 1
