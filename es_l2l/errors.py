"""Errors the shell turns into one line on stderr (no traceback): what went wrong and what to do."""


class ClusterError(RuntimeError):
    """Ray could not be started or reached, or a worker was lost for good."""
