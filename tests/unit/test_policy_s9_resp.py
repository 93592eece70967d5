"""Session 9 (s9-resp): the small policies' per-request shortcuts, each against the code it
replaced (kept here as the oracle, as it was on main at d0775d0) on generated requests, headers
and origins. CORS's answers carry their Vary: Origin and are appended in one `extend`, its
request phase returns early for an allowed non-preflight; security headers and the body limit,
the method field and CORS read the request's header map inline when it is built (each request
is run twice: with the map built before the policy runs, and without); the IP rules' one-entry
memo starts with no address instead of None; a rate limit or IP rules config whose phase does
nothing is built without that phase. Equal refusals, equal headers, equal limits."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.http import Request, Response, problem
from bastion.http.messages import CONTENT_LENGTH_DIGITS
from bastion.pipeline import Context, PolicyEnv
from bastion.policies.body_limit import BodyLimit, BodyLimitConfig
from bastion.policies.cors import Cors, CorsConfig, _add_vary
from bastion.policies.ip_rules import IpRules, IpRulesConfig
from bastion.policies.method_field import MethodField, MethodFieldConfig, _overridden
from bastion.policies.rate_limit import RateLimit, RateLimitConfig
from bastion.policies.security_headers import SecurityHeaders, SecurityHeadersConfig
from bastion.principal import Principal

ENV = PolicyEnv()


async def _receive() -> dict:
    return {"type": "http.request", "body": b""}


def request(
    headers: list[tuple[bytes, bytes]],
    *,
    method: str = "GET",
    path: str = "/a",
    query: bytes = b"",
    scheme: str = "http",
    client_ip: Any = None,
    mapped: bool = False,
) -> Request:
    """A request; `mapped`: its header map already built (by an earlier policy, as in a gateway)."""
    req = Request(method, path, query, list(headers), client_ip, client_ip, False, scheme, "h", _receive)
    req.request_id = "r1"
    if mapped:
        req.header(b"host")
    return req


def outcome(resp: Any) -> Any:
    return None if resp is None else (resp.status, resp.headers, resp.body, resp.stopped_by, resp.reason)


# ---- CORS ---------------------------------------------------------------------------------------


class OldCors(Cors):
    """Cors's per-request methods as they were at d0775d0 (the answer cache without Vary)."""

    def answer(self, origin: bytes) -> tuple[tuple[bytes, bytes], ...]:
        made = self._answers.get(origin)
        if made is None:
            made = self._answer_uncached(origin)
            if len(origin) <= self.KEY_MAX:
                if len(self._answers) >= self.CACHE_SIZE:
                    self._answers.clear()
                self._answers[origin] = made
        return made

    def _answer_uncached(self, origin: bytes) -> tuple[tuple[bytes, bytes], ...]:
        if not self.matcher.allows(origin.decode("latin-1")):
            return ()
        out = [(b"access-control-allow-origin", self._allow_origin_value(origin))]
        if self.credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        if self.expose:
            out.append((b"access-control-expose-headers", self.expose))
        return tuple(out)

    def on_request_sync(self, req: Request, ctx: Context) -> Response | None:
        origin = req.header(b"origin")
        if origin is None:
            return None
        made = self._answers.get(origin)  # (`answer`, its cache read here: one call less)
        if made is None:
            made = self.answer(origin)
        if made:
            ctx.values["cors.answer"] = made  # for the response phase (not set: no ACAO)
        if req.method == "OPTIONS" and (acrm := req.header(b"access-control-request-method")) is not None:
            return self._preflight(req, origin, bool(made), acrm)
        if not made and self.block:
            return problem(
                403,
                "cors-origin-forbidden",
                "this origin may not call this API",
                request_id=req.request_id,
                headers=[(b"vary", b"Origin")],
            )
        return None

    def on_response_sync(self, req: Request, resp: Response, ctx: Context) -> None:
        if resp.stopped_by == self.name:
            return  # our own answers (preflights, refusals) are complete as they are
        # The gateway owns CORS on this route: whatever the upstream said is dropped.
        vary = strip = False
        for k, _ in resp.headers:
            if k == b"vary":
                vary = True
            elif k[:1] == b"a" and k.startswith(b"access-control-"):  # (a method call only for a-names)
                strip = True
        if strip:
            resp.headers = [(k, v) for k, v in resp.headers if not k.startswith(b"access-control-")]
        if vary:
            _add_vary(resp, b"Origin")
        else:
            resp.headers.append((b"vary", b"Origin"))
        made = ctx.values.get("cors.answer")  # set by the request phase for an allowed Origin
        if made:
            resp.headers.extend(made)


