"""Persisted queries: Apollo's APQ protocol (hash → query, registered on first use) and
allowlists (only registered queries run)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from bastion.auth.cache import ExpiringCache
from bastion.graphql.transport import GraphQLRefusal

_HASH = re.compile(r"[0-9a-f]{64}")


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


class QueryResolver:
    """The query text an operation stands for: its own, an APQ hash expanded from the store,
    or (with an allowlist) only a registered one. Raises GraphQLRefusal."""

    def __init__(self, allowlist: dict[str, str] | None, apq: bool, store_url: str) -> None:
        self.allowlist = allowlist
        self.apq = apq
        self.store_url = store_url
        self._store: MemoryQueryStore | RedisQueryStore | None = None

    def store(self) -> MemoryQueryStore | RedisQueryStore:
        if self._store is None:
            url = self.store_url
            self._store = MemoryQueryStore() if url == "memory" else RedisQueryStore(url)
        return self._store

    async def resolve(self, op: dict[str, Any]) -> tuple[str, bool]:
        """The query text to analyse, and whether it differs from what the client sent (an APQ
        hash or allowlist entry expanded: the upstream must then get the full text). A query
        sent with its APQ hash is marked `_register` in `op`, for `register` once it passed."""
        query = op.get("query")
        ext: dict[str, Any] = op["extensions"] if isinstance(op.get("extensions"), dict) else {}
        pq = ext.get("persistedQuery") if isinstance(ext.get("persistedQuery"), dict) else None
        if query is not None and not isinstance(query, str):
            raise GraphQLRefusal(400, "BAD_REQUEST", "query must be a string")
        if self.allowlist is not None:
            return self._allowlisted(op, query, pq)
        if pq is not None and self.apq:
            digest = pq.get("sha256Hash")
            if pq.get("version", 1) != 1 or not isinstance(digest, str) or not _HASH.fullmatch(digest):
                raise GraphQLRefusal(400, "PERSISTED_QUERY_INVALID", "unsupported persisted query")
            if query is None:
                try:
                    stored = await self.store().get(digest)
                except Exception:  # the store is down: the client sends the full query next
                    stored = None
                if stored is None:
                    raise GraphQLRefusal(200, "PERSISTED_QUERY_NOT_FOUND", "PersistedQueryNotFound")
                op["query"] = stored
                return stored, True
            if sha256(query) != digest:
                raise GraphQLRefusal(400, "PERSISTED_QUERY_HASH_MISMATCH", "provided sha does not match query")
            # analysed by the caller before it is stored: an over-limit query is never registered
            op["_register"] = digest
        if not query:
            raise GraphQLRefusal(400, "BAD_REQUEST", "no query")
        return query, False

    def _allowlisted(self, op: dict[str, Any], query: str | None, pq: dict[str, Any] | None) -> tuple[str, bool]:
        assert self.allowlist is not None
        digest = pq.get("sha256Hash") if pq else (sha256(query) if query else None)
        if not isinstance(digest, str) or digest not in self.allowlist:
            raise GraphQLRefusal(403, "PERSISTED_QUERY_NOT_ALLOWED", "only registered queries may run here")
        if query is not None and sha256(query) != digest:
            raise GraphQLRefusal(400, "PERSISTED_QUERY_HASH_MISMATCH", "the query does not match its hash")
        full = self.allowlist[digest]
        op["query"] = full
        return full, query is None

    async def register(self, op: dict[str, Any], query: str) -> None:
        """Store an APQ registration (`_register`), once the query passed every check."""
        digest = op.pop("_register", None)
        if digest is not None:
            try:
                await self.store().put(digest, query)
            except Exception:  # a store outage costs the cache, not the request
                pass
