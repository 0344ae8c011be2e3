"""Errors the shell turns into one line on stderr (no traceback): what went wrong and what to do."""


class ClusterError(RuntimeError):
    """Ray could not be started or reached, or a worker was lost for good."""


class CapacityError(ClusterError):
    """The attached cluster cannot give what the run asks for (more CPUs or GPUs than it has): bad
    input, said before any run exists, exit 2 like a config error."""


class PreflightError(ClusterError):
    """The run cannot work as configured; said in one sentence before anything starts."""
