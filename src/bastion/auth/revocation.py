"""Revoked tokens and subjects, in memory or in Redis (shared by every gateway at once).

A token is revoked by its `jti` until it would have expired anyway; a subject ("log out
everywhere") by a time: its tokens issued before then are refused.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

from bastion.auth.cache import ExpiringCache


class MemoryRevocations:
    def __init__(self, max_entries: int = 1_000_000) -> None:
        self.jtis = ExpiringCache(max_entries)
        self.subjects = ExpiringCache(max_entries)

    async def revoke_jti(self, jti: str, expires_at: float) -> None:
        self.jtis.put(jti, True, expires_at)

    async def revoke_subject(self, sub: str, at: float | None = None, ttl: float = 31 * 86400) -> None:
        at = time.time() if at is None else at
        self.subjects.put(sub, at, at + ttl)

    async def is_revoked(self, jti: str | None, sub: str | None, iat: float | None) -> bool:
        if jti is not None and self.jtis.get(jti):
            return True
        if sub is not None:
            since = self.subjects.get(sub)
            if since is not None and (iat is None or iat <= since):
                return True
        return False

    async def close(self) -> None:
        return None


class RedisRevocations:
    def __init__(self, url: str, prefix: str = "bastion:revoked", client: Any = None) -> None:
        from bastion.net.redis import connect

        self.client = client if client is not None else connect(url, timeout=0.5)
        self.prefix = prefix

    def _jti(self, jti: str) -> str:
        return f"{self.prefix}:jti:{jti}"

    def _sub(self, sub: str) -> str:
        return f"{self.prefix}:sub:{sub}"

    async def revoke_jti(self, jti: str, expires_at: float) -> None:
        ttl_ms = max(1000, int((expires_at - time.time()) * 1000) + 1000)
        await self.client.set(self._jti(jti), b"1", px=ttl_ms)

    async def revoke_subject(self, sub: str, at: float | None = None, ttl: float = 31 * 86400) -> None:
        at = time.time() if at is None else at
        await self.client.set(self._sub(sub), repr(at).encode(), px=int(ttl * 1000))

    async def is_revoked(self, jti: str | None, sub: str | None, iat: float | None) -> bool:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.exists(self._jti(jti or ""))
            pipe.get(self._sub(sub or ""))
            jti_hit, since = await pipe.execute()
        if jti is not None and jti_hit:
            return True
        if sub is not None and since is not None:
            return iat is None or iat <= float(since)
        return False

    async def close(self) -> None:
        await self.client.aclose()


_memory_revocations = MemoryRevocations()
_redis_revocations: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, RedisRevocations]] = (
    weakref.WeakKeyDictionary()
)


def revocation_store(url: str) -> MemoryRevocations | RedisRevocations:
    """One revocation list per store URL for the whole process (per event loop for Redis)."""
    if url == "memory":
        return _memory_revocations
    stores = _redis_revocations.setdefault(asyncio.get_running_loop(), {})
    if url not in stores:
        stores[url] = RedisRevocations(url)
    return stores[url]
