"""The exporter process's OTLP encoding (`OtlpEncoder`) of a batch of `Span.fields()` tuples is,
byte for byte, the SDK's: `encode_spans` of the ReadableSpans `Readables` makes of the same
tuples (the encoder bastion used before, and what the SDK's own tracer exports:
tests/unit/test_tracing_unit.py), for any batch: ids at their bounds, names in any script,
remote and local parents, W3C tracestate lists (valid, odd, invalid), statuses, and attribute
values of every type a caller may set, including the ones the SDK skips."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

from bastion.trace_export import Exporter, OtlpEncoder, Readables, readable, resource_and_scope  # noqa: E402

RESOURCE, SCOPE = resource_and_scope("unit-export")
ORACLE = Readables(RESOURCE, SCOPE)
ENCODER = OtlpEncoder(RESOURCE, SCOPE)  # one for every example: its caches carry over, as in the process

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)  # any unicode but lone surrogates
TRACE_ID = st.one_of(st.just(1), st.just(2**128 - 1), st.integers(1, 2**128 - 1))
SPAN_ID = st.one_of(st.just(1), st.just(2**64 - 1), st.integers(1, 2**64 - 1))
NS = st.one_of(st.just(0), st.just(2**64 - 1), st.integers(0, 2**64 - 1))
KEY = st.from_regex(r"[a-z][a-z0-9_\-*/]{0,10}(@[a-z][a-z0-9_\-*/]{0,5})?", fullmatch=True)
VALUE = st.from_regex(r"[!-+\--<>-~]{0,12}[!-+\--<>-~]", fullmatch=True)  # printable, no "," or "=", no trailing space
MEMBER = st.builds(lambda k, v, pad: f"{pad}{k}={v}{pad}", KEY, VALUE, st.sampled_from(["", " ", "\t"]))
TRACESTATE = st.one_of(
    st.none(),
    st.lists(MEMBER, max_size=5).map(",".join),  # valid W3C lists (optional whitespace, empty members)
    st.lists(MEMBER, min_size=1, max_size=3).map(lambda ms: ",".join([*ms, ms[0]])),  # a duplicate key
    TEXT,  # mostly invalid: the SDK's parsing makes it an empty list
)
# the attributes the gateway sets (tracing.py, gateway/app.py, gateway/websocket.py) and others
GATEWAY = st.fixed_dictionaries(
    {},
    optional={
        "http.request.method": st.sampled_from(["GET", "POST", "DELETE", "PROPFIND"]),
        "url.path": st.sampled_from(["/", "/users/1", "/é/ü", "/" + "a" * 200]) | TEXT,
        "http.response.status_code": st.sampled_from([200, 404, 503]) | st.integers(100, 599),
        "bastion.route": st.sampled_from(["-", "users", "r1"]),
        "bastion.stopped_by": st.sampled_from(["ip_rules", "rate_limit"]),
    },
)
ANY_VALUE = st.one_of(
    TEXT,
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, math.inf]),
    st.integers(2**63, 2**70) | st.integers(-(2**70), -(2**63) - 1),  # past int64: the SDK skips (and logs) them
    st.sampled_from(["\ud800", "a\udfffb"]),  # lone surrogates: not UTF-8, skipped (and logged) alike
    st.none(),
    st.lists(st.integers(-5, 5) | st.text(max_size=3), max_size=3).map(tuple),
)
ATTRIBUTES = st.builds(lambda g, other: {**g, **other}, GATEWAY, st.dictionaries(TEXT, ANY_VALUE, max_size=4))


@st.composite
def batches(draw: st.DrawFn) -> list[tuple]:
    """Span tuples as `Span.fields()` writes them; some children of a span of the same batch
    (local parents, as a request's CLIENT span of its SERVER span), others of a remote or an
    absent parent."""
    out: list[tuple] = []
    for _ in range(draw(st.integers(0, 8))):
        if out and draw(st.booleans()):
            parent = draw(st.sampled_from(out))
            trace_id, parent_id, remote = parent[2], parent[3], False
        else:
            trace_id = draw(TRACE_ID)
            parent_id = draw(st.sampled_from([0, 0]) | SPAN_ID)
            remote = draw(st.booleans())
        start = draw(NS)
        out.append(
            (
                draw(TEXT),
                draw(st.integers(0, 4)),
                trace_id,
                draw(SPAN_ID),
                draw(st.integers(0, 255)),
                draw(TRACESTATE),
                parent_id,
                remote,
                start,
                draw(NS),
                draw(ATTRIBUTES),
                draw(st.sampled_from([0, 1, 2])),
            )
        )
    return out


def sdk_bytes(batch: list[tuple]) -> bytes:
    return encode_spans(ORACLE(batch)).SerializePartialToString()  # OTLPSpanExporter.export's call


@settings(max_examples=400, deadline=None)
@given(batches())
def test_the_encoding_is_the_sdks(batch):
    want = sdk_bytes(batch)
    assert ENCODER(batch) == want
    assert ENCODER(batch) == want  # again: now from the caches
    ours, theirs = ExportTraceServiceRequest.FromString(ENCODER(batch)), ExportTraceServiceRequest.FromString(want)
    assert len(ours.resource_spans) == len(theirs.resource_spans) == (1 if batch else 0)
    assert [s.name for rs in ours.resource_spans for ss in rs.scope_spans for s in ss.spans] == [f[0] for f in batch]


def test_the_gateways_two_spans_of_a_request():
    """A traced request as the gateway records it (root SERVER, upstream CLIENT child), three
    times: the parent's id, the flags, the shared attributes."""
    batch = []
    for i in range(3):
        trace_id, root = 0x0AF7651916CD43DD8448EB211C80319C + i, 0xB7AD6B7169203331 + i
        batch.append(
            ("upstream up", 2, trace_id, 7 + i, 3, None, root, False, 11, 19, {"http.response.status_code": 200}, 0)
        )
        attributes = {
            "http.request.method": "GET",
            "url.path": f"/users/{i}",
            "http.response.status_code": 503,
            "bastion.route": "users",
        }
        batch.append(("GET users", 1, trace_id, root, 1, "k=v", 0x1234, True, 10, 20, attributes, 2))
    assert ENCODER(batch) == sdk_bytes(batch)
    spans = ExportTraceServiceRequest.FromString(ENCODER(batch)).resource_spans[0].scope_spans[0].spans
    client, server = spans[0], spans[1]
    assert client.parent_span_id == server.span_id and client.flags == 0x100  # a local parent
    assert server.parent_span_id == (0x1234).to_bytes(8, "big") and server.flags == 0x300  # a remote one
    assert server.trace_state == "k=v" and server.status.code == 2 and server.kind == 2  # SERVER


def test_readable_still_makes_the_sdks_span():
    """`readable` (the in-process exporter's and tests' path) is unchanged: a ReadableSpan."""
    f = ("GET x", 1, 5, 7, 3, "k=v", 9, True, 10, 20, {"a": 1}, 0)
    span = readable(f, RESOURCE, SCOPE)
    assert span.name == "GET x" and span.parent.span_id == 9 and span.parent.is_remote
    assert encode_spans([span]).SerializePartialToString() == ENCODER([f])


def test_this_sdk_has_the_client_the_exporter_sends_with():
    """The installed OTLP exporter has the client `sender` uses: the fast path is the one that
    runs (after an SDK upgrade without it, `Exporter` would fall back to the SDK's encoder)."""
    exporter = Exporter("http://127.0.0.1:9/v1/traces", "unit-export")
    try:
        assert exporter.send is not None and exporter.encode is not None and exporter.readables is None
    finally:
        exporter.shutdown()
