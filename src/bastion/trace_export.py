"""The trace exporter process: `python -m bastion.trace_export`, the OTLP endpoint and
the service name in `BASTION_TRACE_ENDPOINT` and `BASTION_TRACE_SERVICE`.

A serving process (a worker) starts one (`tracing.SpanSink`, when `exporter_process` is on) and
writes it batches of finished spans on its stdin: frames of a 4-byte big-endian length and a
`marshal`led list of `Span.fields()` tuples. Here they become the SDK's ReadableSpans and go to
the SDK's OTLP/HTTP exporter (protobuf encoding, the POST, its retries) — the ~150k instructions
a span that used to run on a thread of the serving process, on its core.

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


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(NICE)  # background work: on a shared core the serving process goes first
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s trace-export: %(message)s")
    endpoint, service_name = os.environ["BASTION_TRACE_ENDPOINT"], os.environ["BASTION_TRACE_SERVICE"]
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    readables = Readables(*resource_and_scope(service_name))
    exporter = OTLPSpanExporter(endpoint=endpoint)
    try:
        for batch in read_frames(sys.stdin.buffer):
            try:
                exporter.export(readables(batch))
            except Exception:
                log.exception("trace export failed (%d spans)", len(batch))
    finally:
        exporter.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
