"""Session 7's per-request shortcuts in the policies, each against the code it replaced (kept
here as the oracle, as it was on main at 1ba2509) on generated inputs: the IP rules' verdict per
client address and CORS's answer per Origin (both remembered, bounded: run with a tiny cache so
that overflow happens), security headers and the credential/body checks done in one pass, the
body limit's inlined Content-Length, the rate limit's inlined choice of limits, and the response
body gate skipping error masking's answers below 500. Equal refusals and equal headers."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.http import NetworkSet, Request, Response, problem
from bastion.pipeline import Context, PolicyEnv
from bastion.policies.body_limit import BodyLimit, BodyLimitConfig
from bastion.policies.cors import Cors, CorsConfig, _add_vary
from bastion.policies.error_masking import ErrorMasking, ErrorMaskingConfig
from bastion.policies.ip_rules import IpRules, IpRulesConfig
from bastion.policies.rate_limit import RateLimit, RateLimitConfig
from bastion.policies.security_headers import SecurityHeaders, SecurityHeadersConfig
from bastion.principal import Principal
from bastion.response_body import open_gate

ENV = PolicyEnv()


async def _receive() -> dict:
    return {"type": "http.request", "body": b""}


def request(
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    method: str = "GET",
    path: str = "/a",
    scheme: str = "http",
    client_ip: Any = None,
) -> Request:
    return Request(method, path, b"", list(headers or []), client_ip, client_ip, False, scheme, "h", _receive)


def outcome(resp: Response | None) -> Any:
    return None if resp is None else (resp.status, resp.headers, resp.body, resp.stopped_by, resp.reason)


# ---- IP rules -----------------------------------------------------------------------------------


def old_ip_rules(policy: IpRules, req: Request) -> Response | None:
    """IpRules.on_request_sync before the verdict cache."""
    ip = req.client_ip
    if ip in policy.block:
        reason = "client address is blocked"
    elif policy.allow and ip not in policy.allow:
        reason = "client address is not in the allowed networks"
    else:
        return None
    if policy.status == 404:
        return problem(
            404, "not-found", "no route matches this request", request_id=req.request_id, stopped_by="ip_rules"
        )
    resp = problem(403, "ip-forbidden", reason, request_id=req.request_id)
    resp.reason = reason
    return resp


v4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
v6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
mapped = st.integers(0, 2**32 - 1).map(lambda n: ipaddress.IPv6Address((0xFFFF << 32) | n))
near = st.sampled_from(["10.1.2.3", "10.255.255.255", "11.0.0.0", "127.0.0.1", "192.0.2.7", "::1", "2001:db8::5"]).map(
    ipaddress.ip_address
)
scoped = st.tuples(st.integers(0, 2**16 - 1), st.sampled_from(["eth0", "1", "lo"])).map(
    lambda t: ipaddress.IPv6Address(f"fe80::{t[0]:x}%{t[1]}")
)
addresses = st.one_of(v4, v6, mapped, near, scoped, st.none())
networks = st.lists(
    st.sampled_from(
        ["10.0.0.0/8", "127.0.0.0/8", "192.0.2.0/24", "0.0.0.0/0", "::/0", "2001:db8::/32", "fe80::/10"]
        + ["::ffff:10.0.0.0/104", "10.1.2.3", "::1", "172.16.0.0/12"]
    ),
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(networks, networks, st.sampled_from([403, 404]), st.lists(addresses, min_size=1, max_size=40))
def test_ip_rules_verdict_cache_answers_as_the_uncached_rules(allow, block, status, ips):
    policy = IpRules(IpRulesConfig(allow=allow, block=block, status=status), ENV)
    policy.CACHE_SIZE = 3  # overflow (and clearing) within one example
    oracle = IpRules(IpRulesConfig(allow=allow, block=block, status=status), ENV)
    for ip in ips + ips:  # each address twice: the second time from the cache
        req = request(client_ip=ip)
        req.request_id = "r1"
        assert outcome(policy.on_request_sync(req, Context())) == outcome(old_ip_rules(oracle, req))
        assert len(policy._verdicts) <= 3


def test_ip_rules_cache_cannot_mix_v4_and_its_mapped_or_scoped_forms():
    policy = IpRules(IpRulesConfig(block=["10.0.0.0/8", "fe80::1/128"]), ENV)
    for text in ["10.0.0.1", "::ffff:10.0.0.1", "fe80::1", "fe80::1%eth0", "fe80::2%eth0"]:
        ip = ipaddress.ip_address(text)
        want = ip in NetworkSet(["10.0.0.0/8", "fe80::1/128"])
        assert (policy.on_request_sync(request(client_ip=ip), Context()) is not None) == want
        assert (policy.on_request_sync(request(client_ip=ip), Context()) is not None) == want


# ---- CORS ---------------------------------------------------------------------------------------


class OldCors:
    """Cors's phases before the per-Origin answer cache (main at 1ba2509)."""

    def __init__(self, policy: Cors) -> None:
        self.p = policy

    def on_request(self, req: Request, ctx: Context) -> Response | None:
        p = self.p
        origin = req.header(b"origin")
        if origin is None:
            return None
        ok = p.matcher.allows(origin.decode("latin-1"))
        ctx.values["old.origin_allowed"] = ok
        acrm = req.header(b"access-control-request-method")
        if req.method == "OPTIONS" and acrm is not None:
            return p._preflight(req, origin, ok, acrm)
        if not ok and p.block:
            return problem(
                403,
                "cors-origin-forbidden",
                "this origin may not call this API",
                request_id=req.request_id,
                headers=[(b"vary", b"Origin")],
            )
        return None

    def on_response(self, req: Request, resp: Response, ctx: Context) -> None:
        p = self.p
        if resp.stopped_by == p.name:
            return
        if any(k.startswith(b"access-control-") for k, _ in resp.headers):
            resp.headers = [(k, v) for k, v in resp.headers if not k.startswith(b"access-control-")]
        _add_vary(resp, b"Origin")
        origin = req.header(b"origin")
        if origin is None or not ctx.values.get("old.origin_allowed"):
            return
        resp.add_header(b"access-control-allow-origin", p._allow_origin_value(origin))
        if p.credentials:
            resp.add_header(b"access-control-allow-credentials", b"true")
        if p.expose:
            resp.add_header(b"access-control-expose-headers", p.expose)