TRICKY_ORIGINS = [
    "https://app.example.com",
    "https://APP.Example.COM",
    "https://app.example.com:443",
    "https://app.example.com:8443",
    "https://app.example.com.",
    "https://app.example.com.evil.com",
    "https://evil.app.example.com.evil.com",
    "https://a.example.com.evil.com",
    "https://evilexample.com",
    "https://example.com",
    "https://a.example.com",
    "https://a.b.example.com",
    "https://user@app.example.com",
    "https://app.example.com/",
    "https://app.example.com%2e",
    "https://app.example.com\\@evil.com",
    "http://app.example.com",
    "https://[::1]",
    "null",
    "NULL",
    "",
    " https://app.example.com",
    "*",
    "http://localhost:3000",
]
origins = st.one_of(
    st.sampled_from(TRICKY_ORIGINS),
    st.text(st.characters(codec="latin-1"), max_size=30),
    st.from_regex(
        r"https?://([a-z0-9\-]{1,8}\.){0,3}(example\.com|evil\.com)(\.evil\.com)?(:[0-9]{1,5})?", fullmatch=True
    ),
)
cors_configs = st.fixed_dictionaries(
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
        "allow_methods": st.sampled_from([["GET", "HEAD", "POST"], ["put"]]),
    }
).filter(lambda c: not (c["allow_credentials"] and "*" in c["allow_origins"]))
upstream_headers = st.lists(
    st.tuples(
        st.sampled_from(
            [
                b"content-type",
                b"vary",
                b"Vary",
                b"access-control-allow-origin",
                b"access-control-allow-credentials",
                b"access-control-max-age",
                b"accept-ranges",
                b"a",
                b"x-a",
            ]
        ),
        st.sampled_from([b"Accept", b"origin", b"*", b"x", b"Accept, Origin", b""]),
    ),
    max_size=5,
)
cors_requests = st.tuples(
    st.lists(origins, max_size=2),  # none, one, or a repeated Origin header (the first counts)
    st.sampled_from(["GET", "POST", "OPTIONS", "PUT"]),
    st.one_of(st.none(), st.sampled_from([b"GET", b"put", b" POST ", b"DELETE"])),
    st.one_of(st.none(), st.sampled_from([b"content-type", b"X-A, authorization", b"x-b", b""])),
    upstream_headers,
    st.booleans(),  # the header map built before CORS runs
    st.sampled_from(["", "cors", "other"]),  # the answer's stopped_by
)


@settings(max_examples=400, deadline=None)
@given(cors_configs, st.lists(cors_requests, min_size=1, max_size=12), st.integers(1, 4))
def test_cors_answers_as_the_old_policy(config, requests, cache):
    policy = Cors(CorsConfig(**config), ENV)
    oracle = OldCors(CorsConfig(**config), ENV)
    policy.CACHE_SIZE = oracle.CACHE_SIZE = cache  # overflow within one example
    policy.KEY_MAX = oracle.KEY_MAX = 24  # and origins too long to be remembered
    for origin_values, method, acrm, acrh, upstream, mapped, stopped_by in requests + requests:
        headers = [(b"accept", b"*/*")] + [(b"origin", o.encode("latin-1")) for o in origin_values]
        if acrm is not None:
            headers.append((b"access-control-request-method", acrm))
        if acrh is not None:
            headers.append((b"access-control-request-headers", acrh))
        results = []
        for p in (policy, oracle):
            req, ctx = request(headers, method=method, mapped=mapped), Context()
            refusal = p.on_request_sync(req, ctx)
            resp = refusal or Response(200, list(upstream), stopped_by=stopped_by)
            p.on_response_sync(req, resp, ctx)
            results.append((outcome(refusal), resp.status, resp.headers))
        assert results[0] == results[1]
        assert len(policy._answers) <= cache
        origin = origin_values[0].encode("latin-1") if origin_values else None
        if origin is not None:
            assert policy.answer(origin) == oracle.answer(origin)


def test_cors_never_allows_a_suffix_of_an_allowed_origin():
    """The security property, spelled out: exact and label patterns only, Vary: Origin always."""
    policy = Cors(
        CorsConfig(allow_origins=["https://app.example.com", "https://*.example.com"], allow_credentials=True), ENV
    )
    for origin in [b"https://app.example.com.evil.com", b"https://evilexample.com", b"https://example.com"]:
        req, ctx = request([(b"origin", origin)], mapped=True), Context()
        assert policy.on_request_sync(req, ctx) is None
        resp = Response(200, [(b"content-type", b"application/json")])
        policy.on_response_sync(req, resp, ctx)
        assert resp.headers == [(b"content-type", b"application/json"), (b"vary", b"Origin")]
    req, ctx = request([(b"origin", b"https://app.example.com")]), Context()
    assert policy.on_request_sync(req, ctx) is None
    resp = Response(200, [(b"vary", b"Accept"), (b"access-control-allow-origin", b"*")])
    policy.on_response_sync(req, resp, ctx)
    assert resp.headers == [
        (b"vary", b"Accept, Origin"),
        (b"access-control-allow-origin", b"https://app.example.com"),
        (b"access-control-allow-credentials", b"true"),
    ]


