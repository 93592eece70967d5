"""The trace exporter process: `python -m bastion.trace_export`, the OTLP endpoint and
the service name in `BASTION_TRACE_ENDPOINT` and `BASTION_TRACE_SERVICE`.

A serving process (a worker) starts one (`tracing.SpanSink`, when `exporter_process` is on) and
writes it batches of finished spans on its stdin: frames of a 4-byte big-endian length and a
`marshal`led list of `Span.fields()` tuples. Here `OtlpEncoder` turns a batch into the OTLP
`ExportTraceServiceRequest` straight from the tuples (the generated protobuf classes, what spans
share made once), and the SDK's OTLP/HTTP client POSTs it (its session, headers, compression,
timeout and retries): the work that used to run on a thread of the serving process, on its core.

marshal, not JSON or pickle: the pipe is private to the two processes (not an input anyone else
writes), the values are plain tuples, dicts, str and int, and marshal is the cheapest of the
three for them. The process ignores SIGINT and SIGTERM (a terminal's Ctrl-C or a service manager
signals the whole group: the worker then drains and closes the pipe, and the last batch is
exported) and exits when its stdin closes, which also happens when the worker is killed
(SIGKILL): no orphan outlives it by more than its last export.

A module of its own outside `bastion.policies` (whose package imports every policy): the
process loads the OpenTelemetry SDK and exporter and this: ~35 MB resident, not ~80.
"""

from __future__ import annotations

import logging
import marshal
import os
import signal
import sys
from typing import Any, BinaryIO

log = logging.getLogger("bastion.tracing")

MAX_FRAME = 64 * 1024 * 1024
# The exporter yields to the serving process when they share a core (a worker per core): under
# a load that leaves it no CPU, the worker's bounded queue drops spans (counted in
# bastion_trace_spans_dropped_total) instead of the requests slowing down.
NICE = 10


def read_frames(src: BinaryIO):
    """The batches on `src` until it closes (a short frame is the writer's death: dropped)."""
    while True:
        head = src.read(4)
        if len(head) < 4:
            return
        n = int.from_bytes(head, "big")
        if n > MAX_FRAME:
            raise ValueError(f"trace export frame of {n} bytes")
        data = src.read(n)
        if len(data) < n:
            return
        yield marshal.loads(data)