tricky_origins = st.sampled_from(
    [
        "https://app.example.com",
        "https://APP.Example.COM",
        "https://app.example.com:443",
        "https://app.example.com:8443",
        "https://app.example.com.",
        "https://app.example.com.evil.com",
        "https://evilexample.com",
        "https://a.example.com",
        "https://a.b.example.com",
        "https://user@app.example.com",
        "https://app.example.com/",
        "https://app.example.com?x",
        "https://app.example.com#x",
        "http://app.example.com",
        "https://xn--app-example.com",
        "https://äpp.example.com",
        "https://app.example.com%2e",
        "https://app.example.com\\@evil.com",
        "https://[::1]",
        "https://[::1]:443",
        "null",
        "NULL",
        "",
        " https://app.example.com",
        "*",
        "http://localhost:3000",
        "http://localhost:03000",
    ]
)
origins = st.one_of(
    tricky_origins,
    tricky_origins.flatmap(lambda o: st.sampled_from([o.upper(), o.swapcase(), o.title()])),  # (all latin-1)
    st.text(st.characters(codec="latin-1"), max_size=30),
    st.from_regex(r"https?://[a-z0-9.\-]{1,20}(:[0-9]{1,5})?", fullmatch=True),
)
configs = st.fixed_dictionaries(
    {
        "allow_origins": st.lists(
            st.sampled_from(
                [
                    "https://app.example.com",
                    "https://*.example.com",
                    "null",
                    "*",
                    "http://localhost:3000",
                    "https://[::1]",
                ]
            ),
            max_size=3,
        ),
        "allow_credentials": st.booleans(),
        "block_disallowed": st.booleans(),
        "expose_headers": st.sampled_from([[], ["X-Total"], ["X-A", "X-B"]]),
        "allow_headers": st.sampled_from([[], ["content-type"], ["x-a", "authorization"]]),
    }
).filter(lambda c: not (c["allow_credentials"] and "*" in c["allow_origins"]))
upstream_headers = st.lists(
    st.tuples(
        st.sampled_from(
            [b"content-type", b"vary", b"access-control-allow-origin", b"access-control-max-age", b"x-a", b"Vary"]
        ),
        st.sampled_from([b"Accept", b"origin", b"*", b"x", b"Accept, Origin"]),
    ),
    max_size=4,
)
cors_request = st.tuples(
    st.one_of(st.none(), origins),
    st.sampled_from(["GET", "POST", "OPTIONS"]),
    st.one_of(st.none(), st.sampled_from([b"GET", b"put", b" POST ", b"DELETE"])),
    st.one_of(st.none(), st.sampled_from([b"content-type", b"X-A, authorization", b"x-b", b""])),
    upstream_headers,
)


