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
        # Ray 2.60 turns token authentication on for a new local Ray and, with no token given, writes one
        # to ~/.ray/auth_token (and leaves it): give it a random token in this process instead, taken
        # out of the environment again so that the CLI runs the tests start pick their own.
        import secrets

        from ray._private.authentication.authentication_token_setup import _enable_token_auth

        saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        _enable_token_auth()  # RAY_AUTH_MODE=token, and Ray's cached config re-read
        try:
            # "local": a private Ray, never a cluster Ray's temp folder records
            ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
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