def resource_and_scope(service_name: str) -> tuple[Any, Any]:
    """The resource and the instrumentation scope of bastion's spans: what
    `TracerProvider(resource=Resource.create(...)).get_tracer("bastion")` gives them."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    return _hashed(Resource.create({"service.name": service_name})), InstrumentationScope("bastion", None, None)


def _hashed(resource: Any) -> Any:
    """The same resource, hashed once. The OTLP encoder groups every exported span by its
    resource (a dict keyed by it), and the SDK's `Resource.__hash__` serialises the attributes
    to JSON on each call: per span, that was a fifth of the exporter thread's encoding time.
    The attributes of a resource never change, so neither does its hash."""
    base: Any = type(resource)

    class HashedResource(base):
        def __init__(self, attributes: Any, schema_url: str | None = None) -> None:
            super().__init__(attributes, schema_url)
            self._hash = base.__hash__(self)

        def __hash__(self) -> int:
            return self._hash

    return HashedResource(resource.attributes, resource.schema_url)


def readable(fields: tuple[Any, ...], resource: Any, scope: Any) -> Any:
    """The SDK's ReadableSpan of a recorded span's `fields`: what the SDK's tracer would have
    handed its span processors for the same span (the OTLP encoder reads nothing else)."""
    return Readables(resource, scope)([fields])[0]


class Readables:
    """`readable` for whole batches, with what spans share made once: the trace flags, kinds and
    statuses (immutable SDK values), a tracestate header's parsing, and a local parent's
    SpanContext (the root's own, which its children end before it)."""

    def __init__(self, resource: Any, scope: Any) -> None:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

        self.resource, self.scope = resource, scope
        self.span, self.context, self.trace_state = ReadableSpan, SpanContext, TraceState
        self.flags = {f: TraceFlags(f) for f in range(256)}
        self.kinds = {k.value: k for k in SpanKind}
        self.statuses = {c.value: Status(c) for c in StatusCode}
        self.states: dict[str, Any] = {}

    def __call__(self, batch: list[tuple[Any, ...]]) -> list[Any]:
        context, flags_of, states = self.context, self.flags, self.states
        contexts = []
        own: dict[tuple[int, int], Any] = {}
        for f in batch:
            trace_id, span_id, flags, state = f[2], f[3], f[4], f[5]
            if state:
                ts = states.get(state)
                if ts is None:
                    if len(states) > 1024:
                        states.clear()
                    ts = states[state] = self.trace_state.from_header([state])
            else:
                ts = None
            sc = context(trace_id, span_id, False, flags_of[flags], ts)
            contexts.append((sc, ts))
            own[trace_id, span_id] = sc
        out = []
        span, kinds, statuses, resource, scope = self.span, self.kinds, self.statuses, self.resource, self.scope
        for f, (sc, ts) in zip(batch, contexts, strict=True):
            name, kind, trace_id, _, flags, _, parent_id, remote, start, end, attributes, status = f
            parent = None
            if parent_id:
                parent = None if remote else own.get((trace_id, parent_id))
                if parent is None:
                    parent = context(trace_id, parent_id, remote, flags_of[flags], ts)
            out.append(
                span(
                    name=name,
                    context=sc,
                    parent=parent,
                    resource=resource,
                    attributes=attributes,
                    kind=kinds[kind],
                    status=statuses[status],
                    start_time=start,
                    end_time=end,
                    instrumentation_scope=scope,
                )
            )
        return out


class OtlpEncoder:
    """The serialized OTLP `ExportTraceServiceRequest` of a batch of `Span.fields()` tuples: what
    `encode_spans(Readables(resource, scope)(batch))` gives, byte for byte
    (tests/unit/test_trace_export.py), without a ReadableSpan and the SDK encoder's per-span
    Python layers (bench/trace_encode.py: ~12.7 µs of CPU a span there, ~2.1 here).

    Made once: the request's resource and scope (the SDK's own encoding of them; every span of
    the process shares them, so a batch is one ResourceSpans with one ScopeSpans, as the SDK
    groups them), the statuses, each tracestate header's W3C parsing (the SDK's), and each
    attribute's serialized KeyValue for the str, int and bool values that repeat (methods,
    routes, status codes). A span is an `add()` with its own fields set, then one
    `MergeFromString` of its attributes' and status's bytes: serialized messages of one type
    concatenated are their merge (the protobuf encoding's rule), and repeated fields append, in
    order: the SDK's order. Its `flags` are the SDK's: the "has is_remote" bit, and "is remote"
    for a remote parent (this SDK puts no W3C trace flags there)."""

    CACHE = 4096  # attribute KeyValues and tracestates kept (url.path rarely repeats: a bound)
    _CACHED = frozenset({str, int, bool})  # exact equality (not float: -0.0 == 0.0, nan != nan)

    def __init__(self, resource: Any, scope: Any) -> None:
        from opentelemetry.exporter.otlp.proto.common._internal import (
            _encode_attributes,
            _encode_instrumentation_scope,
            _encode_resource,
        )
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
        from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, SpanFlags, Status
        from opentelemetry.trace import TraceState

        self.request, self.span = ExportTraceServiceRequest, Span
        self.sdk_attributes, self.trace_state = _encode_attributes, TraceState
        scope_spans = ScopeSpans(scope=_encode_instrumentation_scope(scope), schema_url=scope.schema_url)
        self.head = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=_encode_resource(resource), scope_spans=[scope_spans], schema_url=resource.schema_url
                )
            ]
        )
        # the SDK encodes a span's status even when unset: an empty, present Status (field 15)
        self.statuses = [Span(status=Status(code=c)).SerializeToString() for c in sorted(Status.StatusCode.values())]
        self.local = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
        self.remote = self.local | SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
        self.attributes: dict[tuple[str, type, Any], bytes] = {}
        self.holder = Span()
        self.holder_kv = self.holder.attributes.add()
        self.states: dict[str | None, str] = {None: ""}

    def __call__(self, batch: list[tuple[Any, ...]]) -> bytes:
        return self.encode(batch).SerializePartialToString()  # the SDK's call

    def encode(self, batch: list[tuple[Any, ...]]) -> Any:
        req = self.request()
        if not batch:
            return req  # the SDK's encoding of no spans: no ResourceSpans
        req.CopyFrom(self.head)
        add = req.resource_spans[0].scope_spans[0].spans.add
        cache, cached, statuses, states = self.attributes, self._CACHED, self.statuses, self.states
        local, remote = self.local, self.remote
        for name, kind, trace_id, span_id, _, state, parent_id, parent_remote, start, end, attrs, status in batch:
            ts = states.get(state)
            if ts is None:
                ts = self._trace_state(state)
            parts = []
            for key, value in attrs.items():
                cls = value.__class__
                kv = cache.get((key, cls, value)) if cls in cached else None
                parts.append(kv if kv is not None else self._attribute(key, value))
            parts.append(statuses[status])
            span = add()  # (fields set one by one: ~0.3 µs less than as add's keyword arguments)
            span.trace_id = trace_id.to_bytes(16, "big")
            span.span_id = span_id.to_bytes(8, "big")
            if ts:
                span.trace_state = ts
            if parent_id:
                span.parent_span_id = parent_id.to_bytes(8, "big")
                span.flags = remote if parent_remote else local
            else:
                span.flags = local
            span.name = name
            span.kind = kind + 1  # the API's SpanKind (INTERNAL 0 .. CONSUMER 4) is OTLP's minus one
            span.start_time_unix_nano = start
            span.end_time_unix_nano = end
            span.MergeFromString(b"".join(parts))
        return req

    def _attribute(self, key: str, value: Any) -> bytes:
        """A Span's bytes holding one attribute's KeyValue: str, int and bool values set on one
        reused message (~0.3 µs; a new Span, KeyValue and AnyValue each time: ~1.7) and kept,
        anything else (float, None, bytes, sequences, an int past 64 bits, a str with a lone
        surrogate) by the SDK's encoder, which also skips and logs what it cannot encode."""
        cls = value.__class__
        holder, kv = self.holder, self.holder_kv
        try:
            if cls is str:
                kv.key, kv.value.string_value = key, value
            elif cls is bool:
                kv.key, kv.value.bool_value = key, value
            elif cls is int:
                kv.key, kv.value.int_value = key, value
            else:
                return self.span(attributes=self.sdk_attributes({key: value})).SerializeToString()
        except (ValueError, TypeError):  # (UnicodeEncodeError is a ValueError)
            return self.span(attributes=self.sdk_attributes({key: value})).SerializeToString()
        out: bytes = holder.SerializeToString()
        if len(self.attributes) >= self.CACHE:
            self.attributes.clear()
        self.attributes[key, cls, value] = out
        return out

    def _trace_state(self, header: str) -> str:
        """A tracestate header as the SDK encodes its parsing (`TraceState.from_header`: an
        invalid list is an empty one), kept."""
        if len(self.states) >= self.CACHE:
            self.states.clear()
            self.states[None] = ""
        ts = self.states[header] = ",".join(f"{k}={v}" for k, v in self.trace_state.from_header([header]).items())
        return ts


