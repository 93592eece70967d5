"""Connection-level limits on every listener: slow and greedy clients.

What this enforces, per listener (keys in `ListenerConfig`):

- `client_header_timeout`: the whole request head must arrive within N seconds, counted from the
  connection (first request) or from the first byte after a keep-alive wait. The deadline is
  absolute: trickled bytes never extend it (nginx `client_header_timeout`, Envoy
  `request_headers_timeout`). When it passes: 408 problem+json if part of a head arrived, a
  silent close if nothing did.
- `keepalive_timeout`: the idle time between requests (uvicorn's own `timeout_keep_alive`).
- `client_send_timeout`: a client that leaves a response unread (the transport's write buffer
  stays above its high-water mark) that long is dropped (nginx `send_timeout`); uvicorn waits
  for the buffer to drain without any limit, holding the connection and, through flow control,
  the upstream connection behind it.
- `max_connections`, `max_connections_per_ip`: connections over a cap are refused as soon as
  they are accepted (a minimal 503 problem+json, then closed), before anything is read.
- `max_header_count`, `max_header_bytes`: 431 problem+json for a head with too many header lines
  or too many bytes (request line + headers).
- Each kind of refusal is logged once per client address per minute (with the number refused
  since the last line), not once per connection, so an attacker cannot flood the log either.

Why written here rather than taken from the libraries (uvicorn 0.54, httptools 0.9):

- uvicorn's `timeout_keep_alive` is armed only after a response and cancelled by any byte; it
  never covers the first request nor a head that trickles in, so a client sending a byte now and
  then holds the connection forever. It is used for the keep-alive wait only.
- uvicorn's `limit_concurrency` is checked when a request's headers are complete, so a client
  that never completes its headers is never counted against it, and it has no per-address
  notion. `h11_max_incomplete_event_size` exists only for the h11 protocol, not httptools.
- httptools (llhttp) has no limit on header count or size, and httptools accumulates a header
  name/value inside the parser until the line ends, so a single endless header is invisible to
  the protocol's callbacks. The head's bytes are therefore counted as they are fed to the
  parser, in slices no larger than what is still allowed, so the limit is exact for a head that
  starts a read. httptools cannot say where in a slice a message began, so a pipelined head that
  begins in the middle of a slice (behind another request in the same read) is counted from the
  next slice on: it can pass the limit by less than one slice, i.e. be at most twice
  `max_header_bytes` (the number of header lines is still exact).

The gate is per listener (the protocol class is made per listener and carries it). Client
addresses are the TCP peer: the gateway's trusted-proxy (X-Forwarded-For) logic applies to
requests, not connections. IPv6 peers are grouped by /64 (what one subscriber usually gets);
IPv4-mapped IPv6 addresses count as their IPv4 address.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from bastion.gateway.cycle import CoalescingCycle, HeadFirst
from bastion.gateway.tls import TlsHttpToolsProtocol
from bastion.http import problem
from bastion.observability import REGISTRY

log = logging.getLogger("bastion.edge")


@dataclass(frozen=True)
class EdgeLimits:
    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    send_timeout: float = 60.0
    max_connections: int = 10_000
    max_per_client: int | None = 256
    max_header_count: int = 100
    max_header_bytes: int = 32768


def client_key(host: str | None) -> str:
    """The address a per-client cap counts: IPv4 as is (also IPv4-mapped IPv6), IPv6 by /64."""
    if not host:
        return ""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class OffenderLog:
    """Log each (kind, client) once per `interval` seconds, with the count of the ones not logged.

    Bounded: the oldest entries are forgotten past `max_keys` (a forgotten offender is logged again)."""

    def __init__(
        self,
        logger: logging.Logger = log,
        interval: float = 60.0,
        max_keys: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.clock = clock
        self.interval = interval
        self.max_keys = max_keys
        self._seen: OrderedDict[tuple[str, str], list[float]] = OrderedDict()

    def note(self, kind: str, client: str, message: str, *args: Any) -> None:
        now = self.clock()
        key = (kind, client)
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return
        if entry is not None and entry[1]:
            message += " (%d more from this client since the last report)"
            args = (*args, int(entry[1]))
        else:
            message += " (further ones from this client are counted, not logged, for %ds)"
            args = (*args, int(self.interval))
        self.logger.warning(message, *args)
        self._seen[key] = [now, 0]
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)


class ConnectionGate:
    """Counts a listener's open connections, in total and per client key, and what its
    connections were refused or closed for (`events`, exported as metrics)."""

    def __init__(self, limits: EdgeLimits, offenders: OffenderLog | None = None) -> None:
        self.limits = limits
        self.offenders = offenders or OffenderLog()
        self.total = 0
        self.per_client: dict[str, int] = {}
        self.events: dict[str, int] = {}  # kind -> count since start
        self.name = ""  # the listener's address, once bound

    def event(self, kind: str, client: str, message: str, *args: Any) -> None:
        self.events[kind] = self.events.get(kind, 0) + 1
        self.offenders.note(kind, client, message, *args)

    def admit(self, key: str) -> str | None:
        """Count a new connection, or say why it is refused ("total" or "client")."""
        if self.total >= self.limits.max_connections:
            return "total"
        n = self.per_client.get(key, 0)
        if self.limits.max_per_client is not None and n >= self.limits.max_per_client:
            return "client"
        self.total += 1
        self.per_client[key] = n + 1
        return None

    def refuses(self, key: str, where: Callable[[], str]) -> bool:
        """`admit`, with a refusal counted and logged (once per client per minute) under the
        listener `where()` names: True when the connection is refused. The one admission step of
        both server layers."""
        why = self.admit(key)
        if why is None:
            return False
        if why == "total":
            self.event(
                "max_connections",
                "*",
                "listener %s: max_connections (%d) reached, refusing new connections",
                where(),
                self.limits.max_connections,
            )
        else:
            self.event(
                "max_connections_per_ip",
                key,
                "listener %s: %s holds max_connections_per_ip (%d) connections, refusing more",
                where(),
                key,
                self.limits.max_per_client,
            )
        return True

    def release(self, key: str) -> None:
        self.total -= 1
        n = self.per_client.get(key, 0) - 1
        if n > 0:
            self.per_client[key] = n
        else:
            self.per_client.pop(key, None)


def _problem_bytes(
    status: int, type_: str, detail: str, title: str | None = None, extra_headers: tuple[tuple[bytes, bytes], ...] = ()
) -> bytes:
    resp = problem(status, type_, detail, extra={"title": title} if title else None)
    phrase = (title or "").encode() or b"Error"
    head = [b"HTTP/1.1 %d %s\r\n" % (status, phrase)]
    for name, value in (*resp.headers, *extra_headers, (b"connection", b"close")):
        head.append(name + b": " + value + b"\r\n")
    return b"".join(head) + b"\r\n" + resp.body


# Written once: these are sent on a connection that is about to be closed.
TOO_MANY_CONNECTIONS = _problem_bytes(
    503,
    "too-many-connections",
    "this server holds too many connections; retry later",
    "Service Unavailable",
    ((b"retry-after", b"1"),),
)
HEADER_TIMEOUT = _problem_bytes(408, "header-timeout", "the request head did not arrive in time", "Request Timeout")
BAD_REQUEST = _problem_bytes(400, "bad-request", "the request is not valid HTTP/1.1", "Bad Request")
TOO_MANY_HEADERS = 431, "too-many-headers"
HEADERS_TOO_LARGE = 431, "headers-too-large"


LINGER = 2.0  # seconds a refused request's connection keeps draining what the client still sends


class _Refused(Exception):
    """Raised from a parser callback to stop httptools at the offending header."""


def head_step(limit: int) -> int:
    """The most bytes fed to the parser at once. httptools does not say where in a piece a
    message ended, so a head that begins in the piece ending the previous message is counted
    from the next piece on (and line by line as parsed, which leaves out white space before a
    value): fed in pieces of an eighth of `max_header_bytes`, such a head passes with at most
    that eighth more than the limit. (A read the size of a usual head is still fed whole.)"""
    return max(limit >> 3, 64)


def feed_body(protocol: Any, piece: bytes | memoryview) -> bool:
    """Feed `piece` of a request body to the parser; False when the connection was refused.
    What is not body in it (chunk sizes and extensions, the trailer section) is held to
    `max_header_bytes` plus 32 bytes a chunk: httptools keeps a trailer line whole until it ends,
    adding piece by piece (a 1 MiB line went unanswered, at a cost that grows with its square)."""
    before = protocol._messages
    protocol.parser.feed_data(piece)
    if before == protocol._messages and not protocol._head_open:
        protocol._body_raw += len(piece)
        limit = protocol.limits.max_header_bytes
        if protocol._body_raw - protocol._body_seen > limit + 32 * protocol._chunks:
            protocol._refuse_head(
                HEADERS_TOO_LARGE, f"chunk framing or trailer section larger than max_header_bytes ({limit} bytes)"
            )
            return False
    return True


def head_too_large(protocol: Any) -> None:
    """Refuse the head being parsed (from a parser callback of either server layer) with 431.
    Also counted as parsed: data_received counts a head's raw bytes only from the read after the
    one that ended the previous message (httptools does not say where in a read a message ended),
    so a head starting behind a body is counted line by line in `on_url` and `on_header` too."""
    limit = protocol.limits.max_header_bytes
    protocol._refusal = (HEADERS_TOO_LARGE, f"request head larger than max_header_bytes ({limit} bytes)")
    raise _Refused


class EdgeProtocol(TlsHttpToolsProtocol):
    """uvicorn's httptools protocol (with the TLS extension) plus the limits above.

    Since session 6 the listeners run `NativeProtocol` (gateway/native.py) by default; this one
    is `server: uvicorn`, and the oracle of native's differential test.
    Subclassed once per listener by `protocol_for`, which binds `gate`."""

    gate: ClassVar[ConnectionGate]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = self.gate.limits
        self._key: str | None = None  # set once the gate admitted this connection
        self._refused = False
        self._lingering = False
        self._head_timer: Any = None
        self._head_open = True  # waiting for, or reading, a request head
        self._head_seen = False  # a byte of the current head arrived
        self._head_bytes = 0
        self._head_parsed = 0  # the current head's request line and header lines, as parsed
        self._body_raw = self._body_seen = self._chunks = 0  # the body's bytes fed, delivered; chunks
        self._messages = 0
        self._refusal: tuple[tuple[int, str], str] | None = None
        self._send_timer: Any = None
        self._head_first: HeadFirst | None = None
        self._running: Any = None  # the cycle whose task was started last (`_start_asgi_task`)

    # connection --------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        key = client_key(self.client[0] if self.client else None)
        if self.gate.refuses(key, self._where):
            self._refused = True
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        self._key = key
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self._key is not None:
            self.gate.release(self._key)
            self._key = None
        # the request being answered learns of it too, not only the newest (uvicorn marks only
        # `self.cycle`, which is a queued pipelined request then): else its answer goes on being
        # written into the closed transport, one asyncio warning per write
        running = self._running
        if running is not None and running is not self.cycle:
            if not running.response_complete:
                running.disconnected = True
            running.message_event.set()
        super().connection_lost(exc)

    def _where(self) -> str:
        return "%s:%s" % self.server if self.server else "?"

    # head deadline -----------------------------------------------------------------------
    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _idle(self) -> bool:
        """No request of this connection is being answered (a response may be written)."""
        return self.cycle is None or self.cycle.response_complete

    def _head_timed_out(self) -> None:
        self._head_timer = None
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
        """Answer and close, or, when a response is still being sent (a pipelined head went
        wrong behind it), stop reading and close once that response is done.

        The close lingers (as nginx's `lingering_close` does): our side is shut for writing and
        what the client still sends is read and dropped for up to LINGER seconds. Closing a socket
        with unread data makes the kernel send a reset, which can destroy the answer before the
        client reads it; a client still sending an oversized head is exactly that case."""
        self._lingering = True  # nothing more is parsed on this connection
        if not self._idle():
            cycle = self.cycle
            if cycle.response_started or not cycle.more_body:
                cycle.keep_alive = False
                self.flow.pause_reading()
                return
            if cycle is not self._running:
                # the malformed body is a pipelined request's, queued behind answers still to
                # come: it is dropped unanswered (never started, nothing forwarded) and the
                # connection closes after the last of those answers (an immediate 400 would be
                # read as the answer to the first request; NativeProtocol does the same)
                self.pipeline = deque(entry for entry in self.pipeline if entry[0] is not cycle)
                last = self.pipeline[0][0] if self.pipeline else self._running
                if last is not None:
                    last.keep_alive = False
                self.flow.pause_reading()
                return
            # the error is in the body of the request being handled (a malformed chunk): that
            # request is over — its reader sees a disconnect, nothing the app sends goes out — and
            # the client gets the 400 now, not a body timeout later
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(response)
        self._cancel_head_timer()
        self._unset_keepalive_if_required()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self._head_timer = self.loop.call_later(LINGER, self.transport.close)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        self._running = cycle  # the cycle whose answer is being made (later ones wait in `pipeline`)
        super()._start_asgi_task(cycle, app)

    def handle_websocket_upgrade(self) -> None:
        """The connection moves to uvicorn's websocket protocol and leaves this one, which will
        not see its end: the head deadline stops, and the connection keeps its place in the
        gate (an open socket holds a file descriptor like any connection, so `max_connections`
        and `max_connections_per_ip` count it) until the websocket protocol loses it."""
        self._cancel_head_timer()
        key, self._key = self._key, None
        try:
            super().handle_websocket_upgrade()
        except BaseException:
            self._key = key
            raise
        if key is None:
            return
        ws = self.transport.get_protocol()
        if ws is self:  # not handed over after all: our own connection_lost releases it
            self._key = key
            return
        lost = ws.connection_lost
        gate = self.gate

        def connection_lost(exc: Exception | None) -> None:
            gate.release(key)
            lost(exc)

        ws.connection_lost = connection_lost  # type: ignore[method-assign]

    # send deadline -----------------------------------------------------------------------
    def pause_writing(self) -> None:
        """The write buffer is full: the client has that long to read enough of it."""
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timed_out(self) -> None:
        self._send_timer = None  # (a closing transport too: close() would wait for the flush forever)
        self.gate.event(
            "client_send_timeout",
            self._key or "",
            "listener %s: %s left a response unread for client_send_timeout (%.3gs), connection dropped",
            self._where(),
            self._key,
            self.limits.send_timeout,
        )
        self.transport.abort()  # nothing more can be written: the buffer is dropped with it

    # data --------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._refused or self._lingering or self.parser is None or self.transport.is_closing():
            return  # refused or answered: what still arrives is dropped
        self._unset_keepalive_if_required()
        if self._head_timer is None and self._idle():
            self._arm_head_timer()  # after a keep-alive wait: the next head's clock starts now
        if self._head_open:
            self._head_seen = True
        view = memoryview(data)
        limit = self.limits.max_header_bytes
        step = head_step(limit)
        try:
            while view:
                if self._head_open:
                    room = min(limit - self._head_bytes, step)
                    piece, view = view[:room], view[room:]
                    before = self._messages
                    self.parser.feed_data(piece)
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
            else:  # uvicorn logs this for every such request: once per client per minute here
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
        self._cancel_head_timer()
        self.gate.event(
            type_, self._key or "", "listener %s: %s: %s, answered %d", self._where(), self._key, detail, status
        )
        self._close_with(_problem_bytes(status, type_, detail, "Request Header Fields Too Large"))

    # parser callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_parsed = 0
        self._body_raw = self._body_seen = self._chunks = 0

    def on_body(self, body: bytes) -> None:
        self._body_seen += len(body)
        super().on_body(body)

    def on_chunk_header(self) -> None:
        self._chunks += 1
        self._head_seen = True
        if self._head_timer is None:
            self._arm_head_timer()  # a pipelined head that began in the middle of a read

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._head_parsed += len(url)
        if self._head_parsed >= self.limits.max_header_bytes:
            head_too_large(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's own on_header, inlined (one Python call per header line, not two)
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
        self._cancel_head_timer()
        self._head_open = False
        self._head_parsed = 0  # (a trailer section is counted on its own)
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before and type(cycle) is RequestResponseCycle:  # (not an upgrade)
            cycle.__class__ = CoalescingCycle  # its task has not run yet: it sends one write per answer
            if self._head_first is None:  # one per connection (pipelined answers go one at a time)
                self._head_first = HeadFirst(self.transport, self.loop)
            cycle.transport = self._head_first  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_open = True
        self._head_seen = False
        self._head_bytes = 0
        self._messages += 1


def protocol_for(limits: EdgeLimits, name: str = "EdgeProtocol", server: str = "native") -> type[Any]:
    """A protocol class for one listener, with its own connection gate: `NativeProtocol`
    (gateway/native.py, the default) or, with `server="uvicorn"`, `EdgeProtocol` on uvicorn's."""
    if server == "uvicorn":
        return type(name, (EdgeProtocol,), {"gate": ConnectionGate(limits)})
    from bastion.gateway.native import NativeProtocol

    return type(name, (NativeProtocol,), {"gate": ConnectionGate(limits)})


class EdgeCollector(Collector):
    """The gates' counts for Prometheus, read at scrape time (nothing per connection)."""

    def __init__(self) -> None:
        self.gates: Callable[[], list[ConnectionGate]] | None = None

    def collect(self) -> Iterator[Any]:
        if self.gates is None:
            return
        open_ = GaugeMetricFamily("bastion_connections_open", "Client connections held", labels=["listener"])
        events = CounterMetricFamily(
            "bastion_connections_limited",
            "Client connections refused or closed by the connection limits",
            labels=["listener", "reason"],
        )
        for gate in self.gates():
            open_.add_metric([gate.name], gate.total)
            for kind, n in sorted(gate.events.items()):
                events.add_metric([gate.name, kind], n)
        yield open_
        yield events


EDGE_COLLECTOR = EdgeCollector()
REGISTRY.register(EDGE_COLLECTOR)
