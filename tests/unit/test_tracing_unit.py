"""The tracing policy's shortcuts around the OpenTelemetry SDK give what the SDK gives: the
trace context headers (against the SDK's own W3C propagator), the exported OTLP protobuf of its
light spans (against the SDK's tracer fed the same ids, times and attributes), the resource's
hash, and the exporter process's framing."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.http import Response
from bastion.http.messages import Request
from bastion.pipeline import Context, PolicyEnv
from bastion.policies.tracing import Tracing, TracingConfig, _hashed

otel = pytest.importorskip("opentelemetry.sdk.resources")
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # noqa: E402

KEY = st.from_regex(r"[a-z][a-z0-9_\-*/]{0,10}", fullmatch=True)
VALUE = st.from_regex(r"[!-+\--<>-~]{1,12}", fullmatch=True)  # printable, no "," or "="


async def _receive() -> dict:
    return {}


def _request(headers: list[tuple[bytes, bytes]]) -> Request:
    return Request(
        method="GET",
        path="/a/b",
        query=b"secret=1",
        headers=headers,
        client_ip=None,
        peer_ip=None,
        peer_trusted=False,
        scheme="http",
        host="h",
        receive=_receive,
    )


@settings(max_examples=60, deadline=None)
@given(
    trace_id=st.integers(1, 2**128 - 1),
    span_id=st.integers(1, 2**64 - 1),
    state=st.lists(st.tuples(KEY, VALUE), max_size=4, unique_by=lambda kv: kv[0]),
)
def test_headers_match_the_sdk_propagator(trace_id, span_id, state):
    policy = Tracing(TracingConfig(exporter="memory", service_name="unit-headers"), PolicyEnv())
    incoming = [(b"traceparent", b"00-%032x-%016x-01" % (trace_id, span_id))]
    if state:
        incoming.append((b"tracestate", ",".join(f"{k}={v}" for k, v in state).encode()))
    req, ctx = _request(incoming), Context()
    asyncio.run(policy.on_request(req, ctx))
    trace = ctx.trace
    assert trace is not None and trace.recording
    for span in (trace.root, trace.child("upstream up", client=True)):
        carrier: dict[str, str] = {}
        sdk_span = policy.trace.NonRecordingSpan(span.get_span_context())  # the API's span of that context
        TraceContextTextMapPropagator().inject(carrier, context=policy.trace.set_span_in_context(sdk_span))
        assert trace.headers_for(span) == [(k.encode(), v.encode("latin-1")) for k, v in carrier.items()]
        assert trace.headers_for(span)[0][1].split(b"-")[1] == b"%032x" % trace_id
    policy.on_log(req, Response(200, []), ctx, {})


def test_root_span_attributes_set_once_at_the_end():
    name = "unit-attributes"
    policy = Tracing(TracingConfig(exporter="memory", service_name=name), PolicyEnv())
    memory = policy.provider.memory
    memory.clear()
    req, ctx = _request([]), Context()
    asyncio.run(policy.on_request(req, ctx))
    req.route_name = "r1"
    resp = Response(403, [])
    resp.stopped_by = "ip_rules"
    policy.on_log(req, resp, ctx, {})
    (root,) = memory.get_finished_spans()
    assert root.name == "GET r1"
    assert dict(root.attributes) == {
        "http.request.method": "GET",
        "url.path": "/a/b",
        "http.response.status_code": 403,
        "bastion.route": "r1",
        "bastion.stopped_by": "ip_rules",
    }


def test_hashed_resource_is_the_same_resource():
    from opentelemetry.sdk.resources import Resource

    plain = Resource.create({"service.name": "unit", "deployment.environment": "test"})
    hashed = _hashed(plain)
    assert hashed == plain and plain == hashed
    assert hash(hashed) == hash(plain)
    assert hashed.attributes == plain.attributes and hashed.schema_url == plain.schema_url
    assert hash(_hashed(Resource.create({"service.name": "other"}))) != hash(hashed)


class _Ids:
    """The SDK's id generator, made to hand out the ids the light spans drew."""

    def __init__(self, trace_id: int, span_ids: list[int]) -> None:
        self.trace_id, self.span_ids = trace_id, list(span_ids)

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_ids.pop(0)

    def is_trace_id_random(self) -> bool:
        return True


