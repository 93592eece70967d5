"""Forwarding to an upstream: header hygiene, target building, error mapping.

The connections themselves are `bastion.net.http1.ConnectionPool` (why a purpose-built client:
docs/architecture.md, "Server and client").
"""

from __future__ import annotations

import itertools
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from bastion.config.model import UpstreamConfig
from bastion.http import Headers, Request, unsafe_header
from bastion.net.http1 import (
    ConnectionPool,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeout,
)

# RFC 9110 7.6.1 plus the de-facto ones; names listed in Connection are added per message.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Identity of the upstream's software: never shown to clients.
UPSTREAM_IDENTITY = frozenset(
    {
        b"server",
        b"x-powered-by",
        b"x-aspnet-version",
        b"x-aspnetmvc-version",
        b"x-sourcefiles",
        b"x-runtime",  # Rails' request time and framework
        b"x-debug-token",
        b"x-debug-token-link",  # Symfony's profiler, a link to the request's internals
        b"x-backend-server",
        b"x-served-by",
        b"x-generator",
    }
)
# Set by the gateway from what it knows; whatever the client sent is replaced.
FORWARDING = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"})


class UnsafeHeader(Exception):
    """A header that may not be written to the upstream (control character, bad name): nothing
    was sent. `name` is the header's name (its value is never logged: it may be a secret)."""

    def __init__(self, name: bytes) -> None:
        super().__init__(name.decode("latin-1"))
        self.name = name


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
    """`headers` without the hop-by-hop ones, those the Connection header lists, and `also`.

    One pass with the fixed names (the union built once per `also`); the names a Connection
    header lists are parsed once per value (remembered, bounded) and cost a second pass only
    when one of them is not already dropped (`Connection: keep-alive` is)."""
    drop = _FIXED_DROPS.get(also)
    if drop is None:
        if len(_FIXED_DROPS) > 64:
            _FIXED_DROPS.clear()
        drop = _FIXED_DROPS[also] = HOP_BY_HOP | also
    kept = [(k, v) for k, v in headers if k not in drop]
    if len(kept) == len(headers):  # nothing dropped: no Connection header either
        return kept
    extra: frozenset[bytes] | set[bytes] = frozenset()
    for k, v in headers:
        if k == b"connection":
            listed = _LISTED.get(v)
            if listed is None:
                listed = connection_listed([(k, v)])
                if len(v) <= 256:
                    if len(_LISTED) >= 1024:
                        _LISTED.clear()
                    _LISTED[v] = listed
            if not listed <= drop:
                extra = extra | (listed - drop)
    if extra:
        kept = [(k, v) for k, v in kept if k not in extra]
    return kept


_FIXED_DROPS: dict[frozenset[bytes], frozenset[bytes]] = {}
# (a fixed drop set, the names a request's policies drop) -> their union (bounded)
_DROPS_WITH: dict[tuple[frozenset[bytes], frozenset[bytes]], frozenset[bytes]] = {}
_LISTED: dict[bytes, frozenset[bytes]] = {}  # a Connection value -> the names it lists


def drop_with(fixed: frozenset[bytes], extra: set[bytes]) -> frozenset[bytes]:
    """`fixed | extra`, the same object each time for the same two sets (bounded).

    The policies drop the same few names request after request (the request id's header, the
    trace context, withheld credentials); a union made anew per request is a set of a dozen or
    more names built, hashed and compared anew in `client_headers`'s cache: ~17k instructions a
    request measured with the request id, audit and metrics on (session 9)."""
    key = (fixed, frozenset(extra))
    merged = _DROPS_WITH.get(key)
    if merged is None:
        if len(_DROPS_WITH) > 256:  # names a policy took from the request would churn it: bounded
            _DROPS_WITH.clear()
        merged = _DROPS_WITH[key] = fixed | key[1]
    return merged


def _dropped(name: bytes, drop: frozenset[bytes]) -> bool:
    if name in HOP_BY_HOP or name in drop or name.startswith(EDGE_OWNED_PREFIXES):
        return True
    if 0x5F in name:  # "_" (by value: a bytes operand of `in` costs a dropped TypeError)
        alias = name.replace(b"_", b"-")
        return alias in HOP_BY_HOP or alias in drop or alias.startswith(EDGE_OWNED_PREFIXES)
    return False


class _Classified:
    """The header names seen with one drop set, and which of them are dropped."""

    __slots__ = ("known", "dropped")

    def __init__(self) -> None:
        self.known: set[bytes] = set()
        self.dropped: set[bytes] = set()


_CLASSIFIED: dict[frozenset[bytes], _Classified] = {}
_KNOWN_MAX = 4096  # names remembered per drop set (client-chosen names: bounded, then forgotten)


