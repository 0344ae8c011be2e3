"""Shared fixtures: one real local Ray for the session, bound to loopback."""

import os
import secrets
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


# One token for every in-process Ray of this test session: Ray caches the token it read in the process
# (`AuthenticationTokenLoader`), so a second Ray started here with a new token would be refused by its
# own GCS ("InvalidAuthToken") after a test shut the first one down.
_SESSION_TOKEN = secrets.token_hex(32)


def start_local_ray(ray):
    """Start the in-process Ray (2 CPUs, loopback, a private one: never a cluster's temp-folder records).

    Ray 2.60 turns token authentication on for a new local Ray and, with no token given, writes one to
    ~/.ray/auth_token (and leaves it): give it this session's token in this process instead, taken out
    of the environment again so that the CLI runs the tests start pick their own."""
    from ray._private.authentication.authentication_token_setup import _enable_token_auth
    from ray._raylet import AuthenticationTokenLoader

    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ["RAY_AUTH_TOKEN"] = _SESSION_TOKEN
    _enable_token_auth()  # RAY_AUTH_MODE=token, and Ray's cached config re-read
    AuthenticationTokenLoader.instance().reset_cache()  # whatever token an earlier Ray here left cached
    try:
        ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def ray_local(_ray_session):
    """The in-process Ray (2 CPUs); started on first use, again if a cluster test shut it down."""
    ray = _ray_session
    if not ray.is_initialized():
        start_local_ray(ray)
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
