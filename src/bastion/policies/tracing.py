"""OpenTelemetry traces (optional extra: `pip install 'bastion-gateway[otel]'`).

A span per request (`SERVER`), a child span per policy that runs in the request phase, and a
child span (`CLIENT`) for the upstream call, whose context goes to the upstream as W3C
`traceparent` (and `tracestate`). An incoming `traceparent` is continued when
`trust_incoming` is on (the default), otherwise a new trace starts and the client's header is
dropped. Spans carry the route, method, status and the refusing policy — never headers, query
strings or bodies.
"""

from __future__ import annotations

import atexit
import logging
import marshal
import os
import random
import re
import subprocess
import sys
import threading
from collections import deque
from time import time_ns as _time_ns
from typing import Any, ClassVar, Literal

from pydantic import Field

from bastion.http import Request, Response
from bastion.pipeline import Context, Policy, PolicyConfig
from bastion.trace_export import Exporter, Readables, _hashed, resource_and_scope  # noqa: F401 (_hashed: for tests)

log = logging.getLogger("bastion.tracing")
_providers: dict[tuple[Any, ...], SpanSink] = {}
_getrandbits = random.getrandbits
_random = random.random
_CONTEXT_HEADERS = (b"traceparent", b"tracestate")


class TracingConfig(PolicyConfig):
    exporter: Literal["otlp", "console", "memory"] = Field(
        "otlp", description="otlp (HTTP/protobuf to `endpoint`), console, or memory (tests)."
    )
    endpoint: str = Field("http://127.0.0.1:4318/v1/traces", description="OTLP/HTTP traces endpoint.")
    service_name: str = Field("bastion", description="service.name of the spans.")
    sample_ratio: float = Field(
        1.0, ge=0, le=1, description="Share of new traces recorded (parents decide for continued ones)."
    )
    trust_incoming: bool = Field(True, description="Continue a client's traceparent (off: start a new trace).")
    policy_spans: bool = Field(True, description="A child span per policy.")
    exporter_process: bool = Field(
        True,
        description="otlp: encode and send the spans in a separate exporter process (one per worker), "
        "off the serving process's core; off: a thread of the serving process does it.",
    )


def provider_for(config: TracingConfig) -> SpanSink:
    """One span sink per exporter setting for the process (reloads reuse it)."""
    key = (config.exporter, config.endpoint, config.service_name, config.exporter_process)
    sink = _providers.get(key)
    if sink is None:
        try:
            import opentelemetry.sdk.trace  # noqa: F401
        except ImportError:
            raise ValueError("tracing needs OpenTelemetry: pip install 'bastion-gateway[otel]'") from None
        sink = _providers[key] = SpanSink(config)
    return sink


DROPPED: Any = None


def _dropped(n: int = 1) -> None:
    global DROPPED
    if DROPPED is None:
        from prometheus_client import Counter

        from bastion.observability import REGISTRY

        DROPPED = Counter(
            "bastion_trace_spans_dropped", "Finished spans not exported: the export queue was full", registry=REGISTRY
        )
    DROPPED.inc(n)


