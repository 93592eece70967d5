"""The neutral request model: built once per request, seen by every policy.

The path in `Request.path` is the one that is routed, checked by policies and forwarded
upstream. It is computed by `paths.normalise_path` from the raw bytes the client sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bastion.http.headers import Headers, parse_cookies
from bastion.http.networks import IPAddress


class BodyTooLarge(Exception):
    """The body passed the route's limit (413)."""


class BodyTimeout(Exception):
    """The client stopped sending its body (408)."""


class ClientDisconnected(Exception):
    pass


class ClientGone(OSError):
    """`send()` after the client's connection closed (the ASGI spec's server-specific OSError):
    raised by the gateway's server layers so that an answer still streaming stops reading its
    upstream instead of relaying into a closed socket until the upstream ends (never, for an
    endless event stream)."""


# The most digits a Content-Length may have (an exabyte): longer is refused, as a client's (400) or
# an upstream's (502). llhttp reads leading zeros; Python's int() refuses 4,300+ digits.
CONTENT_LENGTH_DIGITS = 18

# the headers that carry a credential (`Request.carries_credentials`)
CREDENTIAL_HEADERS = frozenset(
    (b"authorization", b"cookie", b"x-api-key", b"proxy-authorization")
    # spelled with '_' (WSGI/CGI servers read X_API_Key as X-API-Key: s9-rt)
    + (b"x_api_key", b"x-api_key", b"x_api-key", b"proxy_authorization")
)


@dataclass(slots=True)
class Request:
    """One client request as every policy sees it."""

    method: str
    path: str
    query: bytes
    headers: Headers  # lower-case names, as received
    client_ip: IPAddress | None
    peer_ip: IPAddress | None
    peer_trusted: bool
    scheme: str
    host: str
    receive: Callable[[], Awaitable[dict[str, Any]]]
    started: float = field(default_factory=time.perf_counter)
    request_id: str = ""
    route_name: str = ""
    path_params: dict[str, str] = field(default_factory=dict)
    body_limit: int | None = None
    body_timeout: float = 30.0
    body: bytes | None = None  # set once read (by a policy that needs it, or the proxy)
    bytes_in: int = 0
    tls: dict[str, Any] | None = None  # the ASGI TLS extension: verified client certificate (mTLS)
    refusal: str = ""  # set when the request line or headers are unacceptable (answered 400)
    websocket: bool = False  # a WebSocket handshake (the scope's type, never a header): gateway/websocket.py
    # a WebSocket handshake whose credential may come later, in its GraphQL `connection_init`: the
    # auth policy awaits it when the handshake carries none (accepts the socket, reads the message;
    # returns the credential as an Authorization value, None, or a refusal): gateway/websocket.py
    credential_later: Callable[[Request], Awaitable[Any]] | None = None
    _header_map: dict[bytes, bytes] | None = None
    _cookies: dict[str, str] | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, counted against `body_limit`, each piece within
        `body_timeout`. Reading consumes it: use `read_body` when a policy needs it whole."""
        if self.body is not None:
            if self.body:
                yield self.body
            return
        limit = self.body_limit
        while True:
            try:
                async with asyncio.timeout(self.body_timeout):
                    message = await self.receive()
            except TimeoutError:
                raise BodyTimeout() from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            chunk = message.get("body", b"")
            self.bytes_in += len(chunk)
            if limit is not None and self.bytes_in > limit:
                raise BodyTooLarge()
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def read_body(self) -> bytes:
        """The whole body (capped by `body_limit`), read once and kept for the proxy."""
        if self.body is None:
            parts = [c async for c in self.chunks()]
            self.body = b"".join(parts)
        return self.body

    def header(self, name: bytes) -> bytes | None:
        """First value of a header, by lower-case name."""
        if self._header_map is None:  # reversed: the first of repeated names is the one kept
            self._header_map = dict(reversed(self.headers))
        return self._header_map.get(name)

    def cookies(self) -> dict[str, str]:
        """The Cookie header's pairs (parsed once; see `parse_cookies`)."""
        if self._cookies is None:
            # every Cookie header, joined as RFC 9113 8.2.3 says (HTTP/2 sends one per cookie): the
            # ambiguity check reads them all, so the key's extraction must too (s9-rt)
            values = [v for k, v in self.headers if k == b"cookie"]
            self._cookies = parse_cookies(b"; ".join(values) if values else None)
        return self._cookies

    def header_str(self, name: bytes) -> str | None:
        value = self.header(name)
        return None if value is None else value.decode("latin-1")

    def content_length(self) -> int | None:
        value = self.header(b"content-length")
        if value is None:
            return None
        if not value.isdigit() or len(value) > CONTENT_LENGTH_DIGITS:
            raise ValueError("invalid Content-Length")
        return int(value)

    def has_body(self) -> bool:
        m = self._header_map
        if m is None:
            m = self._header_map = dict(reversed(self.headers))
        return m.get(b"content-length") not in (None, b"0") or b"transfer-encoding" in m

    def carries_credentials(self) -> bool:
        """Whether the request has an Authorization, Cookie, X-API-Key or Proxy-Authorization header."""
        m = self._header_map
        if m is None:
            m = self._header_map = dict(reversed(self.headers))
        return not m.keys().isdisjoint(CREDENTIAL_HEADERS)


@dataclass(slots=True)
class Response:
    """A response produced by the gateway or the head of a proxied one.

    `body` is used for gateway-made responses; proxied bodies stream separately.
    """

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    stopped_by: str = ""  # the policy (or core step) that produced this response
    reason: str = ""  # why, for the audit line

    def get_header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def set_header(self, name: bytes, value: bytes) -> None:
        self.headers = [(k, v) for k, v in self.headers if k != name]
        self.headers.append((name, value))

    def add_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def remove_headers(self, names: frozenset[bytes] | set[bytes]) -> None:
        self.headers = [(k, v) for k, v in self.headers if k not in names]

    def become(self, other: Response) -> bytes:
        """Turn this (proxied) response into `other` (a problem): its status and content
        headers; the caller sends the returned body in place of the original."""
        self.status = other.status
        drop = {b"content-type", b"content-encoding", b"content-language", b"content-length"}
        self.headers = [(k, v) for k, v in self.headers if k not in drop]
        self.headers.extend((k, v) for k, v in other.headers if k != b"content-length")
        return other.body
