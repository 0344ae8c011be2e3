"""Shared fixtures: one real local Ray for the session, bound to loopback."""

import os
import sys
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


def pytest_sessionfinish(session, exitstatus):
    session.config._es_l2l_exit = int(exitstatus)


def pytest_unconfigure(config):
    """Leave with pytest's own status once it has reported: native teardown at interpreter exit
    (Ray's core, OpenMP threads) can crash after every test has passed and turn the run red."""
    code = getattr(config, "_es_l2l_exit", None)
    if code is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