def client_headers(headers: Headers, drop: frozenset[bytes]) -> Headers:
    """The client's headers that may go on: hop-by-hop ones, `drop` and `x-bastion-*` (the
    gateway's to set) removed — also when spelled with '_' for '-' (`X_Bastion_Subject`), since
    WSGI/CGI servers (Django, Flask, PHP) read both spellings as the same variable.

    Each name is classified once per drop set and remembered (`_Classified`), so a request whose
    names were all seen before is filtered with set operations, not a Python loop per header."""
    if not headers:
        return []
    names = frozenset(next(zip(*headers, strict=True)))
    seen = _CLASSIFIED.get(drop)
    if seen is None:
        if len(_CLASSIFIED) > 64:
            _CLASSIFIED.clear()
        seen = _CLASSIFIED[drop] = _Classified()
    new = names - seen.known
    if new:
        if len(seen.known) + len(new) > _KNOWN_MAX:
            seen.known.clear()
            seen.dropped.clear()
            new = names
        seen.known |= new
        seen.dropped.update(k for k in new if _dropped(k, drop))
    gone = names & seen.dropped
    if b"connection" in names:
        gone |= connection_listed(headers)
    if not gone:
        return list(headers)
    return [(k, v) for k, v in headers if k not in gone]


# Families of headers that identity-aware proxies and platforms set for their upstreams (AWS ALB's
# OIDC headers, Azure App Service's principal and token headers, Google IAP, Envoy's internal
# ones): from a client they are forgeries. The gateway's own `x-bastion-*` are among them.
EDGE_OWNED_PREFIXES = (
    b"x-bastion-",
    b"x-amzn-oidc-",
    b"x-ms-client-principal",
    b"x-ms-token-",
    b"x-goog-iap-",
    b"x-goog-authenticated-",
    b"x-envoy-",
)


def upstream_tls(config: UpstreamConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=config.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not config.tls_verify:
        import logging

        logging.getLogger("bastion.proxy").warning(
            "TLS verification is OFF for an upstream (%s): anyone on the path can impersonate it",
            ", ".join(config.urls),
        )
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class UpstreamPool:
    """One upstream: its base URLs (round-robin), each with a pool of keep-alive connections."""

    def __init__(self, name: str, config: UpstreamConfig) -> None:
        self.name = name
        self.config = config
        t = config.timeouts
        self.bases: list[tuple[bytes, bytes, ConnectionPool]] = []  # (path prefix, authority, pool)
        for url in config.urls:
            parts = urlsplit(url)
            tls = upstream_tls(config) if parts.scheme == "https" else None
            port = parts.port or (443 if tls else 80)
            pool = ConnectionPool(
                parts.hostname or "",
                port,
                tls=tls,
                max_connections=config.max_connections,
                connect_timeout=t.connect,
                read_timeout=t.read,
                total_timeout=t.total,
                idle_timeout=config.idle_timeout,
                unsafe_reuse_within=config.unsafe_reuse_within,
            )
            self.bases.append((parts.path.rstrip("/").encode(), parts.netloc.encode(), pool))
        self._next = itertools.cycle(range(len(self.bases)))

    def pick(self) -> tuple[bytes, bytes, ConnectionPool]:
        return self.bases[next(self._next)]

    async def close(self) -> None:
        for _, _, pool in self.bases:
            await pool.close()


async def open_upstream(
    pool: UpstreamPool, req: Request, headers: Headers, body: bytes | AsyncIterator[bytes] | None
) -> UpstreamResponse:
    """Send the request head and body; return once the upstream's response head arrived.

    The target is the normalised path exactly as routed and checked (plus the base URL's path
    prefix and the raw query): nothing re-quotes it on the way out. No header with a control
    character or an invalid name is ever written (`UnsafeHeader`, before anything is sent).
    """
    prefix, authority, conns = pool.pick()
    target = prefix + req.path.encode("latin-1")
    if req.query:
        target += b"?" + req.query
    if not pool.config.preserve_host:
        headers.append((b"host", authority))
    bad = unsafe_header(headers)  # the one choke point: whatever policy made a header, it is checked here
    if bad is not None:
        raise UnsafeHeader(bad)
    try:
        return await conns.request(req.method, target, headers, body)
    except UpstreamTimeout:
        raise UpstreamError(504, f"upstream {pool.name} did not answer in time") from None
    except UpstreamConnectError:
        raise UpstreamError(502, f"upstream {pool.name} is unreachable") from None
    except UpstreamProtocolError as exc:
        raise UpstreamError(502, f"upstream {pool.name} failed: {exc}") from None
