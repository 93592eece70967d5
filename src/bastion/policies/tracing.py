"""OpenTelemetry traces (optional extra: `pip install 'bastion-gateway[otel]'`).

A span per request (`SERVER`), a child span per policy that runs in the request phase, and a
child span (`CLIENT`) for the upstream call, whose context goes to the upstream as W3C
`traceparent` (and `tracestate`). An incoming `traceparent` is continued when
`trust_incoming` is on (the default), otherwise a new trace starts and the client's header is
dropped. Spans carry the route, method, status and the refusing policy — never headers, query
strings or bodies.
"""

from __future__ import annotations

import logging
import random
import re
from typing import Any, ClassVar, Literal

from pydantic import Field

from bastion.http import Request, Response
from bastion.pipeline import Context, Policy, PolicyConfig

log = logging.getLogger("bastion.tracing")
_providers: dict[tuple[Any, ...], Any] = {}
_getrandbits = random.getrandbits


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


def provider_for(config: TracingConfig) -> Any:
    """One TracerProvider per exporter setting for the process (reloads reuse it)."""
    key = (config.exporter, config.endpoint, config.service_name, config.sample_ratio)
    if key in _providers:
        return _providers[key]
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    except ImportError:
        raise ValueError("tracing needs OpenTelemetry: pip install 'bastion-gateway[otel]'") from None
    # the policy makes the head-sampling decision itself, before the SDK is involved (see
    # Tracing.on_request): what reaches the SDK is to be recorded. ALWAYS_ON, not
    # ParentBased(ALWAYS_ON): the same decisions here (a root span only starts sampled, or under a
    # client's sampled parent; children only under a recording root), one lookup less per span.
    provider = TracerProvider(
        resource=_hashed(Resource.create({"service.name": config.service_name})), sampler=ALWAYS_ON
    )
    if config.exporter == "memory":
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        provider.memory = InMemorySpanExporter()  # type: ignore[attr-defined]
        provider.add_span_processor(SimpleSpanProcessor(provider.memory))  # type: ignore[attr-defined]
    elif config.exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.endpoint)))
    _providers[key] = provider
    return provider


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


_TRACEPARENT = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _sampled_flag(value: bytes | None) -> bool | None:
    """The sampled flag of a valid W3C traceparent; None when there is none (or it is invalid)."""
    if value is None:
        return None
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None or m.group(1) == b"0" * 32 or m.group(2) == b"0" * 16:
        return None
    return bool(int(m.group(3), 16) & 1)


class Trace:
    """The spans of one request, handed to the pipeline and the proxy through the Context. An
    unsampled request makes no child spans: only its context travels on (traceparent, flags 00).
    `attributes`: the root span's, set once when it ends (one call into the SDK, not four)."""

    __slots__ = ("tracer", "root", "ctx", "policy_spans", "trace_mod", "recording", "propagator", "attributes")

    def __init__(
        self,
        tracer: Any,
        root: Any,
        ctx: Any,
        policy_spans: bool,
        trace_mod: Any,
        propagator: Any,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        self.tracer, self.root, self.ctx, self.trace_mod = tracer, root, ctx, trace_mod
        self.recording = root.is_recording()
        self.policy_spans = policy_spans and self.recording
        self.propagator = propagator
        self.attributes = attributes if attributes is not None else {}

    def child(self, name: str, client: bool = False) -> Any:
        kind = self.trace_mod.SpanKind.CLIENT if client else self.trace_mod.SpanKind.INTERNAL
        return self.tracer.start_span(name, context=self.ctx, kind=kind)

    def headers_for(self, span: Any) -> list[tuple[bytes, bytes]]:
        """`span`'s W3C trace context as request headers: what the SDK's
        TraceContextTextMapPropagator.inject writes, read straight from the span's context
        (inject wants a Context, one more object per span just to read the span back out)."""
        sc = span.get_span_context()
        if not sc.is_valid:
            return []
        out = [(b"traceparent", b"00-%032x-%016x-%02x" % (sc.trace_id, sc.span_id, sc.trace_flags))]
        if sc.trace_state:
            out.append((b"tracestate", sc.trace_state.to_header().encode("latin-1")))
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

        self.tracer = self.provider.get_tracer("bastion")
        self.trace = trace
        self.propagator = TraceContextTextMapPropagator()

    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        if ctx.trace is not None or "tracing" in ctx.values:
            return None  # already decided (edge pipeline, then the route's)
        ctx.values["tracing"] = True
        ctx.drop_request_headers.update((b"traceparent", b"tracestate"))
        parent = None
        if self.config.trust_incoming:
            tp = req.header(b"traceparent")
            flags = _sampled_flag(tp)
            if flags is False:  # the caller decided not to record: pass its context on untouched
                ctx.upstream_headers.append((b"traceparent", tp))  # type: ignore[arg-type]
                ts = req.header(b"tracestate")
                if ts is not None:
                    ctx.upstream_headers.append((b"tracestate", ts))
                return None
            if flags is True:
                carrier = {"traceparent": tp.decode("latin-1")}  # type: ignore[union-attr]
                ts = req.header(b"tracestate")
                if ts is not None:
                    carrier["tracestate"] = ts.decode("latin-1")
                parent = self.propagator.extract(carrier)
        if parent is None and random.random() >= self.config.sample_ratio:
            # head sampling without the SDK: a new trace id, the sampled flag off. Ids from
            # `random.getrandbits`, as the SDK's own RandomIdGenerator makes them (W3C asks for
            # random, not secret, ids): two os.urandom system calls per request cost more than
            # the rest of this path.
            ctx.upstream_headers.append(
                (b"traceparent", b"00-%032x-%016x-00" % (_getrandbits(128) or 1, _getrandbits(64) or 1))
            )
            return None
        root = self.tracer.start_span(
            f"{req.method} {req.route_name or 'unrouted'}", context=parent, kind=self.trace.SpanKind.SERVER
        )
        ctx.trace = Trace(
            self.tracer,
            root,
            self.trace.set_span_in_context(root),
            self.config.policy_spans,
            self.trace,
            self.propagator,
            {"http.request.method": req.method, "url.path": req.path[:200]},
        )
        return None

    def on_log(self, req: Request, resp: Response, ctx: Context, record: dict[str, Any]) -> None:
        t = ctx.trace
        if t is None or getattr(t, "ended", False):
            return
        span = t.root
        if not t.recording:
            span.end()
            ctx.trace = None
            return
        span.update_name(f"{req.method} {req.route_name or 'unrouted'}")
        attributes = t.attributes
        attributes["http.response.status_code"] = resp.status
        attributes["bastion.route"] = req.route_name or "-"
        if resp.stopped_by:
            attributes["bastion.stopped_by"] = resp.stopped_by
        span.set_attributes(attributes)
        if resp.status >= 500:
            span.set_status(self.trace.Status(self.trace.StatusCode.ERROR))
        span.end()
        ctx.trace = None
