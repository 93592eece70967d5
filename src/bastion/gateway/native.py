"""The listener's own HTTP/1.1 protocol on httptools (session 6, issue 18 item 2).

`NativeProtocol` is `EdgeProtocol`'s successor (gateway/edge.py): the same edge protections,
refusals (byte for byte the same answers) and offender log, but an `asyncio.Protocol` of its
own on httptools' parser instead of uvicorn's `HttpToolsProtocol` and `RequestResponseCycle`.
The gateway is still called through ASGI (`app(scope, receive, send)`), uvicorn's `Server`
still drives the process (it takes the class through `Config(http=...)`, and the protocol
keeps to its contract: `server_state.connections`/`tasks`, `shutdown()` for a graceful drain,
`default_headers`), and WebSocket upgrades are still handed to uvicorn's websocket protocol.

What it does differently, and why (docs/architecture.md, "Session 6, s6-native-server"):

- one `Exchange` per request (`__slots__`, no `asyncio.Event`: `receive()` waits on a future
  made only when it has to wait, which a request whose body came with its head never does);
- flow control inline (two flags and, only when the transport's buffer is full, a future);
- one lazily re-armed timer per connection for the head deadline, the keep-alive wait and the
  lingering close: a request moves absolute deadlines (`loop.time()`), and the one timer, when
  it fires early, re-arms itself for what is due next. uvicorn plus EdgeProtocol made two
  `call_later` and two `cancel` per request;
- the response head is held and written with the first body write (one `write` per answer,
  as `CoalescingCycle` did), serialised and checked as `CoalescingCycle._write_head` does;

Semantics kept (each has a test): keep-alive and HTTP/1.0 rules, pipelining (answers in
order, reading paused while one is queued), Expect: 100-continue, bodies streamed through
`receive()` with reading paused above 64 KiB, `http.disconnect`, HEAD, chunked vs
Content-Length framing, `Connection: close`, the 400/408/413/431/503 refusals, lingering
close. `tests/unit/test_native_differential.py` feeds generated request streams to this
protocol and to `EdgeProtocol` and requires the same requests at the app and the same bytes
written.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections import deque
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl

from bastion.gateway.cycle import build_head
from bastion.gateway.edge import (
    BAD_REQUEST,
    HEADER_TIMEOUT,
    HEADERS_TOO_LARGE,
    LINGER,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_HEADERS,
    ConnectionGate,
    _problem_bytes,
    _Refused,
    client_key,
    feed_body,
    head_step,
    head_too_large,
)
from bastion.gateway.tls import tls_info
from bastion.http import ClientGone

log = logging.getLogger("uvicorn.error")  # where uvicorn's protocol logged an app's exception

HIGH_WATER = 65536  # request body bytes buffered before reading pauses (uvicorn's HIGH_WATER_LIMIT)
_JOIN_MAX = 64 * 1024  # a body larger than this goes in its own write (copying costs more)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_500 = {
    "type": "http.response.start",
    "status": 500,
    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21"), (b"connection", b"close")],
}
_500_BODY = {"type": "http.response.body", "body": b"Internal Server Error", "more_body": False}


class Exchange:
    """One request and its answer (uvicorn's `RequestResponseCycle`, slimmed)."""

    __slots__ = (
        "conn",
        "scope",
        "keep_alive",
        "waiting_for_100_continue",
        "body",
        "more_body",
        "ready",
        "waiter",
        "disconnected",
        "response_started",
        "response_complete",
        "chunked_encoding",
        "expected_content_length",
        "head",
        "done",
    )

    def __init__(self, conn: NativeProtocol, scope: dict[str, Any], keep_alive: bool, expect_100: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100
        self.body = bytearray()
        self.more_body = True
        self.ready = False  # a body piece, the body's end or a disconnect is there for receive()
        self.waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.chunked_encoding: bool | None = None
        self.expected_content_length = 0
        self.head: bytes | None = None  # the response head, held until the first body write
        self.done = False  # the app returned: a late send() no longer starts the next request

    def wake(self) -> None:
        self.ready = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # the app -----------------------------------------------------------------------------
    async def run(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except ClientGone:  # the app streamed on after the client left: nothing to answer
            pass
        except BaseException as exc:
            log.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self.send(_500)
                await self.send(_500_BODY)
            else:
                self.conn.close()
        else:
            if result is not None:
                log.error("ASGI callable should return None, but returned '%s'.", result)
                self.conn.close()
            elif not self.response_started and not self.disconnected:
                log.error("ASGI callable returned without starting response.")
                await self.send(_500)
                await self.send(_500_BODY)
            elif not self.response_complete and not self.disconnected:
                log.error("ASGI callable returned without completing response.")
                self.conn.close()
        finally:
            self.done = True

    async def receive(self) -> dict[str, Any]:
        conn = self.conn
        if self.waiting_for_100_continue and not conn.transport.is_closing():
            conn.transport.write(_CONTINUE)
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            if conn.read_paused:
                conn.resume_reading()
            if not self.ready:
                waiter = self.waiter = conn.loop.create_future()
                try:
                    await waiter
                finally:
                    self.waiter = None
            self.ready = False
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body = self.body
        self.body = bytearray()
        return {"type": "http.request", "body": bytes(body), "more_body": self.more_body}

    async def send(self, message: Any) -> None:
        conn = self.conn
        if conn.write_paused and not self.disconnected:
            await conn.drain()
        if self.disconnected:
            if message.get("more_body") and message["type"] == "http.response.body":
                raise ClientGone  # an answer still streaming: its relay stops reading the upstream
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{kind}'.")
            self._write_head(message["status"], message.get("headers") or ())
            return
        if self.response_complete:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent, after response already completed.")
        if kind != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
            data = b""
        elif self.chunked_encoding:
            if body:
                data = b"%x\r\n%b\r\n" % (len(body), body)
                if not more_body:
                    data += b"0\r\n\r\n"
            else:
                data = b"0\r\n\r\n" if not more_body else b""
        else:
            n = len(body)
            if n > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= n
            data = body
        head = self.head
        if head is not None:
            self.head = None
            if len(data) <= _JOIN_MAX:
                data = head + data
            else:
                conn.transport.write(head)
        if data:
            conn.transport.write(data)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.wake()
            if not self.keep_alive:
                conn.transport.close()
            if not self.done:
                conn.on_response_complete()

    def flush(self) -> None:
        """The end of the loop's turn in which the head was sent: write it if no body came."""
        head = self.head
        if head is not None:
            self.head = None
            if not self.conn.transport.is_closing():
                self.conn.transport.write(head)

    def _write_head(self, status: int, headers: Any) -> None:
        """`cycle.build_head` (shared with the uvicorn layer), held for the first body write."""
        self.head = build_head(self, status, headers, self.conn.server_state.default_headers)
        self.conn.loop.call_soon(self.flush)


class NativeProtocol(asyncio.Protocol):
    """A listener's HTTP/1.1 connection. Subclassed once per listener by `edge.protocol_for`,
    which binds `gate`."""

    gate: ClassVar[ConnectionGate]

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # answer a pipelined first request
        self.ws_protocol_class = config.ws_protocol_class
        self.root_path = config.root_path
        self.asgi = {"version": config.asgi_version, "spec_version": "2.3"}
        self.limit_concurrency = config.limit_concurrency
        self.app_state = app_state
        self.server_state = server_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.limits = self.gate.limits
        self.keepalive = float(config.timeout_keep_alive)  # (the listener's keepalive_timeout)
        self.transport: Any = None
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.tls_info: dict[str, Any] | None = None
        self.pipeline: deque[tuple[Exchange, Any]] = deque()
        self.read_paused = False
        self.write_paused = False
        self._drainers: list[asyncio.Future[None]] = []
        # the current head
        self.url = b""
        self.scope: dict[str, Any] = {}
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_100_continue = False
        self.upgrading = False
        self.cycle: Exchange | None = None  # the newest request (queued when pipelined)
        self.running: Exchange | None = None  # the one being answered
        # the edge
        self._key: str | None = None  # set once the gate admitted this connection
        self._refused = False
        self._lingering = False
        self._head_open = True  # waiting for, or reading, a request head
        self._head_seen = False  # a byte of the current head arrived
        self._head_bytes = 0
        self._head_parsed = 0  # the current head's request line and header lines, as parsed
        self._body_raw = self._body_seen = self._chunks = 0  # the body's bytes fed, delivered; chunks
        self._messages = 0
        self._refusal: tuple[tuple[int, str], str] | None = None
        self._send_timer: Any = None
        # the one timer: absolute deadlines (loop.time()), None when not running
        self._head_due: float | None = None
        self._idle_due: float | None = None
        self._linger_due: float | None = None
        self._timer: Any = None
        self._timer_at = 0.0

    # connection --------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.connections.add(self)
        self.transport = transport
        self.server = get_local_addr(transport)
        self.client = get_remote_addr(transport)
        if is_ssl(transport):
            self.scheme = "https"
            self.tls_info = tls_info(transport)
        key = client_key(self.client[0] if self.client else None)
        if self.gate.refuses(key, self._where):
            self._refused = True
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        self._key = key
        self._head_due = self.loop.time() + self.limits.header_timeout
        self._arm(self._head_due)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._head_due = self._idle_due = self._linger_due = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self._key is not None:
            self.gate.release(self._key)
            self._key = None
        # the request being answered learns of it too, not only the newest (a pipelined one queued
        # behind it): else its answer goes on being written into the closed transport
        for cycle in (self.running, self.cycle):
            if cycle is not None:
                if not cycle.response_complete:
                    cycle.disconnected = True
                cycle.wake()
        self._wake_drainers()
        if exc is None:
            self.transport.close()
        self.parser = None  # type: ignore[assignment]

    def eof_received(self) -> None:
        pass

    def close(self) -> None:
        self.transport.close()

    def _where(self) -> str:
        return "%s:%s" % self.server if self.server else "?"

    def _idle(self) -> bool:
        """No request of this connection is being answered (a response may be written)."""
        return self.cycle is None or self.cycle.response_complete

    # the one timer -----------------------------------------------------------------------
    def _arm(self, due: float) -> None:
        """Make sure the timer fires by `due` (a later timer is replaced, an earlier one kept:
        it re-arms itself when it fires)."""
        timer = self._timer
        if timer is not None:
            if self._timer_at <= due:
                return
            timer.cancel()
        loop = self.loop
        self._timer_at = due
        # (at least 1 ms: uvloop's clock counts milliseconds, a shorter delay could fire early again)
        self._timer = loop.call_later(max(0.001, due - loop.time()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.loop.time()
        linger = self._linger_due
        if linger is not None and now >= linger:
            self._linger_due = None
            self.transport.close()
            return
        head = self._head_due
        if head is not None and now >= head:
            self._head_due = None
            self._head_timed_out()
            return
        idle = self._idle_due
        if idle is not None and now >= idle:
            self._idle_due = None
            if not self.transport.is_closing():
                self.transport.close()
            return
        dues = [d for d in (linger, head, idle) if d is not None]
        if dues:
            self._arm(min(dues))

    def _head_timed_out(self) -> None:
        if self.transport.is_closing():
            return
        if not self._head_seen and self._idle():
            self.transport.close()  # nothing was sent: close quietly, like an idle keep-alive
            return
        self.gate.event(
            "client_header_timeout",
            self._key or "",
            "listener %s: %s did not send a request head within client_header_timeout (%.3gs), closed",
            self._where(),
            self._key,
            self.limits.header_timeout,
        )
        self._close_with(HEADER_TIMEOUT)

    def _close_with(self, response: bytes) -> None:
        """EdgeProtocol._close_with: answer and close lingering, or, when a response is still
        being sent, stop reading and close once it is done."""
        self._lingering = True  # nothing more is parsed on this connection
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started or not cycle.more_body:
                cycle.keep_alive = False
                self.pause_reading()
                return
            if cycle is not self.running:
                # the malformed body is a pipelined request's, queued behind answers still to
                # come: it is dropped unanswered (never started, nothing forwarded), and the
                # connection closes after the last of those answers, as for a bad head behind
                # one (an immediate 400 would be read as the answer to the first request)
                self.pipeline = deque(entry for entry in self.pipeline if entry[0] is not cycle)
                last = self.pipeline[0][0] if self.pipeline else self.running
                if last is not None:
                    last.keep_alive = False
                self.pause_reading()
                return
            # the error is in the body of the request being handled (a malformed chunk)
            cycle.disconnected = True
            cycle.wake()
        if cycle is not None:
            cycle.flush()
        self.transport.write(response)
        self._head_due = self._idle_due = None
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.resume_reading()
        self._linger_due = self.loop.time() + LINGER
        self._arm(self._linger_due)

    # flow control ------------------------------------------------------------------------
    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        """The write buffer is full: the client has `send_timeout` to read enough of it."""
        self.write_paused = True
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        self._wake_drainers()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _wake_drainers(self) -> None:
        self.write_paused = False
        drainers, self._drainers = self._drainers, []
        for waiter in drainers:
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        waiter = self.loop.create_future()
        self._drainers.append(waiter)
        await waiter

    def _send_timed_out(self) -> None:
        self._send_timer = None
        self.gate.event(
            "client_send_timeout",
            self._key or "",
            "listener %s: %s left a response unread for client_send_timeout (%.3gs), connection dropped",
            self._where(),
            self._key,
            self.limits.send_timeout,
        )
        self.transport.abort()

    # data --------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._refused or self._lingering or self.parser is None or self.transport.is_closing():
            return  # refused or answered: what still arrives is dropped
        self._idle_due = None  # the keep-alive wait is over
        if self._head_due is None and (self.cycle is None or self.cycle.response_complete):
            # the next head's clock starts now; also the end of a body whose request was answered
            # early (a body trickled behind an early answer is held to the head deadline too)
            self._head_due = self.loop.time() + self.limits.header_timeout
            self._arm(self._head_due)
        if self._head_open:
            self._head_seen = True
        parser = self.parser
        limit = self.limits.max_header_bytes
        step = head_step(limit)
        try:
            # a read that fits in what is still allowed and in one step is fed whole (the loop
            # below would take it as one slice too), without the memoryview
            if len(data) <= step:
                if self._head_open:
                    if self._head_bytes + len(data) < limit:
                        before = self._messages
                        parser.feed_data(data)
                        if self._head_open and before == self._messages:
                            self._head_bytes += len(data)
                        return
                else:
                    feed_body(self, data)
                    return
            view = memoryview(data)
            while view:
                if self._head_open:
                    room = min(limit - self._head_bytes, step)
                    piece, view = view[:room], view[room:]
                    before = self._messages
                    parser.feed_data(piece)
                    if self._head_open and before == self._messages:
                        self._head_bytes += len(piece)
                        if self._head_bytes >= limit:  # a complete head would have ended by now
                            self._refuse_head(
                                HEADERS_TOO_LARGE, f"request head larger than max_header_bytes ({limit} bytes)"
                            )
                            return
                else:  # a body; slices bound what a pipelined head behind it can hide (head_step)
                    piece, view = view[:step], view[step:]
                    if not feed_body(self, piece):
                        return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self.gate.offenders.note(
                    "unsupported_upgrade",
                    self._key or "",
                    "listener %s: %s asked for an unsupported protocol upgrade (answered as plain HTTP)",
                    self._where(),
                    self._key,
                )
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse_head(*self._refusal)
                return
            self.gate.event(
                "bad_request",
                self._key or "",
                "listener %s: %s sent a request that is not valid HTTP/1.1, answered 400",
                self._where(),
                self._key,
            )
            self._close_with(BAD_REQUEST)

    def _refuse_head(self, what: tuple[int, str], detail: str) -> None:
        status, type_ = what
        self._head_due = None
        self.gate.event(
            type_, self._key or "", "listener %s: %s: %s, answered %d", self._where(), self._key, detail, status
        )
        self._close_with(_problem_bytes(status, type_, detail, "Request Header Fields Too Large"))

    # upgrades ----------------------------------------------------------------------------
    def _get_upgrade(self) -> bytes | None:
        connection: list[bytes] = []
        upgrade = None
        for name, value in self.headers:
            if name == b"connection":
                connection = [token.lower().strip() for token in value.split(b",")]
            if name == b"upgrade":
                upgrade = value.lower()
        if b"upgrade" in connection:
            return upgrade
        return None

    def _should_upgrade(self) -> bool:
        return self.ws_protocol_class is not None and self._get_upgrade() == b"websocket"

    def handle_websocket_upgrade(self) -> None:
        """uvicorn's hand-over to its websocket protocol. The connection keeps its place in the
        gate until the websocket protocol loses it (as in `EdgeProtocol`)."""
        self._head_due = self._idle_due = None
        key, self._key = self._key, None
        self.connections.discard(self)
        output = [self.scope["method"].encode(), b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.scope["headers"]:
            output += [name, b": ", value, b"\r\n"]
        output.append(b"\r\n")
        try:
            protocol = self.ws_protocol_class(
                config=self.config, server_state=self.server_state, app_state=self.app_state
            )
            protocol.connection_made(self.transport)
            protocol.data_received(b"".join(output))
            self.transport.set_protocol(protocol)
        except BaseException:
            self._key = key
            raise
        if key is None:
            return
        ws = self.transport.get_protocol()
        if ws is self:
            self._key = key
            return
        lost = ws.connection_lost
        gate = self.gate

        def connection_lost(exc: Exception | None) -> None:
            gate.release(key)
            lost(exc)

        ws.connection_lost = connection_lost

    # parser callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self._head_parsed = 0
        self._body_raw = self._body_seen = self._chunks = 0
        self.expect_100_continue = False
        self.upgrading = False
        self.headers = []
        self._head_seen = True
        if self._head_due is None:
            self._head_due = self.loop.time() + self.limits.header_timeout  # a pipelined head
            self._arm(self._head_due)

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._head_parsed += len(url)
        if self._head_parsed >= self.limits.max_header_bytes:
            head_too_large(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_parsed += len(name) + len(value) + 2  # (the shortest line: "n:v\n")
        if self._head_parsed >= self.limits.max_header_bytes:
            head_too_large(self)
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        headers = self.headers
        headers.append((name, value))
        if len(headers) > self.limits.max_header_count:
            self._refusal = (
                TOO_MANY_HEADERS,
                f"more than max_header_count ({self.limits.max_header_count}) header lines",
            )
            raise _Refused

    def on_headers_complete(self) -> None:
        self._head_due = None
        self._head_open = False
        self._head_parsed = 0  # (a trailer section is counted on its own)
        parser = self.parser
        method = parser.get_method().decode("ascii")
        headers = self.headers
        if parser.should_upgrade() and self._should_upgrade():
            self.upgrading = True
            self.scope = {"method": method, "headers": headers}  # what the hand-over writes again
            return
        parsed = httptools.parse_url(self.url)
        raw_path = parsed.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root = self.root_path
        if root:
            path = root + path
            raw_path = root.encode("ascii") + raw_path
        # the scope in one literal (uvicorn built it in on_message_begin and added five keys here)
        scope = self.scope = {
            "type": "http",
            "asgi": self.asgi,
            "http_version": parser.get_http_version(),
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": root,
            "headers": headers,
            "state": self.app_state.copy(),
            "method": method,
            "path": path,
            "raw_path": raw_path,
            "query_string": parsed.query or b"",
        }
        if self.tls_info is not None:
            scope["extensions"] = {"tls": self.tls_info}
        http_version = scope["http_version"]
        app = self.app
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency or len(self.tasks) >= self.limit_concurrency
        ):
            from uvicorn.protocols.http.flow_control import service_unavailable

            log.warning("Exceeded concurrency limit.")
            app = service_unavailable
        existing = self.cycle
        cycle = self.cycle = Exchange(
            self, scope, http_version != "1.0" and parser.should_keep_alive(), self.expect_100_continue
        )
        if existing is None or existing.response_complete:
            self._start(cycle, app)
        else:  # pipelined: queued until the answers before it are out
            self.pause_reading()
            self.pipeline.appendleft((cycle, app))

    def _start(self, cycle: Exchange, app: Any) -> None:
        self.running = cycle
        task = self.loop.create_task(cycle.run(app))
        task.add_done_callback(self.tasks.discard)  # (a task cancelled before it ran never runs a finally)
        self.tasks.add(task)

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_body(self, body: bytes) -> None:
        self._body_seen += len(body)
        cycle = self.cycle
        if self.upgrading or cycle is None or cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER:
            self.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        self._head_open = True
        self._head_seen = False
        self._head_bytes = 0
        self._messages += 1
        cycle = self.cycle
        if self.upgrading or cycle is None or cycle.response_complete:
            return
        cycle.more_body = False
        cycle.wake()

    def on_response_complete(self) -> None:
        """An answer is out: the next pipelined request starts, or the keep-alive wait."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_due = None
        self.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start(cycle, app)
        else:
            self._idle_due = self.loop.time() + self.keepalive
            self._arm(self._idle_due)

    def shutdown(self) -> None:
        """Called by uvicorn's server for a graceful shutdown."""
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()
        else:
            self.cycle.keep_alive = False