# ---- security headers ---------------------------------------------------------------------------


class OldSecurityHeaders(SecurityHeaders):
    """SecurityHeaders.on_response_sync as it was at d0775d0."""

    def on_response_sync(self, req: Request, resp: Response, ctx: Context) -> None:
        wanted = self.always_https if req.scheme == "https" else self.always
        names = self.names
        for k, _ in resp.headers:
            if k in names:  # the upstream set some of them: one by one
                present = {k for k, _ in resp.headers}
                for name, value in wanted:
                    if name not in present:
                        resp.headers.append((name, value))
                    elif self.override:
                        resp.set_header(name, value)
                break
        else:  # the usual case: the upstream set none of them
            resp.headers.extend(wanted)
        # (a principal: the auth policy accepted a credential, wherever its scheme reads it from)
        if self.no_store and (ctx.principal is not None or req.carries_credentials()):
            cc = (resp.get_header(b"cache-control") or b"").lower()
            if b"no-store" not in cc and b"private" not in cc:
                resp.set_header(b"cache-control", b"no-store")


header_names = st.sampled_from(
    [
        b"x-frame-options",
        b"strict-transport-security",
        b"content-security-policy",
        b"x-content-type-options",
        b"referrer-policy",
        b"cache-control",
        b"authorization",
        b"cookie",
        b"x-api-key",
        b"proxy-authorization",
        b"Authorization",
        b"content-length",
        b"x-other",
        b"x-extra",
    ]
)
header_values = st.sampled_from([b"", b"0", b"no-store", b"PRIVATE", b"max-age=1", b"x", b"No-Store, max-age=0"])
header_lists = st.lists(st.tuples(header_names, header_values), max_size=6)


@settings(max_examples=400, deadline=None)
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
    st.booleans(),
    st.booleans(),
)
def test_security_headers_as_the_old_policy(config, scheme, req_headers, resp_headers, principal, mapped):
    policy = SecurityHeaders(SecurityHeadersConfig(**config), ENV)
    oracle = OldSecurityHeaders(SecurityHeadersConfig(**config), ENV)
    results = []
    for p in (policy, oracle):
        ctx = Context(principal=Principal("u") if principal else None)
        resp = Response(200, list(resp_headers))
        p.on_response_sync(request(req_headers, scheme=scheme, mapped=mapped), resp, ctx)
        results.append(resp.headers)
    assert results[0] == results[1]


# ---- body limit ---------------------------------------------------------------------------------


class OldBodyLimit(BodyLimit):
    """BodyLimit.on_request_sync as it was at d0775d0."""

    def on_request_sync(self, req: Request, ctx: Context) -> Response | None:
        if len(req.path) + len(req.query) > self.max_uri:
            return problem(
                414,
                "uri-too-long",
                f"the request target is longer than {self.max_uri} bytes",
                request_id=req.request_id,
            )
        value = req.header(b"content-length")  # (`req.content_length()`, one call less)
        if value is not None and (not value.isdigit() or len(value) > CONTENT_LENGTH_DIGITS):
            return problem(400, "bad-request", "the Content-Length header is not a number", request_id=req.request_id)
        if value is not None and int(value) > self.max_bytes:
            return problem(
                413,
                "body-too-large",
                f"the request body is larger than {self.max_bytes} bytes",
                request_id=req.request_id,
                extra={"max_bytes": self.max_bytes},
            )
        # A chunked body is counted while it streams; the gateway answers 413 when it passes.
        if req.body_limit is None or req.body_limit > self.max_bytes:
            req.body_limit = self.max_bytes
        return None


