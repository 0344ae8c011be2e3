"""The suite's in-process Ray (tests/conftest.py) starts again after a test shut it down."""

import os

from tests.conftest import start_local_ray


def test_the_in_process_ray_starts_again_after_a_shutdown_with_another_token_cached(ray_local):
    ray = ray_local
    assert ray.get(ray.put(7)) == 7
    ray.shutdown()
    # What a test attached to another cluster leaves behind: another token read and cached in this process.
    from ray._raylet import AuthenticationTokenLoader

    saved = os.environ.get("RAY_AUTH_TOKEN")
    os.environ["RAY_AUTH_TOKEN"] = "f" * 64
    try:
        loader = AuthenticationTokenLoader.instance()
        loader.reset_cache()
        assert loader.has_token(ignore_auth_mode=True)
    finally:
        if saved is None:
            os.environ.pop("RAY_AUTH_TOKEN", None)
        else:
            os.environ["RAY_AUTH_TOKEN"] = saved
    start_local_ray(ray)
    assert ray.get(ray.remote(lambda x: x + 1).remote(41)) == 42
