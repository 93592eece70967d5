"""Forwarding to an upstream: pooled keep-alive connections, streamed bodies, timeouts.

aiohttp's client was chosen over httpx by measurement (docs/architecture.md, "Server and
client"). Decompression, automatic headers and URL re-quoting are turned off: the gateway
forwards exactly the normalised path and the bytes it was given.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import AsyncIterator

import aiohttp
from yarl import URL

from bastion.config.model import UpstreamConfig
from bastion.http import Headers, Request

# RFC 9110 7.6.1 plus the de-facto ones; names listed in Connection are added per message.
HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
        b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"proxy-authorization",
    }
)
# Identity of the upstream's software: never shown to clients.
UPSTREAM_IDENTITY = frozenset({b"server", b"x-powered-by", b"x-aspnet-version", b"x-aspnetmvc-version"})
# Set by the gateway from what it knows; whatever the client sent is replaced.
FORWARDING = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"})


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


class ClientDisconnected(Exception):
    pass


class UpstreamError(Exception):
    """The upstream could not be reached (502) or did not answer in time (504)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def connection_listed(headers: Headers) -> frozenset[bytes]:
    names: set[bytes] = set()
    for k, v in headers:
        if k == b"connection":
            names.update(t.strip().lower() for t in v.split(b",") if t.strip())
    return frozenset(names)


def strip_hop_by_hop(headers: Headers, also: frozenset[bytes] = frozenset()) -> Headers:
    listed = connection_listed(headers)
    drop = HOP_BY_HOP | listed | also
    return [(k, v) for k, v in headers if k not in drop]


class UpstreamPool:
    """One upstream: its base URLs (round-robin) and one pooled aiohttp session."""

    def __init__(self, name: str, config: UpstreamConfig) -> None:
        self.name = name
        self.config = config
        self.bases = [URL(u) for u in config.urls]
        self._next = itertools.cycle(range(len(self.bases)))
        t = config.timeouts
        self.timeout = aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect, connect=t.connect, sock_read=t.read)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.config.max_connections, limit_per_host=self.config.max_connections,
                keepalive_timeout=30, enable_cleanup_closed=True, ttl_dns_cache=60,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, timeout=self.timeout,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(), read_bufsize=2**16,
            )
        return self._session

    def pick(self) -> URL:
        return self.bases[next(self._next)]

    def target_url(self, base: URL, req: Request) -> URL:
        target = base.raw_path.rstrip("/") + req.path
        if req.query:
            target += "?" + req.query.decode("latin-1")
        return URL(f"{base.scheme}://{base.raw_authority}{target}", encoded=True)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def open_upstream(
    pool: UpstreamPool, req: Request, headers: Headers, body: bytes | AsyncIterator[bytes] | None
) -> aiohttp.ClientResponse:
    """Send the request head and body; return once the upstream's response head arrived."""
    base = pool.pick()
    url = pool.target_url(base, req)
    out_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
    if not pool.config.preserve_host:
        out_headers.append(("Host", base.raw_authority))
    try:
        return await pool.session.request(
            req.method, url, headers=out_headers, data=body, allow_redirects=False,
            compress=None, chunked=None,
        )
    except (BodyTooLarge, BodyTimeout, ClientDisconnected):
        raise
    except asyncio.TimeoutError:
        raise UpstreamError(504, f"upstream {pool.name} did not answer in time") from None
    except aiohttp.ClientConnectorError:
        raise UpstreamError(502, f"upstream {pool.name} is unreachable") from None
    except (aiohttp.ClientError, OSError) as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, (BodyTooLarge, BodyTimeout, ClientDisconnected)):
            raise cause from None
        raise UpstreamError(502, f"upstream {pool.name} failed: {type(exc).__name__}") from None
