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
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

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
            await super().send(message)
            return
        transport: HeadFirst = self.transport  # type: ignore[assignment]
        transport.capturing = True
        try:
            await super().send(message)
        finally:
            transport.capturing = False
