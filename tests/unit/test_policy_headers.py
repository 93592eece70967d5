"""The response-header policies' fast paths (nothing of theirs in the upstream's answer) and slow
paths (the upstream set some) give the same headers as the rules say; the CORS decision cache
answers as the matcher does and stays bounded."""

from __future__ import annotations

import asyncio

from bastion.http import Response
from bastion.http.messages import Request
from bastion.pipeline import Context, PolicyEnv
from bastion.policies.cors import Cors, CorsConfig, OriginMatcher
from bastion.policies.request_id import RequestId, RequestIdConfig
from bastion.policies.security_headers import SecurityHeaders, SecurityHeadersConfig


async def _receive() -> dict:
    return {}


def _request(scheme: str = "http", headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    return Request(
        method="GET",
        path="/a",
        query=b"",
        headers=headers or [],
        client_ip=None,
        peer_ip=None,
        peer_trusted=False,
        scheme=scheme,
        host="h",
        receive=_receive,
    )


def _respond(policy, req: Request, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    resp = Response(200, list(headers))
    asyncio.run(policy.on_response(req, resp, Context()))
    return resp.headers


def test_security_headers_fast_and_slow_paths():
    policy = SecurityHeaders(SecurityHeadersConfig(extra={"X-Extra": "1"}), PolicyEnv())
    plain = _respond(policy, _request(), [(b"content-type", b"application/json")])
    assert plain == [
        (b"content-type", b"application/json"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-extra", b"1"),
    ]
    https = dict(_respond(policy, _request("https"), []))
    assert https[b"strict-transport-security"] == b"max-age=31536000; includeSubDomains"
    # the upstream's own value is kept (no override), the others are added
    kept = _respond(policy, _request("https"), [(b"strict-transport-security", b"max-age=1")])
    assert [v for k, v in kept if k == b"strict-transport-security"] == [b"max-age=1"]
    assert dict(kept)[b"x-frame-options"] == b"DENY"
    over = SecurityHeaders(SecurityHeadersConfig(override=True), PolicyEnv())
    replaced = _respond(over, _request(), [(b"x-frame-options", b"SAMEORIGIN")])
    assert [v for k, v in replaced if k == b"x-frame-options"] == [b"DENY"]


def test_request_id_replaces_the_upstreams_own():
    policy = RequestId(RequestIdConfig(), PolicyEnv())
    req = _request(headers=[(b"x-request-id", b"client-1")])
    asyncio.run(policy.on_request(req, Context()))
    fresh = _respond(policy, req, [(b"content-type", b"text/plain")])
    assert [k for k, _ in fresh] == [b"content-type", b"x-request-id", b"x-response-time"]
    assert dict(fresh)[b"x-request-id"] == b"client-1"
    replaced = _respond(policy, req, [(b"x-request-id", b"upstream"), (b"x-response-time", b"9ms"), (b"a", b"b")])
    assert [k for k, _ in replaced] == [b"a", b"x-request-id", b"x-response-time"]
    assert dict(replaced)[b"x-request-id"] == b"client-1"


def test_cors_decision_cache_answers_as_the_matcher_and_stays_bounded():
    origins = ["https://app.example.com", "https://*.example.com"]
    policy = Cors(CorsConfig(allow_origins=origins), PolicyEnv())
    matcher = OriginMatcher(origins)
    asked = [
        "https://app.example.com",
        "https://APP.example.com:443",
        "https://x.example.com",
        "https://x.y.example.com",
        "http://app.example.com",
        "null",
        "https://evil.com",
        "https://app.example.com/path",
    ]
    for _ in range(2):  # the second round is answered from the cache
        assert [policy.allowed(o) for o in asked] == [matcher.allows(o) for o in asked]
    for i in range(policy.CACHE_SIZE + 10):
        policy.allowed(f"https://h{i}.example.com")
    assert len(policy._decisions) <= policy.CACHE_SIZE
    assert policy.allowed("https://evil.com") is False and policy.allowed("https://app.example.com") is True


def test_request_header_is_the_first_value_of_a_repeated_name():
    req = _request(headers=[(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"c", b"")])
    assert (req.header(b"a"), req.header(b"b"), req.header(b"c"), req.header(b"d")) == (b"1", b"2", b"", None)


def test_route_pipeline_leaves_out_what_the_edge_completed():
    from bastion.pipeline import Pipeline
    from bastion.policies.cors import Cors as _Cors

    rid = RequestId(RequestIdConfig(), PolicyEnv())
    cors = _Cors(CorsConfig(allow_origins=["https://a.example.com"]), PolicyEnv())
    other_rid = RequestId(RequestIdConfig(), PolicyEnv())  # not the edge's instance: kept
    route = Pipeline([rid, cors], edge=[rid])
    assert route.request_phase == (cors,)
    assert rid in route.response_phase  # only the request phase is the edge's
    assert Pipeline([other_rid, cors], edge=[rid]).request_phase == (other_rid, cors)
    assert Pipeline([cors], edge=[cors]).request_phase == (cors,)  # cors is not edge_once
