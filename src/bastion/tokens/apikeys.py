"""API keys from the identity store, for the gateway's `api_key` scheme (`database:`).

A lookup is one indexed query by hash, cached for `cache_seconds` (a revocation takes effect
within that time). Last-used times are recorded in memory and written in one batch every
`flush_seconds`, never as a database write per request.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bastion.auth.apikeys import ApiKeyRecord
from bastion.auth.cache import ExpiringCache

log = logging.getLogger("bastion.tokens")


class DatabaseApiKeys:
    def __init__(self, url: str, cache_seconds: float = 5.0, flush_seconds: float = 10.0) -> None:
        from bastion.store.db import open_store

        _, self.sessions = open_store(url)
        self.cache_seconds = cache_seconds
        self.flush_seconds = flush_seconds
        self.cache = ExpiringCache(100_000)
        self.used: dict[str, float] = {}
        self._last_flush = time.monotonic()
        self._flushing: asyncio.Task[None] | None = None

    def _find(self, key_hash: str) -> ApiKeyRecord | None:
        from sqlalchemy import select

        from bastion.store.models import ApiKey

        with self.sessions() as s:
            row = s.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()
        if row is None:
            return None
        return ApiKeyRecord(
            row.id,
            row.key_hash,
            row.owner,
            frozenset(row.scopes.split()),
            row.tier,
            row.expires_at,
            "revoked" if row.revoked_at is not None else "active",
        )

    async def find(self, key_hash: str) -> ApiKeyRecord | None:
        hit = self.cache.get(key_hash)
        if hit is None:
            record = await asyncio.to_thread(self._find, key_hash)
            hit = (record,)
            self.cache.put(key_hash, hit, time.time() + self.cache_seconds)
        record = hit[0]
        if record is not None and record.status == "active":
            self.used[record.id] = time.time()
            if time.monotonic() - self._last_flush > self.flush_seconds and self._flushing is None:
                self._flushing = asyncio.create_task(self.flush())
        return record

    def _touch(self, used: dict[str, float]) -> None:
        from sqlalchemy import update

        from bastion.store.models import ApiKey

        with self.sessions.begin() as s:
            for key_id, at in used.items():
                s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))

    async def flush(self) -> None:
        used, self.used = self.used, {}
        self._last_flush = time.monotonic()
        try:
            if used:
                await asyncio.to_thread(self._touch, used)
        except Exception as exc:  # the database is down: keep serving, try again next time
            log.warning("could not record API key use (%s)", type(exc).__name__)
            for k, v in used.items():
                self.used.setdefault(k, v)
        finally:
            self._flushing = None
