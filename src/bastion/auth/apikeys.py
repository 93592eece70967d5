"""API keys: only a hash is ever stored or compared; lookups are by that hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Protocol


def hash_key(key: str) -> str:
    """`sha256:<hex>` of the key. Keys carry 256 random bits, so a fast hash is the right one
    (a slow password hash adds nothing against brute force of 2^256 and costs every request)."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_key(env: str = "live") -> str:
    return f"bk_{env}_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    key_hash: str
    owner: str
    scopes: frozenset[str]
    tier: str | None = None
    expires_at: float | None = None
    status: str = "active"  # active | revoked


class ApiKeyLookup(Protocol):
    async def find(self, key_hash: str) -> ApiKeyRecord | None: ...


class StaticApiKeys:
    """Keys declared in the config, by hash."""

    def __init__(self, records: list[ApiKeyRecord]) -> None:
        self.by_hash = {r.key_hash: r for r in records}

    async def find(self, key_hash: str) -> ApiKeyRecord | None:
        record = self.by_hash.get(key_hash)
        # the dict lookup already matched; compare again in constant time so that a lookup
        # structure with early-exit comparisons could never leak a prefix
        if record is not None and hmac.compare_digest(record.key_hash, key_hash):
            return record
        return None


def check(record: ApiKeyRecord | None, now: float | None = None) -> str | None:
    """Why this record cannot be used, or None."""
    if record is None:
        return "unknown API key"
    if record.status != "active":
        return "API key revoked"
    if record.expires_at is not None and (now or time.time()) >= record.expires_at:
        return "API key expired"
    return None
