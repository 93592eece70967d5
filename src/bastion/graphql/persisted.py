"""Persisted queries: Apollo's APQ protocol (hash → query, registered on first use) and
allowlists (only registered queries run)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bastion.auth.cache import ExpiringCache


def sha256(query: str) -> str:
    return hashlib.sha256(query.encode("utf-8")).hexdigest()


class MemoryQueryStore:
    def __init__(self, max_entries: int = 10_000, ttl: float = 86400.0) -> None:
        self.cache = ExpiringCache(max_entries)
        self.ttl = ttl

    async def get(self, digest: str) -> str | None:
        return self.cache.get(digest)

    async def put(self, digest: str, query: str) -> None:
        import time

        self.cache.put(digest, query, time.time() + self.ttl)


class RedisQueryStore:
    def __init__(self, url: str, prefix: str = "bastion:apq", ttl: float = 86400.0) -> None:
        from bastion.net.redis import connect

        self.client = connect(url, timeout=0.5)
        self.prefix = prefix
        self.ttl = ttl

    async def get(self, digest: str) -> str | None:
        value = await self.client.get(f"{self.prefix}:{digest}")
        return value.decode() if value is not None else None

    async def put(self, digest: str, query: str) -> None:
        await self.client.set(f"{self.prefix}:{digest}", query.encode(), px=int(self.ttl * 1000))


def load_allowlist(path: str | Path) -> dict[str, str]:
    """`{sha256: query}` as written by `bastion graphql register`; every hash is checked."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an allowlist is a JSON object of sha256 → query")
    for digest, query in data.items():
        if not isinstance(query, str) or sha256(query) != digest:
            raise ValueError(f"{path}: the entry {digest[:12]}… does not match its query's hash")
    return data


def build_allowlist(files: list[Path]) -> dict[str, str]:
    out = {}
    for f in files:
        query = f.read_text()
        out[sha256(query)] = query
    return out
