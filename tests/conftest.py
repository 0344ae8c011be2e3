"""Shared fixtures: one real local Ray for the session, bound to loopback."""

import os
import warnings

import pytest

warnings.filterwarnings("ignore", category=DeprecationWarning)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def _ray_session():
    import ray

    yield ray
    ray.shutdown()


@pytest.fixture
def ray_local(_ray_session):
    """The in-process Ray (2 CPUs); started on first use, again if a cluster test shut it down."""
    ray = _ray_session
    if not ray.is_initialized():
        ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    return ray
