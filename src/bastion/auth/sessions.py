"""Server-side sessions for browser logins: opaque random ids in a cookie, the data (tokens)
encrypted at rest with Fernet, kept in memory (one process) or Redis (every gateway)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bastion.auth.cache import ExpiringCache


_MEMORY: dict[str, ExpiringCache] = {}


class SessionStore:
    def __init__(self, url: str, secret: str, prefix: str = "bastion:session") -> None:
        try:
            self.crypt = MultiFernet([Fernet(s.strip().encode()) for s in secret.split(",") if s.strip()])
        except (ValueError, TypeError):
            raise ValueError("session_secret must be Fernet keys (`bastion tokens secret` makes one)") from None
        self.url = url
        self.prefix = prefix
        # memory sessions outlive config reloads: one cache per prefix for the whole process
        self.memory = _MEMORY.setdefault(prefix, ExpiringCache(200_000)) if url == "memory" else None
        self._client: Any = None

    def _redis(self) -> Any:
        if self._client is None:
            from bastion.ratelimit.redis_store import connect

            self._client = connect(self.url, timeout=1.0)
        return self._client

    async def put(self, kind: str, key: str, doc: dict[str, Any], ttl: float) -> None:
        blob = self.crypt.encrypt(orjson.dumps(doc))
        if self.memory is not None:
            self.memory.put(f"{kind}:{key}", blob, time.time() + ttl)
        else:
            await self._redis().set(f"{self.prefix}:{kind}:{key}", blob, px=max(1000, int(ttl * 1000)))

    async def get(self, kind: str, key: str) -> dict[str, Any] | None:
        if self.memory is not None:
            blob = self.memory.get(f"{kind}:{key}")
        else:
            blob = await self._redis().get(f"{self.prefix}:{kind}:{key}")
        return self._open(blob)

    async def pop(self, kind: str, key: str) -> dict[str, Any] | None:
        """Read and delete at once (single-use entries: login state)."""
        if self.memory is not None:
            name = f"{kind}:{key}"
            blob = self.memory.get(name)
            self.memory.delete(name)
        else:
            blob = await self._redis().getdel(f"{self.prefix}:{kind}:{key}")
        return self._open(blob)

    async def delete(self, kind: str, key: str) -> None:
        if self.memory is not None:
            self.memory.delete(f"{kind}:{key}")
        else:
            await self._redis().delete(f"{self.prefix}:{kind}:{key}")

    def _open(self, blob: bytes | None) -> dict[str, Any] | None:
        if blob is None:
            return None
        try:
            return orjson.loads(self.crypt.decrypt(blob))
        except (InvalidToken, orjson.JSONDecodeError):
            return None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