def sender(exporter: Any) -> Any:
    """`export(data: bytes) -> result with .success` of the SDK's `OTLPSpanExporter`, for a
    request encoded here; None when this SDK has none.

    The SDK's exporter takes ReadableSpans only. Since the opentelemetry-exporter-otlp-proto-http
    that split its sending into `opentelemetry.exporter.otlp.common.http._OTLPHTTPClient`
    (1.45.2 here), the exporter's `_client.export(serialized)` is the whole send of its `export`:
    compression and its Content-Encoding, the headers (content-type application/x-protobuf and
    the OTEL_EXPORTER_OTLP_*HEADERS), the timeout, the retries with backoff on 429/502/503/504
    and connection errors, Retry-After. A private name, so checked (the class, by isinstance):
    without it, `Exporter` keeps the SDK's whole path (ReadableSpans), slower but the same."""
    try:
        from opentelemetry.exporter.otlp.common.http import _OTLPHTTPClient
    except ImportError:
        return None
    client = getattr(exporter, "_client", None)
    return client.export if isinstance(client, _OTLPHTTPClient) else None


class Exporter:
    """A batch of `Span.fields()` tuples to the OTLP/HTTP endpoint: encoded by `OtlpEncoder`
    and sent by the SDK's exporter's client (`sender`), or, on an SDK without that client,
    the SDK's exporter fed `Readables`. Never raises: a failure is logged (by the SDK's client,
    as its `export` logs them) and the batch dropped."""

    def __init__(self, endpoint: str, service_name: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import SpanExportResult

        resource, scope = resource_and_scope(service_name)
        self.sdk = OTLPSpanExporter(endpoint=endpoint)
        self.send = sender(self.sdk)
        # the SDK exporter's own limit on a request (64 MiB by default, 0: none), as it applies it
        self.max_size = getattr(self.sdk, "_max_request_size", 0) or 0
        self.encode: OtlpEncoder | None = None
        self.readables: Readables | None = None
        self.success = SpanExportResult.SUCCESS
        if self.send is not None:
            try:  # (the SDK encoder's helpers are private names too: an SDK without them keeps its path)
                self.encode = OtlpEncoder(resource, scope)
            except (ImportError, AttributeError, TypeError) as exc:
                log.warning("this OpenTelemetry SDK's OTLP encoder is not the one expected (%s): its own path", exc)
                self.send = None
        if self.send is None:
            log.warning("this OpenTelemetry SDK's OTLP exporter has no client to send encoded spans: its own encoder")
            self.readables = Readables(resource, scope)

    def export(self, batch: list[tuple[Any, ...]]) -> bool:
        try:
            if self.encode is None:
                assert self.readables is not None
                return self.sdk.export(self.readables(batch)) is self.success
            data = self.encode(batch)
            if 0 < self.max_size < len(data):
                log.warning("trace export dropped: %d spans, %d bytes over %d", len(batch), len(data), self.max_size)
                return False
            return bool(self.send(data).success)
        except Exception:
            log.exception("trace export failed (%d spans)", len(batch))
            return False

    def shutdown(self) -> None:
        self.sdk.shutdown()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(NICE)  # background work: on a shared core the serving process goes first
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s trace-export: %(message)s")
    exporter = Exporter(os.environ["BASTION_TRACE_ENDPOINT"], os.environ["BASTION_TRACE_SERVICE"])
    try:
        for batch in read_frames(sys.stdin.buffer):
            exporter.export(batch)
    finally:
        exporter.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