@settings(max_examples=400, deadline=None)
@given(
    st.integers(0, 100),
    st.integers(64, 80),
    st.one_of(st.none(), st.integers(0, 200)),
    st.lists(
        st.one_of(
            st.sampled_from(
                [b"", b"5", b"0", b"0050", b"100", b"101", b"1e3", b"-1", b"+5", b" 5", "\u0665".encode(), b"9" * 19]
            ),
            st.binary(max_size=4),
        ),
        max_size=2,
    ),
    st.integers(0, 90),
    st.booleans(),
)
def test_body_limit_as_the_old_policy(max_bytes, max_uri, prior_limit, lengths, target, mapped):
    config = BodyLimitConfig(max_bytes=max_bytes, max_uri_length=max_uri)
    policy, oracle = BodyLimit(config, ENV), OldBodyLimit(config, ENV)
    headers = [(b"x", b"y")] + [(b"content-length", v) for v in lengths]
    path, query = "/" + "p" * (target // 2), b"q" * (target - target // 2)
    new = request(headers, path=path, query=query, mapped=mapped)
    old = request(headers, path=path, query=query, mapped=mapped)
    new.body_limit = old.body_limit = prior_limit
    assert outcome(policy.on_request_sync(new, Context())) == outcome(oracle.on_request_sync(old, Context()))
    assert new.body_limit == old.body_limit


# ---- method field: which requests are read ------------------------------------------------------


def old_method_field_reads(req: Request) -> bool:
    """MethodField.on_request_sync's choice as it was at d0775d0: a coroutine (the body is read)."""
    return not (not req.has_body() or (req.method != "POST" and not _overridden(req)))


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    st.lists(
        st.tuples(
            st.sampled_from(
                [b"content-length", b"transfer-encoding", b"x-http-method-override", b"x-method-override", b"x-a"]
            ),
            st.sampled_from([b"", b"0", b"00", b"12", b"chunked", b"DELETE"]),
        ),
        max_size=4,
    ),
    st.sampled_from([b"", b"_method=DELETE", b"a=1"]),
    st.booleans(),
)
def test_method_field_reads_the_requests_it_read(method, headers, query, mapped):
    policy = MethodField(MethodFieldConfig(), ENV)
    req = request(headers, method=method, query=query, mapped=mapped)
    got = policy.on_request_sync(req, Context())
    assert (got is not None) == old_method_field_reads(request(headers, method=method, query=query))
    if got is not None:
        got.close()  # type: ignore[union-attr]  # (a coroutine, not run)


# ---- rate limit: the limits that apply ----------------------------------------------------------


def old_rate_limit_limits(policy: RateLimit, req: Request, ctx: Context) -> tuple[Any, ...]:
    """The limits RateLimit.on_request_sync charged at d0775d0 (() for none: no coroutine)."""
    tier = ctx.principal.tier if ctx.principal is not None else None
    limits = policy.tiers.get(tier, policy.limits) if tier is not None else policy.limits
    if policy.login and (req.path.rstrip("/") or "/") in policy.login_paths:
        limits = limits + policy.login
    return limits


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.sampled_from(["/login", "/login/", "/login//", "/Login", "/a", "/", "//", "", "/token//", "/auth/login/x"]),
        st.from_regex(r"/?(login|token|a)?/{0,3}", fullmatch=True),
    ),
    st.one_of(st.none(), st.sampled_from(["gold", "free"])),
    st.booleans(),
    st.sampled_from([[], ["100/minute"]]),
    st.sampled_from([{}, {"gold": ["1000/minute"]}, {"gold": []}]),
    st.sampled_from([[], ["5/minute"]]),
    st.sampled_from([["/login", "/token/"], ["/"], []]),
)
def test_rate_limit_charges_the_limits_it_charged(path, tier, anonymous, limits, tiers, login_limits, login_paths):
    config = RateLimitConfig(limits=limits, tiers=tiers, login_limits=login_limits, login_paths=login_paths)
    policy = RateLimit(config, ENV)
    ctx = Context(principal=None if anonymous else Principal("u", tier=tier))
    want = old_rate_limit_limits(policy, request([], path=path), ctx)
    got = policy.on_request_sync(request([], path=path), ctx)
    if not want:
        assert got is None
    else:
        assert got is not None and got.cr_frame.f_locals["limits"] == want  # type: ignore[union-attr]
        got.close()  # type: ignore[union-attr]


# ---- IP rules: the memo's first state -----------------------------------------------------------


def old_ip_verdict(policy: IpRules, ip: Any) -> str:
    if ip in policy.block:
        return "client address is blocked"
    if policy.allow and ip not in policy.allow:
        return "client address is not in the allowed networks"
    return ""


