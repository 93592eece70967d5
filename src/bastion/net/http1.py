"""A pooled HTTP/1.1 client made for proxying, on asyncio protocols and httptools' parser.

Why not aiohttp or httpx: a reverse proxy needs only "write these exact bytes, stream back what
comes", and both general clients spend most of a small request's CPU on what a proxy does not
need (URL objects, header multidicts, cookie jars, redirects, decompression, per-request timer
objects). Measured on this machine (docs/architecture.md): aiohttp ~100 µs of CPU per small
request, this client a fraction of that. Parsing — the part that must be exactly right — is
httptools (llhttp, the parser of Node.js); this module only pools sockets, writes requests and
hands parsed events to the caller.
"""

from __future__ import annotations

import asyncio
import collections
import ssl as ssl_module
from collections.abc import AsyncIterator

import httptools

from bastion.http.messages import CONTENT_LENGTH_DIGITS

Headers = list[tuple[bytes, bytes]]

_HIGH_WATER = 256 * 1024  # response bytes buffered before reading from the upstream pauses
_TIMER_SLACK = 0.001  # a loop's timers may fire up to its clock resolution early
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class UpstreamConnectError(Exception):
    """The connection could not be opened (502)."""


class UpstreamTimeout(Exception):
    """Connect, read or total timeout (504)."""


