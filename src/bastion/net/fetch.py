"""Small HTTP requests the gateway makes for itself (JWKS, token introspection), on the same
pooled client that proxies requests."""

from __future__ import annotations

import asyncio
import ssl
import weakref
from urllib.parse import urlsplit

from bastion.net.http1 import ConnectionPool

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str, int], ConnectionPool]] = (
    weakref.WeakKeyDictionary()
)  # connections belong to the loop that opened them


class FetchError(Exception):
    pass


async def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes | None = None,
    timeout: float = 5.0,
    max_bytes: int = 1024 * 1024,
) -> tuple[int, bytes]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"not an http(s) URL: {url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    key = (parts.scheme, parts.hostname, port)
    pools = _pools.setdefault(asyncio.get_running_loop(), {})
    pool = pools.get(key)
    if pool is None:
        tls = ssl.create_default_context() if parts.scheme == "https" else None
        pool = pools[key] = ConnectionPool(
            parts.hostname,
            port,
            tls=tls,
            max_connections=8,
            connect_timeout=timeout,
            read_timeout=timeout,
            total_timeout=timeout,
        )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    hs = [(b"host", parts.netloc.encode()), (b"accept", b"application/json"), *(headers or [])]
    if body is not None:
        hs.append((b"content-length", str(len(body)).encode()))
    try:
        resp = await pool.request(method, target.encode(), hs, body)
    except Exception as exc:  # connect, timeout, protocol: all mean "could not fetch"
        raise FetchError(f"{type(exc).__name__}: {exc}") from None
    try:
        data = b""
        async for chunk in resp.body():
            data += chunk
            if len(data) > max_bytes:
                raise FetchError("response too large")
    except FetchError:
        raise
    except Exception as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}") from None
    finally:
        resp.release()
    return resp.status, data
