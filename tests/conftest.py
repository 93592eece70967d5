from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import ThreadedUvicorn  # noqa: E402
from upstream_app import app as upstream_app  # noqa: E402

REDIS_URL = os.environ.get("BASTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url():
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError as exc:  # never a silent skip: the Redis path must be tested
        pytest.fail(f"Redis is needed at {REDIS_URL} (scripts/services starts it): {exc}")
    return REDIS_URL


@pytest.fixture(scope="session")
def upstream():
    with ThreadedUvicorn(upstream_app) as server:
        yield server


@pytest.fixture()
def base_config(upstream, tmp_path):
    """A config with one upstream; tests add routes and policies. The upstream's timeouts are
    far above any answer it gives (a test of a timeout sets its own): with 2 s, a loaded machine
    turned answers into 504s."""
    return {
        "upstreams": {"up": {"urls": [upstream.url], "timeouts": {"connect": 10, "read": 30, "total": 60}}},
        "policies": {"audit": {"output": str(tmp_path / "audit.log")}},
        "routes": [],
    }
