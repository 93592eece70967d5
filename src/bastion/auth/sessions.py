"""Server-side sessions for browser logins: opaque random ids in a cookie, the data (tokens)
encrypted at rest with Fernet, kept in memory (one process), Redis or the identity store's
database (every gateway; there the id is stored hashed too)."""

from __future__ import annotations

import asyncio
import hashlib
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
        self.sql = None
        if url.startswith(("sqlite:", "postgresql:", "postgres:")):
            from bastion.store.db import open_store

            _, self.sql = open_store(url)  # migrated on first use

    def _redis(self) -> Any:
        if self._client is None:
            from bastion.net.redis import connect

            self._client = connect(self.url, timeout=1.0)
        return self._client

    def _row_key(self, name: str) -> str:
        return "sha256:" + hashlib.sha256(f"{self.prefix}:{name}".encode()).hexdigest()

    def _sql_put(self, name: str, blob: bytes, expires_at: float) -> None:
        from sqlalchemy import delete

        from bastion.store.models import GatewaySession

        with self.sql.begin() as s:  # type: ignore[union-attr]
            s.merge(GatewaySession(key_hash=self._row_key(name), blob=blob, expires_at=expires_at))
            if hash(name) % 50 == 0:  # now and then, drop what has expired
                s.execute(delete(GatewaySession).where(GatewaySession.expires_at < time.time()))

    def _sql_get(self, name: str, delete_it: bool) -> bytes | None:
        from sqlalchemy import delete

        from bastion.store.models import GatewaySession

        key = self._row_key(name)
        with self.sql.begin() as s:  # type: ignore[union-attr]
            if delete_it:  # one statement: two callbacks racing for one state cannot both get it
                found = s.execute(
                    delete(GatewaySession)
                    .where(GatewaySession.key_hash == key)
                    .returning(GatewaySession.blob, GatewaySession.expires_at)
                ).first()
            else:
                row = s.get(GatewaySession, key)
                found = (row.blob, row.expires_at) if row is not None else None
        if found is None or found[1] <= time.time():
            return None
        return found[0]

    async def put(self, kind: str, key: str, doc: dict[str, Any], ttl: float) -> None:
        blob = self.crypt.encrypt(orjson.dumps(doc))
        if self.sql is not None:
            await asyncio.to_thread(self._sql_put, f"{kind}:{key}", blob, time.time() + ttl)
        elif self.memory is not None:
            self.memory.put(f"{kind}:{key}", blob, time.time() + ttl)
        else:
            await self._redis().set(f"{self.prefix}:{kind}:{key}", blob, px=max(1000, int(ttl * 1000)))

    async def get(self, kind: str, key: str) -> dict[str, Any] | None:
        if self.sql is not None:
            blob = await asyncio.to_thread(self._sql_get, f"{kind}:{key}", False)
        elif self.memory is not None:
            blob = self.memory.get(f"{kind}:{key}")
        else:
            blob = await self._redis().get(f"{self.prefix}:{kind}:{key}")
        return self._open(blob)

    async def pop(self, kind: str, key: str) -> dict[str, Any] | None:
        """Read and delete at once (single-use entries: login state)."""
        if self.sql is not None:
            blob = await asyncio.to_thread(self._sql_get, f"{kind}:{key}", True)
        elif self.memory is not None:
            name = f"{kind}:{key}"
            blob = self.memory.get(name)
            self.memory.delete(name)
        else:
            blob = await self._redis().getdel(f"{self.prefix}:{kind}:{key}")
        return self._open(blob)

    async def delete(self, kind: str, key: str) -> None:
        if self.sql is not None:
            await asyncio.to_thread(self._sql_get, f"{kind}:{key}", True)
        elif self.memory is not None:
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