def _swapcase(origin: str | None) -> str | None:
    """The same Origin in other cases (kept as it is when that leaves latin-1: 'ÿ' is 'Ÿ')."""
    if origin is None:
        return None
    swapped = origin.swapcase()
    return swapped if swapped.encode("latin-1", "replace").decode("latin-1") == swapped else origin


@settings(max_examples=300, deadline=None)
@given(configs, st.lists(cors_request, min_size=1, max_size=12))
def test_cors_answer_cache_matches_the_uncached_policy(config, requests):
    policy = Cors(CorsConfig(**config), ENV)
    policy.CACHE_SIZE = 2  # overflow within one example
    policy.KEY_MAX = 24  # and origins too long to be remembered
    oracle = OldCors(Cors(CorsConfig(**config), ENV))
    # each request again, and with its Origin in other cases (equal for the matcher, not as a value)
    variants = [(_swapcase(o), *rest) for o, *rest in requests]
    for origin, method, acrm, acrh, upstream in requests + variants + requests:
        headers = [] if origin is None else [(b"origin", origin.encode("latin-1"))]
        if acrm is not None:
            headers.append((b"access-control-request-method", acrm))
        if acrh is not None:
            headers.append((b"access-control-request-headers", acrh))
        results = []
        for run_request, run_response in (
            (policy.on_request_sync, policy.on_response_sync),
            (oracle.on_request, oracle.on_response),
        ):
            req, ctx = request(headers, method=method), Context()
            req.request_id = "r1"
            refusal = run_request(req, ctx)
            resp = refusal or Response(200, list(upstream))
            run_response(req, resp, ctx)
            results.append((outcome(refusal), resp.status, resp.headers))
        assert results[0] == results[1]
        assert len(policy._answers) <= 2
        assert all(len(k) <= 24 for k in policy._answers)


# ---- security headers, credentials, bodies ------------------------------------------------------


def old_security_headers(p: SecurityHeaders, req: Request, resp: Response) -> None:
    wanted = p.always_https if req.scheme == "https" else p.always
    present = {k for k, _ in resp.headers}
    if present.isdisjoint(p.names):
        resp.headers.extend(wanted)
    else:
        for name, value in wanted:
            if name not in present:
                resp.headers.append((name, value))
            elif p.override:
                resp.set_header(name, value)
    if p.no_store and old_carries_credentials(req):
        cc = (resp.get_header(b"cache-control") or b"").lower()
        if b"no-store" not in cc and b"private" not in cc:
            resp.set_header(b"cache-control", b"no-store")


def old_carries_credentials(req: Request) -> bool:
    h = req.header
    return any(h(n) is not None for n in (b"authorization", b"cookie", b"x-api-key", b"proxy-authorization"))


def old_has_body(req: Request) -> bool:
    return req.header(b"content-length") not in (None, b"0") or req.header(b"transfer-encoding") is not None


header_names = st.sampled_from(
    [
        b"x-frame-options",
        b"strict-transport-security",
        b"content-security-policy",
        b"cache-control",
        b"authorization",
        b"cookie",
        b"x-api-key",
        b"proxy-authorization",
        b"content-length",
        b"transfer-encoding",
        b"x-other",
        b"x-extra",
    ]
)
header_values = st.sampled_from([b"", b"0", b"12", b"no-store", b"PRIVATE", b"max-age=1", b"x", b"1a", b"chunked"])
header_lists = st.lists(st.tuples(header_names, header_values), max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "override": st.booleans(),
            "no_store_with_credentials": st.booleans(),
            "hsts": st.sampled_from([None, "max-age=5"]),
            "frame_options": st.sampled_from([None, "DENY"]),
            "extra": st.sampled_from([{}, {"X-Extra": "1"}]),
        }
    ),
    st.sampled_from(["http", "https"]),
    header_lists,
    header_lists,
)
def test_security_headers_and_request_checks_match_the_old_code(config, scheme, req_headers, resp_headers):
    policy = SecurityHeaders(SecurityHeadersConfig(**config), ENV)
    req = request(req_headers, scheme=scheme)
    assert req.carries_credentials() == old_carries_credentials(req)
    assert req.has_body() == old_has_body(request(req_headers))  # (before and after the map is built)
    assert request(req_headers).has_body() == old_has_body(req)
    new, old = Response(200, list(resp_headers)), Response(200, list(resp_headers))
    policy.on_response_sync(req, new, Context())
    old_security_headers(policy, request(req_headers, scheme=scheme), old)
    assert new.headers == old.headers


