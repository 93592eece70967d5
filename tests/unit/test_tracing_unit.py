"""The tracing policy's shortcuts around the OpenTelemetry SDK give what the SDK gives: the
trace context headers (against the SDK's own W3C propagator) and the resource's hash."""

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
        TraceContextTextMapPropagator().inject(carrier, context=policy.trace.set_span_in_context(span))
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
