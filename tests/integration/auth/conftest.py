import os

import pytest
import redis

REDIS_URL = os.environ.get("BASTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url():
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError as exc:  # never a silent skip
        pytest.fail(f"Redis is needed at {REDIS_URL}: {exc}")
    return REDIS_URL