class UpstreamProtocolError(Exception):
    """The upstream closed early or sent something unparsable (502)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self, pool: ConnectionPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.holds_slot = False
        self.error: Exception | None = None
        self.idle_since = 0.0  # loop time it went back to the pool
        # One timer per connection, re-armed lazily (`_wait`): not a call_later + cancel per wait.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # loop time the timer fires
        self._wait_until = 0.0  # loop time the current wait times out
        self._reset()
        self._can_write = asyncio.Event()
        self._can_write.set()

    def _reset(self) -> None:
        self.status = 0
        self.headers: Headers = []
        self.head_done = False
        self.complete = False
        self.framed = False  # Content-Length or chunked: a close before the end is a truncation
        self.coded = False  # a transfer coding besides chunked (refused: only chunked is undone)
        self.keep_alive = False
        self.received_any = False
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.expecting = False  # a request was sent and its response is not complete yet

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        if not self.expecting:
            # bytes nobody asked for (an idle pooled connection, or after the whole response):
            # they could only be read as the answer to the NEXT request, so the connection ends
            self.error = UpstreamProtocolError("the upstream sent bytes out of turn")
            self._close()
            self._wake()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = UpstreamProtocolError(f"unparsable response: {exc}")
            self._close()
        except httptools.HttpParserUpgrade:  # 101 to a request that never asks for one (hop-by-hop stripped)
            self.error = UpstreamProtocolError("the upstream switched protocols unasked")
            self._close()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        if not self.complete and self.error is None:
            if self.head_done and not self.framed:
                self.complete = True  # a body delimited by the close itself
            else:
                self.error = UpstreamProtocolError("the upstream closed the connection early")
        self.pool._forget(self)
        self._can_write.set()
        self._wake()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # -- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:  # a second response in the same read as the end of the first
            self.expecting = False
            self.error = UpstreamProtocolError("the upstream sent bytes out of turn")
            self._close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:
            return
        name = name.lower()
        if name == b"content-length":
            self.framed = True
            if len(value) > CONTENT_LENGTH_DIGITS and self.error is None:
                self.error = UpstreamProtocolError(
                    f"the upstream sent a Content-Length of more than {CONTENT_LENGTH_DIGITS} digits"
                )
                self._close()
                return
        elif name == b"transfer-encoding":
            codings = [c.strip() for c in value.lower().split(b",")]
            if b"chunked" in codings:
                self.framed = True
            if any(c and c != b"chunked" for c in codings):
                self.coded = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.complete or self.error is not None:
            return
        self.status = self.parser.get_status_code()
        if not 100 <= self.status <= 599:  # RFC 9110 15: three digits, first 1-5
            self.error = UpstreamProtocolError(f"the upstream answered with status {self.status}")
            self._close()
            return
        if self.coded:
            # `gzip, chunked`: httptools undoes only the chunking; relayed, the client would get
            # the gzip bytes as the body with no coding named (Transfer-Encoding is hop-by-hop)
            self.error = UpstreamProtocolError("the upstream used a transfer coding besides chunked")
            self._close()
            return
        if self.status >= 200:
            self.head_done = True

    def on_body(self, body: bytes) -> None:
        if self.complete or self.error is not None:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.complete or self.error is not None:
            return
        if self.status < 200:  # 1xx interim response (e.g. 103): wait for the final one
            self.headers = []
            self.framed = False
            return
        self.keep_alive = self.parser.should_keep_alive()  # valid only inside this callback
        self.complete = True
        self.expecting = False

    # -- used by the pool ---------------------------------------------------------------------
    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _close(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _wait(self, deadline: float, read_timeout: float) -> None:
        """Wait for the next parser event, at most `read_timeout` and never past `deadline`.

        The timer is the connection's: armed at the first wait and left running; when it fires
        and the wait it was armed for is over, it re-arms itself at the current wait's end (or
        stops when nothing waits). A wait that must end sooner than the armed timer re-arms it.
        So back-to-back exchanges on a kept-alive connection make no timer per wait."""
        loop = self.loop
        now = loop.time()
        timeout = min(read_timeout, deadline - now)
        if timeout <= 0:
            raise UpstreamTimeout()
        self._wait_until = until = now + timeout
        waiter = self.waiter = loop.create_future()
        if self._timer is None or self._timer_at > until:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = until
            self._timer = loop.call_at(until, self._on_timer)
        try:
            await waiter
        finally:
            self.waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self.waiter
        if waiter is None or waiter.done():  # nothing waits: the next wait arms it again
            return
        until = self._wait_until
        if self.loop.time() >= until - _TIMER_SLACK:
            waiter.set_exception(UpstreamTimeout())
        else:  # armed for an earlier wait: this one ends later
            self._timer_at = until
            self._timer = self.loop.call_at(until, self._on_timer)


class UpstreamResponse:
    """The head of a response; iterate `body()` to stream it, then `release()`."""

    __slots__ = ("status", "headers", "_conn", "_deadline", "_read_timeout", "_reusable", "_released")

    def __init__(self, conn: _Connection, deadline: float, read_timeout: float, reusable: bool) -> None:
        self.status = conn.status
        self.headers = conn.headers
        self._conn = conn
        self._deadline = deadline
        self._read_timeout = read_timeout
        self._reusable = reusable
        self._released = False

    async def body(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            while conn.chunks:
                chunk = conn.chunks.popleft()
                conn.buffered -= len(chunk)
                if conn.paused and conn.buffered < _HIGH_WATER // 2 and conn.transport is not None:
                    conn.paused = False
                    conn.transport.resume_reading()
                yield chunk
            if conn.complete:
                return
            if conn.error is not None:
                raise conn.error
            await conn._wait(self._deadline, self._read_timeout)

    def whole_body(self) -> bytes | None:
        """The whole body when all of it has arrived (taken from the connection: `body()` then
        yields nothing), else None (iterate `body()`). Lets a small answer go on as one message
        without an async generator per response."""
        conn = self._conn
        if not conn.complete:
            return None
        chunks = conn.chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        conn.buffered = 0
        if conn.paused and conn.transport is not None:
            conn.paused = False
            conn.transport.resume_reading()
        return data

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        conn = self._conn
        if self._reusable and conn.complete and not conn.closed and not conn.chunks and conn.keep_alive:
            conn._reset()
            conn.pool._put_idle(conn)
        else:
            conn._close()
            conn.pool._forget(conn)


class ConnectionPool:
    """Keep-alive connections to one origin (scheme, host, port)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl_module.SSLContext | None = None,
        max_connections: int = 200,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        total_timeout: float = 60.0,
        idle_timeout: float = 60.0,
        unsafe_reuse_within: float = 1.0,
    ) -> None:
        """`idle_timeout`: an idle connection older than this is closed, not reused.
        `unsafe_reuse_within`: a request that could not be replayed on a new connection (not
        idempotent, or a streamed body) takes only a connection idle for at most this long. An
        upstream closes idle connections at its own keep-alive timeout (gunicorn 2 s, uvicorn and
        Node.js 5 s); a request written as that close crosses it fails, and only a replayable one
        is retried. A fresh connection costs a round trip (and a TLS handshake); a lost POST
        costs the client a 502."""
        self.host = host
        self.port = port
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self.idle_timeout = idle_timeout
        self.unsafe_reuse_within = unsafe_reuse_within
        self.idle: collections.deque[_Connection] = collections.deque()
        self.slots = asyncio.Semaphore(max_connections)
        self.open_connections: set[_Connection] = set()

    def _put_idle(self, conn: _Connection) -> None:
        conn.idle_since = conn.loop.time()
        self.idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        """A connection is closed or closing: it leaves the pool and frees its slot."""
        self.open_connections.discard(conn)
        if conn.holds_slot:
            conn.holds_slot = False
            self.slots.release()
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    async def _open(self, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        timeout = min(self.connect_timeout, deadline - loop.time())
        try:
            async with asyncio.timeout(timeout):
                await self.slots.acquire()  # at most max_connections open at once
        except TimeoutError:
            raise UpstreamTimeout() from None
        try:
            async with asyncio.timeout(max(0.001, min(self.connect_timeout, deadline - loop.time()))):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, loop),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError:
            self.slots.release()
            raise UpstreamTimeout() from None
        except (OSError, ssl_module.SSLError) as exc:
            self.slots.release()
            raise UpstreamConnectError(str(exc) or type(exc).__name__) from None
        except BaseException:
            self.slots.release()
            raise
        conn.holds_slot = True
        if conn.closed:  # lost before we got it
            self._forget(conn)
            raise UpstreamConnectError("the connection closed at once")
        self.open_connections.add(conn)
        return conn

    def _idle_connection(self, max_idle: float, now: float) -> _Connection | None:
        """The most recently used live idle connection, if it has been idle at most `max_idle`
        seconds at loop time `now`. Connections idle past `idle_timeout` are closed on the way."""
        idle = self.idle
        while idle and now - idle[0].idle_since > self.idle_timeout:  # oldest first
            stale = idle.popleft()
            stale._close()
            self._forget(stale)
        while idle:
            conn = idle[-1]  # most recently used first: least likely to be timed out
            if now - conn.idle_since > max_idle:
                return None  # the rest are older still; they stay for requests that can be replayed
            idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def request(
        self, method: str, target: bytes, headers: Headers, body: bytes | AsyncIterator[bytes] | None
    ) -> UpstreamResponse:
        """Send one request; return when the response head has arrived."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + self.total_timeout
        replayable = isinstance(body, (bytes, type(None))) and method in _IDEMPOTENT
        max_idle = self.idle_timeout if replayable else self.unsafe_reuse_within
        for attempt in (1, 2):
            if attempt == 2:
                now = loop.time()
            conn = self._idle_connection(max_idle, now)
            reused = conn is not None
            if conn is None:
                conn = await self._open(deadline)
            try:
                await self._send(conn, method, target, headers, body)
                while not conn.head_done:
                    if conn.error is not None:
                        raise conn.error
                    await conn._wait(deadline, self.read_timeout)
            except UpstreamProtocolError:
                conn._close()
                self._forget(conn)
                # A kept-alive connection the upstream had just closed: try once on a new one.
                if attempt == 1 and reused and replayable and not conn.received_any:
                    continue
                raise
            except BaseException:
                conn._close()
                self._forget(conn)
                raise
            reusable = method != "HEAD"  # a HEAD response's framing would confuse the parser
            if not reusable:
                conn.complete = True
            return UpstreamResponse(conn, deadline, self.read_timeout, reusable)
        raise AssertionError("unreachable")

    async def _send(
        self, conn: _Connection, method: str, target: bytes, headers: Headers, body: bytes | AsyncIterator[bytes] | None
    ) -> None:
        transport = conn.transport
        assert transport is not None
        conn.expecting = True
        # the header lines joined in C (`name: value` each), not a Python loop per header
        head = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n", b"\r\n".join(map(b": ".join, headers))]
        if headers:
            head.append(b"\r\n")
        streamed = body is not None and not isinstance(body, bytes)
        if streamed and not any(k == b"content-length" for k, _ in headers):
            head.append(b"transfer-encoding: chunked\r\n")
            chunked = True
        else:
            chunked = False
        head.append(b"\r\n")
        if isinstance(body, bytes):
            head.append(body)
        transport.write(b"".join(head))
        if not streamed:
            return
        assert body is not None and not isinstance(body, bytes)
        async for chunk in body:
            if conn.closed:
                raise conn.error or UpstreamProtocolError("the upstream closed the connection early")
            if chunked:
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                transport.write(chunk)
            if not conn._can_write.is_set():
                await conn._can_write.wait()
        if chunked:
            transport.write(b"0\r\n\r\n")

    async def close(self) -> None:
        for conn in list(self.open_connections):
            conn._close()
            self._forget(conn)