def _sdk_spans(incoming: dict[str, str], light: list, resource) -> list:
    """The same request traced by the SDK's own tracer (sampler ALWAYS_ON, as bastion used it)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    root_l, child_l = light
    provider = TracerProvider(
        resource=resource,
        sampler=ALWAYS_ON,
        id_generator=_Ids(root_l.context.trace_id, [s.context.span_id for s in light]),
    )
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bastion")
    parent = TraceContextTextMapPropagator().extract(incoming) if incoming else None
    root = tracer.start_span("GET unrouted", context=parent, kind=trace.SpanKind.SERVER, start_time=root_l.start_time)
    child = tracer.start_span(
        child_l.name, context=trace.set_span_in_context(root), kind=trace.SpanKind.CLIENT, start_time=child_l.start_time
    )
    child.set_attribute("http.response.status_code", child_l.attributes["http.response.status_code"])
    child.end(end_time=child_l.end_time)
    root.update_name(root_l.name)
    root.set_attributes(dict(root_l.attributes))
    if root_l.attributes["http.response.status_code"] >= 500:
        root.set_status(trace.Status(trace.StatusCode.ERROR))
    root.end(end_time=root_l.end_time)
    return list(memory.get_finished_spans())


@settings(max_examples=60, deadline=None)
@given(
    parent=st.one_of(
        st.none(),
        st.tuples(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.sampled_from(["01", "03", "0b"])),
    ),
    state=st.lists(st.tuples(KEY, VALUE), max_size=3, unique_by=lambda kv: kv[0]),
    status=st.sampled_from([200, 404, 500, 503]),
    stopped_by=st.sampled_from(["", "rate_limit"]),
    route=st.sampled_from([None, "r1"]),
)
def test_exported_otlp_is_what_the_sdk_exports(parent, state, status, stopped_by, route):
    """The OTLP protobuf of a request's light spans (root SERVER + upstream CLIENT) equals, byte
    for byte, the SDK tracer's for the same request, ids and times: trace and span ids, parent
    ids and their remote flag, W3C trace flags and tracestate, kinds, names, attributes, status,
    resource and scope."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    name = "unit-otlp"
    policy = Tracing(TracingConfig(exporter="memory", service_name=name), PolicyEnv())
    memory = policy.provider.memory
    memory.clear()
    incoming: dict[str, str] = {}
    headers = []
    if parent is not None:
        incoming["traceparent"] = "00-%032x-%016x-%s" % parent
        if state:
            incoming["tracestate"] = ",".join(f"{k}={v}" for k, v in state)
        headers = [(k.encode(), v.encode()) for k, v in incoming.items()]
    req, ctx = _request(headers), Context()
    asyncio.run(policy.on_request(req, ctx))
    up = ctx.trace.child("upstream up", client=True)
    ctx_headers = ctx.trace.headers_for(up)
    up.set_attribute("http.response.status_code", status)
    up.end()
    req.route_name = route
    resp = Response(status, [])
    resp.stopped_by = stopped_by
    policy.on_log(req, resp, ctx, {})
    light = sorted(memory.get_finished_spans(), key=lambda s: s.kind.value)  # SERVER (1), CLIENT (2)
    assert [s.kind.name for s in light] == ["SERVER", "CLIENT"]
    sdk = sorted(_sdk_spans(incoming, light, policy.provider.resource), key=lambda s: s.kind.value)
    ours = encode_spans(light).SerializeToString(deterministic=True)
    assert ours == encode_spans(sdk).SerializeToString(deterministic=True)
    if parent is not None:
        assert light[0].context.trace_id == parent[0] and light[0].parent.is_remote
    # what the upstream receives (trace flags and tracestate are not in the protobuf): the SDK's
    # propagator on the SDK tracer's CLIENT span
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(
        carrier, context=policy.trace.set_span_in_context(policy.trace.NonRecordingSpan(sdk[1].context))
    )
    assert ctx_headers == [(k.encode(), v.encode("latin-1")) for k, v in carrier.items()]
