"""Rate limiting as a library: six algorithms, a memory store and a Redis store.

store = MemoryStore()                      # or RedisStore("redis://127.0.0.1:6379/0")
decision = await store.hit("gcra", "ip:203.0.113.9", parse_rate("10/second burst 20"))
"""

from __future__ import annotations

import asyncio
import weakref

from bastion.ratelimit.algorithms import ALGORITHMS, Decision
from bastion.ratelimit.memory import MemoryStore
from bastion.ratelimit.rate import Rate, parse_rate
from bastion.ratelimit.redis_store import RedisStore, StoreUnavailable

__all__ = [
    "ALGORITHMS",
    "Decision",
    "MemoryStore",
    "Rate",
    "RedisStore",
    "StoreUnavailable",
    "parse_rate",
    "shared_store",
]

_memory: dict[tuple[int, str], MemoryStore] = {}
_redis: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, RedisStore]] = weakref.WeakKeyDictionary()


def shared_store(url: str, *, max_keys: int = 1_000_000, prefix: str = "bastion:rl") -> MemoryStore | RedisStore:
    """One store per URL for the whole process, so that state survives config reloads and every
    route naming the same store shares it. Redis clients are per event loop. The prefix separates
    key spaces in memory as it does in Redis (two policies with different prefixes share nothing)."""
    if url == "memory":
        if (max_keys, prefix) not in _memory:
            _memory[(max_keys, prefix)] = MemoryStore(max_keys=max_keys)
        return _memory[(max_keys, prefix)]
    loop = asyncio.get_running_loop()
    stores = _redis.setdefault(loop, {})
    key = f"{prefix} {url}"
    if key not in stores:
        stores[key] = RedisStore(url, prefix=prefix)
    return stores[key]
