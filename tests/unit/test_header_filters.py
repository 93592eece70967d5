"""The header filters on the proxy path (`gateway/proxy.py`; `client_headers` remembers the names
it has classified): on generated header lists, repeated so the remembered names are used, they
keep exactly what a plain per-header reading keeps. And `Request.header` (a dict built in C) gives
the first value of a repeated name, as before."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.gateway import proxy
from bastion.gateway.proxy import (
    EDGE_OWNED_PREFIXES,
    HOP_BY_HOP,
    UPSTREAM_IDENTITY,
    client_headers,
    drop_with,
    strip_hop_by_hop,
)
from bastion.http import Request


def listed(headers):
    out = set()
    for k, v in headers:
        if k == b"connection":
            out.update(t.strip().lower() for t in v.split(b",") if t.strip())
    return out


def reference_client_headers(headers, drop):
    gone = listed(headers)
    out = []
    for k, v in headers:
        if k in HOP_BY_HOP or k in gone or k in drop or k.startswith(EDGE_OWNED_PREFIXES):
            continue
        if b"_" in k:
            alias = k.replace(b"_", b"-")
            if alias in HOP_BY_HOP or alias in drop or alias.startswith(EDGE_OWNED_PREFIXES):
                continue
        out.append((k, v))
    return out


def reference_strip(headers, also):
    drop = HOP_BY_HOP | listed(headers) | also
    return [(k, v) for k, v in headers if k not in drop]


names = st.sampled_from(
    [
        b"accept",
        b"x-a",
        b"x_a",
        b"connection",
        b"keep-alive",
        b"keep_alive",
        b"te",
        b"upgrade",
        b"x-bastion-subject",
        b"x_bastion_subject",
        b"x-envoy-original-path",
        b"x-forwarded-for",
        b"x_forwarded_for",
        b"server",
        b"x-powered-by",
        b"host",
    ]
) | st.binary(min_size=1, max_size=6)
values = st.sampled_from([b"x-a", b"close, X-A", b"keep-alive,te", b"", b"x_a", b"upgrade"]) | st.binary(max_size=8)
header_lists = st.lists(st.tuples(names, values), max_size=12)
drops = st.sampled_from(
    [frozenset(), frozenset({b"x-forwarded-for", b"host"}), frozenset({b"x-a"}), frozenset({b"accept", b"x-a"})]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(header_lists, drops), min_size=1, max_size=6))
def test_client_headers_keep_what_a_per_header_reading_keeps(cases):
    for headers, drop in cases * 2:  # the second time, every name is a remembered one
        assert client_headers(headers, drop) == reference_client_headers(headers, drop)


policy_drops = st.sets(
    st.sampled_from([b"x-request-id", b"traceparent", b"tracestate", b"authorization", b"x-a"])
    | st.binary(min_size=1, max_size=4),
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(header_lists, drops, policy_drops), min_size=1, max_size=8))
def test_a_policys_drops_merged_once_keep_what_the_union_keeps(cases):
    """`drop_with` (the fixed drops and a request's policy drops, the union kept per pair): the
    headers kept are those the plain union keeps, whatever pairs came before (session 9)."""
    for headers, drop, extra in cases * 2:  # the second time, every union is a remembered one
        merged = drop_with(drop, set(extra))
        assert merged == drop | extra
        assert client_headers(headers, merged) == reference_client_headers(headers, drop | extra)


def test_the_merged_drop_sets_are_bounded_and_reused():
    fixed = frozenset({b"host"})
    first = drop_with(fixed, {b"x-request-id"})
    assert drop_with(fixed, {b"x-request-id"}) is first  # the same object: hashed once, found by identity
    for i in range(600):  # names a policy took from requests: the kept unions stay bounded
        assert drop_with(fixed, {b"x-%d" % i}) == fixed | {b"x-%d" % i}
        assert len(proxy._DROPS_WITH) <= 257


def test_the_remembered_names_are_bounded():
    drop = frozenset({b"x-forgotten"})
    for i in range(proxy._KNOWN_MAX + 50):
        headers = [(b"x-%d" % i, b"v"), (b"x-bastion-%d" % i, b"v"), (b"x-forgotten", b"v")]
        assert client_headers(headers, drop) == [(b"x-%d" % i, b"v")]
    assert len(proxy._CLASSIFIED[drop].known) <= proxy._KNOWN_MAX


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(header_lists, st.sampled_from([frozenset(), UPSTREAM_IDENTITY])), min_size=1, max_size=6))
def test_strip_hop_by_hop_keeps_what_a_per_header_reading_keeps(cases):
    for headers, also in cases * 2:  # the second time, every Connection value is a remembered one
        assert strip_hop_by_hop(headers, also) == reference_strip(headers, also)


@settings(max_examples=300, deadline=None)
@given(header_lists, names)
def test_request_header_is_the_first_value(headers, name):
    req = Request(
        method="GET",
        path="/",
        query=b"",
        headers=headers,
        client_ip=None,
        peer_ip=None,
        peer_trusted=False,
        scheme="http",
        host="",
        receive=None,  # type: ignore[arg-type]
    )
    assert req.header(name) == next((v for k, v in headers if k == name), None)


def test_each_connection_value_lists_its_own_names():
    """Remembered Connection values, in an order where a wrong key (a prefix, the first
    name) would hand one value's names to another."""
    others = [(b"k", b"1"), (b"x-a", b"2"), (b"x-b", b"3"), (b"x", b"4")]
    for value in [b"x", b"x-a", b"x-a, x-b", b"X-B", b"k", b"keep-alive", b"x-b,x-a", b"x", b"x-a"] * 2:
        headers = [(b"connection", value), *others]
        assert strip_hop_by_hop(headers) == reference_strip(headers, frozenset()), value