def old_body_limit(p: BodyLimit, req: Request) -> Response | None:
    if len(req.path) + len(req.query) > p.max_uri:
        return problem(414, "uri-too-long", f"the request target is longer than {p.max_uri} bytes", request_id="r")
    try:
        length = req.content_length()
    except ValueError:
        return problem(400, "bad-request", "the Content-Length header is not a number", request_id="r")
    if length is not None and length > p.max_bytes:
        return problem(
            413,
            "body-too-large",
            f"the request body is larger than {p.max_bytes} bytes",
            request_id="r",
            extra={"max_bytes": p.max_bytes},
        )
    req.body_limit = p.max_bytes if req.body_limit is None else min(req.body_limit, p.max_bytes)
    return None


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 100),
    st.one_of(st.none(), st.integers(0, 200)),
    st.lists(
        st.one_of(
            st.sampled_from([b"", b"5", b"0050", b"1e3", b"-1", b"+5", b" 5", "\u0665".encode()]), st.binary(max_size=4)
        ),
        max_size=2,
    ),
)
def test_body_limit_inlined_content_length_matches(max_bytes, prior_limit, lengths):
    policy = BodyLimit(BodyLimitConfig(max_bytes=max_bytes), ENV)
    headers = [(b"content-length", v) for v in lengths]
    new, old = request(headers), request(headers)
    new.request_id = old.request_id = "r"
    new.body_limit = old.body_limit = prior_limit
    assert outcome(policy.on_request_sync(new, Context())) == outcome(old_body_limit(policy, old))
    assert new.body_limit == old.body_limit


# ---- rate limit: the limits that apply ----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["/login", "/login/", "/a", "/", "/token//", "/auth/login"]),
    st.one_of(st.none(), st.sampled_from(["gold", "free", "none"])),
    st.booleans(),
    st.sampled_from([[], ["5/minute"]]),
)
def test_rate_limit_applicable_limits_as_before(path, tier, anonymous, login_limits):
    policy = RateLimit(
        RateLimitConfig(limits=["100/minute"], tiers={"gold": ["1000/minute"]}, login_limits=login_limits), ENV
    )
    ctx = Context(principal=None if anonymous else Principal("u", tier=tier))
    # the old `_applicable`
    t = ctx.principal.tier if ctx.principal is not None else None
    want = policy.tiers.get(t, policy.limits) if t is not None else policy.limits
    if policy.login and (path.rstrip("/") or "/") in policy.login_paths:
        want = want + policy.login
    got = policy.on_request_sync(request(path=path), ctx)
    if not want:
        assert got is None
    else:
        assert got is not None and got.cr_frame.f_locals["limits"] == want  # type: ignore[union-attr]
        got.close()  # type: ignore[union-attr]


# ---- the response body gate and error masking ---------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(100, 599), st.sampled_from([b"application/json", b"text/html", b"", b"application/problem+json"]))
def test_error_masking_alone_gets_the_gate_only_for_server_errors(status, ctype):
    masking = ErrorMasking(ErrorMaskingConfig(), ENV)
    ctx = Context()
    ctx.response_rewriters.append(masking)
    resp = Response(status, [(b"content-type", ctype)] if ctype else [])
    gate = open_gate(request(), resp, ctx)
    assert masking.wants(resp, True) == masking.wants(resp, False) == (status >= 500)
    assert (gate is not None) == (status >= 500 and status not in (204, 304))


def test_the_gate_still_asks_other_rewriters_below_500():
    class Wants:
        def wants(self, resp: Response, json: bool) -> bool:
            return True

        def transform(self, *a: Any) -> Any:
            class Same:
                def feed(self, data: bytes) -> bytes:
                    return data

                def finish(self) -> bytes:
                    return b""

            return Same()

    ctx = Context()
    ctx.response_rewriters += [ErrorMasking(ErrorMaskingConfig(), ENV), Wants()]
    assert open_gate(request(), Response(200, [(b"content-type", b"application/json")]), ctx) is not None


def test_run_forms_agree():  # (the policies through a pipeline: sync and awaited forms)
    from bastion.pipeline import Pipeline

    pipe = Pipeline(
        [Cors(CorsConfig(allow_origins=["https://a.example"]), ENV), SecurityHeaders(SecurityHeadersConfig(), ENV)]
    )
    req = request([(b"origin", b"https://a.example")])
    ctx = Context()
    assert pipe.request(req, ctx) is None
    resp = Response(200)
    assert pipe.response(req, resp, ctx) is None
    other = Response(200)
    asyncio.run(pipe.run_response(req, other, ctx))
    assert resp.headers == other.headers and (b"access-control-allow-origin", b"https://a.example") in resp.headers