class SpanSink:
    """Where finished spans go: called with the span by `Span.end`, on the request's thread.

    - memory (tests): exported at once, as the SDK's SimpleSpanProcessor would;
    - otherwise queued (bounded: `MAX_QUEUE`; a span that finds it full is dropped and counted in
      `bastion_trace_spans_dropped_total`, the request never waits) and shipped in batches by one
      thread: to an exporter process (`bastion.trace_export`: the SDK objects, OTLP
      protobuf and the POST there, off the serving process's cores) when `exporter_process` is on,
      else to the SDK's exporter in this process (console, or otlp without the process).
    """

    MAX_QUEUE = 4096
    BATCH = 512
    DELAY = 5.0  # seconds between flushes of a part batch (the SDK BatchSpanProcessor's default)

    def __init__(self, config: TracingConfig) -> None:
        self.config = config
        self.resource, self.scope = resource_and_scope(config.service_name)
        self.readables = Readables(self.resource, self.scope)
        self.memory: Any = None
        self.exporter: Any = None  # an SDK exporter, fed ReadableSpans (console)
        self.tuples: Exporter | None = None  # `Span.fields()` batches' (otlp without the exporter process)
        self.process: subprocess.Popen[bytes] | None = None
        self.queue: deque[Span] = deque()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.closing = False
        if config.exporter == "memory":
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

            self.memory = InMemorySpanExporter()
        elif config.exporter == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            self.exporter = ConsoleSpanExporter()
        elif not config.exporter_process:
            # the exporter process's own encoder and sender, on this thread: the SDK's bytes for
            # a fifth of the SDK encoder's CPU (s10-export), which here is the serving core's
            self.tuples = Exporter(config.endpoint, config.service_name)
        if self.memory is None:
            _dropped(0)  # the series exists (at 0) from the start: an alert can tell "none" from "absent"

    def __call__(self, span: Span) -> None:
        if self.memory is not None:
            self.memory.export(self.readables([span.fields()]))
            return
        q = self.queue
        if len(q) >= self.MAX_QUEUE:
            _dropped()
            return
        q.append(span)
        if self.thread is None:
            self._start()
        elif len(q) >= self.BATCH:
            self.wake.set()

    def _start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="bastion-trace-export", daemon=True)
        self.thread.start()
        atexit.register(self.shutdown)

    def _run(self) -> None:
        while not self.closing:
            full = self.wake.wait(self.DELAY)
            self.wake.clear()
            # woken by a full batch: whole batches only. The spans queued while one was being
            # shipped wait for the next full batch or the timer, instead of going at once as a
            # batch of their own (s10-export counted 568 batches of 273 spans on average under
            # load: each POST costs the exporter ~0.7 ms of CPU, whatever its size)
            self._drain(whole=not full or self.closing)

    def _drain(self, whole: bool = True) -> None:
        """Ship the queue in batches of BATCH; `whole`: the last, part batch too."""
        q = self.queue
        while len(q) >= self.BATCH or (whole and q):
            batch: list[tuple[Any, ...]] = []
            while q and len(batch) < self.BATCH:
                batch.append(q.popleft().fields())
            try:
                self._ship(batch)
            except Exception:  # an exporter's failure must never reach serving
                log.exception("trace export failed (%d spans dropped)", len(batch))
                _dropped(len(batch))

    def _ship(self, batch: list[tuple[Any, ...]]) -> None:
        if self.tuples is not None:
            self.tuples.export(batch)  # (never raises: a failure is logged, as the SDK's export logs it)
            return
        if self.exporter is not None:
            self.exporter.export(self.readables(batch))
            return
        proc = self.process
        if proc is None or proc.poll() is not None:
            if proc is not None:
                log.warning("the trace exporter process exited (%s); starting another", proc.returncode)
            proc = self.process = _start_exporter(self.config)
        frame = marshal.dumps(batch)
        assert proc.stdin is not None
        proc.stdin.write(len(frame).to_bytes(4, "big") + frame)
        proc.stdin.flush()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Export what is queued, then let the exporter process finish (it exits when its pipe
        closes) — at exit, and on a drain (SIGTERM)."""
        self.closing = True
        self.wake.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)
            if self.thread.is_alive():  # stuck writing to the pipe: a second writer would garble it,
                # closing the pipe would wait for the write; the pipe closes when this process exits
                log.warning("trace export did not finish in %.0f s (%d spans dropped)", timeout, len(self.queue))
                _dropped(len(self.queue))
                self.queue.clear()
                return
        self._drain()
        proc, self.process = self.process, None
        if proc is not None:
            try:
                proc.stdin.close()  # type: ignore[union-attr]
                proc.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                log.warning("the trace exporter process did not finish in %.0f s", timeout)
        for exporter in (self.exporter, self.tuples):
            if exporter is not None:
                exporter.shutdown()


def _after_fork() -> None:
    """A forked child has none of the parent's export thread or process: its sinks start afresh
    (bastion's workers are spawned, not forked; this is for embedders that fork)."""
    for sink in _providers.values():
        sink.queue.clear()
        sink.thread, sink.process, sink.wake = None, None, threading.Event()
    _unsampled.clear()  # (the child's `random` is reseeded: its trace ids must be its own)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _start_exporter(config: TracingConfig) -> subprocess.Popen[bytes]:
    """The exporter process: reads batches from its stdin, exits when it closes (so also when
    this process dies, SIGKILL included: the kernel closes the pipe). In a session of its own: a
    terminal's Ctrl-C or a signal to the server's process group reaches the server, which drains
    and closes the pipe, not the exporter, which would lose the last batch."""
    # the endpoint in the environment, not the command line: a URL may carry credentials, and
    # any local user reads a command line (/proc/<pid>/cmdline), only the owner the environment
    env = dict(os.environ, BASTION_TRACE_ENDPOINT=config.endpoint, BASTION_TRACE_SERVICE=config.service_name)
    return subprocess.Popen(
        [sys.executable, "-m", "bastion.trace_export"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
        env=env,
    )


_TRACEPARENT = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _sampled_flag(value: bytes | None) -> bool | None:
    """The sampled flag of a valid W3C traceparent; None when there is none (or it is invalid)."""
    if value is None:
        return None
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None or m.group(1) == b"0" * 32 or m.group(2) == b"0" * 16:
        return None
    return bool(int(m.group(3), 16) & 1)


_BATCH = 256
_unsampled: list[bytes] = []  # traceparent values of new, unsampled traces, not yet used
_ZEROS = bytes(8)


def _refill_unsampled() -> bytes:
    """The traceparent values of 256 new, unsampled traces (flags 00), made at once: the ids
    from one `random.getrandbits` call (the same uniform bits as a call per id, which is how the
    SDK's RandomIdGenerator draws them; W3C asks for random, not secret, ids), hex-encoded at
    once, cut into 128-bit trace and 64-bit span ids. Returns one, keeps the others in
    `_unsampled` (`pop` is atomic). An id of zeros (invalid) is 1, as `getrandbits(n) or 1` made
    it (only when eight zero bytes come together anywhere: the slow way, per id)."""
    raw = _getrandbits(192 * _BATCH).to_bytes(24 * _BATCH, "big")
    if _ZEROS in raw:
        values = [
            b"00-%032x-%016x-00"
            % (int.from_bytes(raw[i : i + 16], "big") or 1, int.from_bytes(raw[i + 16 : i + 24], "big") or 1)
            for i in range(0, len(raw), 24)
        ]
    else:
        text = raw.hex().encode()
        values = [b"00-" + text[i : i + 32] + b"-" + text[i + 32 : i + 48] + b"-00" for i in range(0, len(text), 48)]
    _unsampled.extend(values)
    return _unsampled.pop()


_SERVER, _CLIENT, _INTERNAL = 1, 2, 0  # SpanKind values
_ERROR = 2  # StatusCode.ERROR


class Span:
    """A span as the request path records it: ids, parent, name, kind, times, status and the
    few attributes, in plain slots. The SDK's span (four locks, a `BoundedAttributes`, two
    `BoundedList`s, a `Context`, the processor fan-out: ~170k instructions a span) is built only
    for export (`readable`), on the exporter's side, from exactly these fields: what the SDK's
    tracer would have recorded (tests/unit/test_tracing_unit.py compares the OTLP encodings).
    The attribute values the gateway sets are str and int, which the SDK keeps as they are."""

    __slots__ = (
        "name", "kind", "trace_id", "span_id", "flags", "state", "parent_id", "parent_remote",
        "start", "end_time", "attributes", "status", "sink",
    )  # fmt: skip

    def __init__(
        self,
        sink: Any,
        name: str,
        kind: int,
        trace_id: int,
        flags: int,
        state: Any,
        parent_id: int,
        parent_remote: bool,
    ) -> None:
        self.sink, self.name, self.kind, self.trace_id, self.flags = sink, name, kind, trace_id, flags
        self.state, self.parent_id, self.parent_remote = state, parent_id, parent_remote
        self.span_id = _getrandbits(64) or 1  # as the SDK's RandomIdGenerator (never the invalid 0)
        self.attributes: dict[str, Any] = {}
        self.status = 0
        self.end_time: int | None = None
        self.start = _time_ns()

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        self.attributes.update(attributes)

    def update_name(self, name: str) -> None:
        self.name = name

    def set_status(self, status: Any) -> None:
        self.status = int(getattr(status, "status_code", status).value)

    def end(self) -> None:
        if self.end_time is None:  # once, as the SDK's (a second end() is ignored)
            self.end_time = _time_ns()
            self.sink(self)

    def get_span_context(self) -> Any:
        """The SDK's SpanContext of this span (for the OpenTelemetry API; not on the hot path)."""
        from opentelemetry.trace import SpanContext, TraceFlags

        return SpanContext(self.trace_id, self.span_id, False, TraceFlags(self.flags), self.state)

    def fields(self) -> tuple[Any, ...]:
        """What the exporter needs, as plain values (marshal-able: to the exporter process)."""
        state = self.state.to_header() if self.state else None
        return (
            self.name, self.kind, self.trace_id, self.span_id, self.flags, state, self.parent_id,
            self.parent_remote, self.start, self.end_time, self.attributes, self.status,
        )  # fmt: skip


class Trace:
    """The spans of one request, handed to the pipeline and the proxy through the Context. An
    unsampled request makes no child spans: only its context travels on (traceparent, flags 00).
    `attributes`: the root span's, set once when it ends."""

    __slots__ = ("root", "policy_spans", "recording", "attributes")

    def __init__(self, root: Span, policy_spans: bool, attributes: dict[str, Any] | None = None) -> None:
        self.root = root
        self.recording = True
        self.policy_spans = policy_spans
        self.attributes = attributes if attributes is not None else {}

    def child(self, name: str, client: bool = False) -> Span:
        r = self.root
        return Span(r.sink, name, _CLIENT if client else _INTERNAL, r.trace_id, r.flags, r.state, r.span_id, False)

    @staticmethod
    def headers_for(span: Span) -> list[tuple[bytes, bytes]]:
        """`span`'s W3C trace context as request headers: what the SDK's
        TraceContextTextMapPropagator.inject writes for the same span (a property test)."""
        out = [(b"traceparent", b"00-%032x-%016x-%02x" % (span.trace_id, span.span_id, span.flags))]
        if span.state:
            out.append((b"tracestate", span.state.to_header().encode("latin-1")))
        return out


class Tracing(Policy[TracingConfig]):
    name: ClassVar[str] = "tracing"
    priority: ClassVar[int] = 1100  # first in, last out: the request span covers every policy
    spanned: ClassVar[bool] = False  # its own work is the root span
    Config = TracingConfig
    per_route = False
    unrouted = True
    edge_once: ClassVar[bool] = True  # the route's pipeline does not call on_request again

    def __init__(self, config: TracingConfig, env) -> None:
        super().__init__(config, env)
        self.provider = provider_for(config)  # a clear config error when OpenTelemetry is missing
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.trace = trace
        self.propagator = TraceContextTextMapPropagator()
        self.trust = config.trust_incoming
        self.ratio = config.sample_ratio

    def on_request_sync(self, req: Request, ctx: Context) -> Response | None:
        # (synchronous: the pipeline calls it without a coroutine; the request path of a new,
        # unsampled trace is a header lookup, a random draw and a ready-made traceparent)
        if ctx.trace is not None or "tracing" in ctx.values:
            return None  # already decided (edge pipeline, then the route's)
        ctx.values["tracing"] = True
        ctx.drop_request_headers.update(_CONTEXT_HEADERS)
        continued = False
        tp = req.header(b"traceparent") if self.trust else None
        if tp is not None:
            flags = _sampled_flag(tp)
            if flags is False:  # the caller decided not to record: pass its context on untouched
                ctx.upstream_headers.append((b"traceparent", tp))
                ts = req.header(b"tracestate")
                if ts is not None:
                    ctx.upstream_headers.append((b"tracestate", ts))
                return None
            continued = flags is True
        if not continued and _random() >= self.ratio:
            # head sampling without the SDK: a new trace id, the sampled flag off
            try:
                value = _unsampled.pop()
            except IndexError:
                value = _refill_unsampled()
            ctx.upstream_headers.append((b"traceparent", value))
            return None
        name = f"{req.method} {req.route_name or 'unrouted'}"
        root = None
        if continued:  # the SDK's reading of the client's context (W3C rules, tracestate's too)
            carrier = {"traceparent": tp.decode("latin-1")}  # type: ignore[union-attr]
            ts = req.header(b"tracestate")
            if ts is not None:
                carrier["tracestate"] = ts.decode("latin-1")
            sc = self.trace.get_current_span(self.propagator.extract(carrier)).get_span_context()
            if sc.is_valid:  # as the SDK's tracer: the parent's trace, its state, its random flag
                sampled = 1 | (sc.trace_flags & 2)
                root = Span(self.provider, name, _SERVER, sc.trace_id, sampled, sc.trace_state, sc.span_id, True)
        if root is None:  # a new trace: SAMPLED | RANDOM_TRACE_ID, as the SDK's tracer flags it
            root = Span(self.provider, name, _SERVER, _getrandbits(128) or 1, 3, None, 0, False)
        ctx.trace = Trace(
            root, self.config.policy_spans, {"http.request.method": req.method, "url.path": req.path[:200]}
        )
        return None

    def on_log(self, req: Request, resp: Response, ctx: Context, record: dict[str, Any]) -> None:
        t = ctx.trace
        if t is None or getattr(t, "ended", False):
            return
        span = t.root
        span.name = f"{req.method} {req.route_name or 'unrouted'}"
        attributes = t.attributes
        attributes["http.response.status_code"] = resp.status
        attributes["bastion.route"] = req.route_name or "-"
        if resp.stopped_by:
            attributes["bastion.stopped_by"] = resp.stopped_by
        span.attributes.update(attributes)
        if resp.status >= 500:
            span.status = _ERROR
        span.end()
        ctx.trace = None
