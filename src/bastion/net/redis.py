"""Redis clients from URLs, for every part of bastion that keeps shared state in Redis (rate
limits, revocations, sessions, persisted queries)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis


def connect(url: str, *, timeout: float = 0.25) -> Any:
    """A redis-py asyncio client for redis://, rediss://, unix://, redis+sentinel:// and
    redis+cluster:// URLs."""
    parts = urlsplit(url)
    common = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "decode_responses": False}
    if parts.scheme == "redis+cluster":
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url("redis://" + url.split("://", 1)[1], **common)
    if parts.scheme == "redis+sentinel":
        from redis.asyncio.sentinel import Sentinel

        hosts = [
            (h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1]) if ":" in h else 26379)
            for h in parts.netloc.split("@")[-1].split(",")
        ]
        service = parts.path.strip("/") or "mymaster"
        query = parse_qs(parts.query)
        return Sentinel(hosts, **common).master_for(service, db=int(query.get("db", ["0"])[0]))
    return aioredis.from_url(url, **common)


def safe_url(url: str) -> str:
    """The URL without its password, for log lines."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url