addresses = st.one_of(
    st.none(),
    st.sampled_from(["127.0.0.1", "10.1.2.3", "192.0.2.7", "::1", "8.8.8.8"]).map(ipaddress.ip_address),
    st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["127.0.0.0/8", "10.0.0.0/8", "::/0"]), max_size=2),
    st.lists(st.sampled_from(["192.0.2.0/24", "10.9.0.0/16"]), max_size=2),
    st.lists(addresses, min_size=1, max_size=8),
)
def test_ip_rules_memo_as_the_uncached_rules_from_the_first_request(allow, block, ips):
    """A fresh policy's first request (None included: no client address) and each again."""
    policy = IpRules(IpRulesConfig(allow=allow, block=block), ENV)
    for ip in [x for a in ips for x in (a, a)]:
        refused = policy.on_request_sync(request([], client_ip=ip), Context())
        reason = old_ip_verdict(policy, ip)
        assert (refused is not None) == bool(reason)
        if refused is not None:
            assert refused.reason == reason


# ---- phases left out at load: rate limit without limits or headers, IP rules without networks --


class OldRateLimit(RateLimit):
    """RateLimit as it was at d0775d0: one class, in both phases whatever its config."""

    def __new__(cls, *args: Any, **kwargs: Any) -> OldRateLimit:
        return object.__new__(cls)

    def on_request_sync(self, req: Request, ctx: Context) -> Any:
        tier = ctx.principal.tier if ctx.principal is not None else None
        limits = self.tiers.get(tier, self.limits) if tier is not None else self.limits
        if self.login and (req.path.rstrip("/") or "/") in self.login_paths:
            limits = limits + self.login
        if not limits:
            return None
        return self._limit(limits, req, ctx)

    def on_response_sync(self, req: Request, resp: Response, ctx: Context) -> None:
        results = ctx.values.get("rate_limit.results")
        if results and self.headers and resp.stopped_by != self.name:
            resp.headers.extend(self._headers(results))


def _timeless(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers without the seconds to a reset (they move with the clock between two runs)."""
    out = []
    for k, v in headers:
        if k in (b"x-ratelimit-reset", b"retry-after"):
            v = b"?"
        elif k == b"ratelimit":
            v = v.rpartition(b";t=")[0]
        out.append((k, v))
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([[], ["2/hour"]]),
    st.sampled_from([{}, {"gold": ["1/hour"]}, {"gold": []}]),
    st.sampled_from([[], ["1/hour"]]),
    st.sampled_from([["/login"], []]),
    st.booleans(),
    st.lists(st.tuples(st.sampled_from(["/a", "/login", "/login/"]), st.sampled_from([None, "gold"])), max_size=5),
)
def test_rate_limit_pipeline_as_the_old_policy(limits, tiers, login_limits, login_paths, headers, calls):
    """Through a Pipeline, as the gateway runs it: the same refusals and the same headers, whether
    the config left a phase out or not (each policy its own memory store: a fresh key prefix)."""
    import asyncio
    import uuid

    from bastion.pipeline import Pipeline

    def config(prefix: str) -> RateLimitConfig:
        return RateLimitConfig(
            limits=limits,
            tiers=tiers,
            login_limits=login_limits,
            login_paths=login_paths,
            headers=headers,
            algorithm="fixed_window",
            key_prefix=prefix,
        )

    tag = uuid.uuid4().hex
    new, old = RateLimit(config("new" + tag), ENV), OldRateLimit(config("old" + tag), ENV)
    pipelines = Pipeline([new]), Pipeline([old])
    assert bool(pipelines[0].request_phase) == bool(limits or tiers.get("gold") or (login_limits and login_paths))

    async def run(pipeline: Pipeline, path: str, tier: str | None) -> Any:
        ctx = Context(principal=None if tier is None else Principal("u", tier=tier))
        req = request([], path=path, client_ip=ipaddress.ip_address("192.0.2.9"))
        refusal = await pipeline.run_request(req, ctx)
        resp = refusal or Response(200, [(b"content-type", b"application/json")])
        await pipeline.run_response(req, resp, ctx)
        return resp.status, _timeless(resp.headers)

    async def go() -> None:
        for path, tier in calls + calls:
            assert await run(pipelines[0], path, tier) == await run(pipelines[1], path, tier)

    asyncio.run(go())


def test_ip_rules_without_networks_are_in_no_phase_and_pass_everyone():
    from bastion.pipeline import Pipeline

    empty = IpRules(IpRulesConfig(), ENV)
    assert Pipeline([empty]).request_phase == ()
    assert Pipeline([IpRules(IpRulesConfig(block=["192.0.2.0/24"]), ENV)]).request_phase != ()
    assert Pipeline([IpRules(IpRulesConfig(allow=["10.0.0.0/8"]), ENV)]).request_phase != ()
    for ip in [None, ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("::1")]:
        assert empty.on_request_sync(request([], client_ip=ip), Context()) is None
        assert old_ip_verdict(empty, ip) == ""
