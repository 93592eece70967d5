"""One write per answer: uvicorn's request/response cycle with the head held for the body.

uvicorn writes a response's head to the socket as soon as the app sends `http.response.start`,
then each body message: two `send()` system calls (and two TCP segments) for every small answer,
which profiling showed as a large share of a pass-through request (docs/architecture.md, "Where
a request's time goes"). Here the head is held, and written together with the first body message
when that comes in the same turn of the event loop (the proxy's relay and `send_whole` always do
so); otherwise a callback scheduled with `call_soon` writes it alone at the end of the turn, so a
streamed answer whose body is late still gets its head at once. Everything else — header
validation, framing, keep-alive, flow control — is uvicorn's own `send`, unchanged: only the
transport it writes to is wrapped.

The response head itself is serialised here too (`CoalescingCycle.send`, session 5): uvicorn
checks every header with two regular expressions and builds the head in a Python loop of four
list items per header; here the whole list is checked at once (the names, joined,
must be RFC 9110 tokens; the values, joined, must hold no control character but HTAB — the same
rule `bastion.http.unsafe_header` applies to what goes upstream, by `bytes.translate`) and
joined by C-level `bytes.join`. A header that fails is refused before anything is written (`RuntimeError`, as
uvicorn does, but with the response not started, so the gateway's safety net can still answer
problem+json). The framing decisions (Content-Length, chunked, `Connection: close`) are
uvicorn's, made the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

from bastion.http import ClientGone
from bastion.http.headers import safe_fields, unsafe_header

_JOIN_MAX = 64 * 1024


class HeadFirst:
    """A connection's transport for its cycles: holds the head (while `capturing`), puts it
    before the next write."""

    __slots__ = ("real", "held", "capturing", "loop")

    def __init__(self, real: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.real = real
        self.held: bytes | None = None
        self.capturing = False
        self.loop = loop

    def write(self, data: bytes) -> None:
        if self.capturing:
            self.held = data
            self.loop.call_soon(self.flush)
            return
        held = self.held
        if held is not None:
            self.held = None
            if len(data) <= _JOIN_MAX:
                data = held + data
            else:  # a large body: two writes cost less than copying it
                self.real.write(held)
        if data:
            self.real.write(data)

    def flush(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            if not self.real.is_closing():
                self.real.write(held)

    def close(self) -> None:
        self.flush()
        self.real.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class CoalescingCycle(RequestResponseCycle):
    """Set as the class of uvicorn's cycle by `EdgeProtocol.on_headers_complete` (before its
    task first runs), which also gives it the connection's `HeadFirst` as its transport. A
    connection's answers go out one after the other (uvicorn queues pipelined requests), so one
    `HeadFirst` serves them all; a flush scheduled for an earlier answer that finds a later head
    held only writes that head a little early."""

    async def send(self, message: Any) -> None:
        if message["type"] != "http.response.start" or self.response_started:
            if self.disconnected and message.get("more_body") and message["type"] == "http.response.body":
                raise ClientGone  # as NativeProtocol: a streaming answer's relay stops reading the upstream
            await super().send(message)
            return
        if self.access_log:  # (never on the gateway's listeners) uvicorn's own path logs the line
            await self._send_start_logged(message)
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        self._write_head(message["status"], message.get("headers") or ())

    async def _send_start_logged(self, message: Any) -> None:
        transport: HeadFirst = self.transport  # type: ignore[assignment]
        transport.capturing = True
        try:
            await super().send(message)
        finally:
            transport.capturing = False

    def _write_head(self, status: int, headers: Any) -> None:
        """The status line and headers, checked and framed (`build_head`), held by the
        connection's `HeadFirst` until the body's first write."""
        head = build_head(self, status, headers, self.default_headers)
        transport: HeadFirst = self.transport  # type: ignore[assignment]
        transport.capturing = True
        try:
            transport.write(head)
        finally:
            transport.capturing = False


def build_head(cycle: Any, status: int, headers: Any, default_headers: Any) -> bytes:
    """The response head of `cycle` (uvicorn's cycle or `NativeProtocol`'s exchange: the same
    attributes), checked and framed, one for both server layers: every name a token and no
    control character in a value (`safe_fields`, one `bytes.translate` over the joined lists),
    names lower-cased at once, framing read as uvicorn reads it. Sets the cycle's
    `response_started`, `expected_content_length`, `chunked_encoding` and `keep_alive`. Raises
    before `response_started` is set when a header is unsafe, so the safety net still answers."""
    if default_headers:
        headers = [*default_headers, *headers]
    names: tuple[bytes, ...] | list[bytes]
    values: tuple[bytes, ...]
    if headers:
        names, values = zip(*headers, strict=True)
        if not safe_fields(names, values):
            bad = unsafe_header(list(headers))
            raise RuntimeError(f"Invalid HTTP header {bad!r}: not a token, or a control character in its value.")
        joined = b"\t".join(names)
        lowered = joined.lower()
        if lowered != joined:  # a token holds no TAB, so the lowered names split back one for one
            names = lowered.split(b"\t")
    else:
        names = values = ()
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    if b"content-length" in names and b"transfer-encoding" not in names and b"connection" not in names:
        cycle.expected_content_length = int(values[names.index(b"content-length")].decode())
        cycle.chunked_encoding = False
        close = False
    else:
        close = _framing(cycle, names, values)
    lines = [STATUS_LINE[status]]
    if names:
        lines.append(b"\r\n".join(map(b": ".join, zip(names, values, strict=True))))
        lines.append(b"\r\n")
    if not cycle.keep_alive and not close:
        lines.append(b"connection: close\r\n")
    if cycle.chunked_encoding is None and cycle.scope["method"] != "HEAD" and status not in (204, 304):
        cycle.chunked_encoding = True  # neither Content-Length nor Transfer-Encoding
        lines.append(b"transfer-encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def _framing(cycle: Any, names: Any, values: Any) -> bool:
    """uvicorn's reading of the framing headers, in order; True when one says `close`."""
    close = False
    for name, value in zip(names, values, strict=True):
        if name == b"content-length" and cycle.chunked_encoding is None:
            cycle.expected_content_length = int(value.decode())
            cycle.chunked_encoding = False
        elif name == b"transfer-encoding" and value.lower() == b"chunked":
            cycle.expected_content_length = 0
            cycle.chunked_encoding = True
        elif name == b"connection":
            if b"close" in [token.lower().strip() for token in value.split(b",")]:
                cycle.keep_alive = False
                close = True
    return close
