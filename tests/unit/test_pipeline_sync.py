"""Phases written as `on_request_sync` / `on_response_sync` are called by the pipeline without a
coroutine. Differential: on random mixes of synchronous, asynchronous and overriding policies,
the pipeline's calls, their order, the refusal it returns and its `stopped_by` are those of the
slow path (every phase awaited through `on_request` / `on_response`, as before the fast path),
with and without policy spans. The real policies that were made synchronous are checked to be
called directly and to answer as their awaited methods do."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.http import Request, Response, problem
from bastion.pipeline import Context, Pipeline, Policy, PolicyConfig, PolicyEnv

KINDS = ("async", "sync", "none", "override", "both", "deferred", "tracer")


def make(i: int, kind: str, priority: int, outcome: str, calls: list[str], spanned: bool) -> Policy:
    """One policy: `kind` says how its phases are written; "override": a subclass of a
    synchronous policy whose own async `on_request`/`on_response` replace the parent's (the
    parent's sync functions must then never run); "both": sync functions and async methods of
    its own (the async ones are the policy's phases); "deferred": `on_request_sync` answers a
    passing request at once and returns a coroutine (the slow way) for the others."""
    name = f"p{i}"

    def answer() -> Response | None:
        if outcome == "refuse":
            return problem(403, "no", "refused")
        if outcome == "named":
            return Response(401, stopped_by=f"{name}:inner")
        return None

    def req_sync(self, req, ctx):
        calls.append(f"req-sync:{name}")
        return answer()

    def resp_sync(self, req, resp, ctx):
        calls.append(f"resp-sync:{name}")
        resp.headers.append((b"x-by", name.encode()))

    async def req_async(self, req, ctx):
        calls.append(f"req-async:{name}")
        await asyncio.sleep(0)
        return answer()

    async def resp_async(self, req, resp, ctx):
        calls.append(f"resp-async:{name}")
        await asyncio.sleep(0)
        resp.headers.append((b"x-by", name.encode()))

    def req_deferred(self, req, ctx):
        calls.append(f"req-sync:{name}")
        if outcome == "pass":
            return None

        async def slow():
            calls.append(f"req-slow:{name}")
            await asyncio.sleep(0)
            return answer()

        return slow()

    def req_tracer(self, req, ctx):  # the tracing policy: sets the trace in the request phase
        calls.append(f"req-sync:{name}")
        if ctx.trace is None:
            ctx.trace = Trace(calls)
        return answer()

    base_attrs: dict = {"name": name, "priority": priority, "Config": PolicyConfig, "spanned": spanned}
    if kind == "tracer":
        attrs = {**base_attrs, "on_request_sync": req_tracer, "on_response_sync": resp_sync}
    elif kind == "async":
        attrs = {**base_attrs, "on_request": req_async, "on_response": resp_async}
    elif kind == "sync":
        attrs = {**base_attrs, "on_request_sync": req_sync, "on_response_sync": resp_sync}
    elif kind == "deferred":
        attrs = {**base_attrs, "on_request_sync": req_deferred, "on_response_sync": resp_sync}
    elif kind == "none":
        attrs = dict(base_attrs)
    elif kind == "both":
        attrs = {
            **base_attrs,
            "on_request_sync": req_sync,
            "on_response_sync": resp_sync,
            "on_request": req_async,
            "on_response": resp_async,
        }
    else:  # override
        parent = type(
            f"Parent_{name}", (Policy,), {**base_attrs, "on_request_sync": req_sync, "on_response_sync": resp_sync}
        )
        cls = type(f"P_{name}", (parent,), {"on_request": req_async, "on_response": resp_async})
        return cls(PolicyConfig(), PolicyEnv())
    return type(f"P_{name}", (Policy,), attrs)(PolicyConfig(), PolicyEnv())


def in_request_phase(kind: str) -> bool:
    return kind != "none"


async def slow_request(specs, policies, req, ctx) -> Response | None:
    """The oracle: every phase awaited through `on_request`, membership from the spec alone."""
    for (kind, _p, _o, _s), policy in sorted(zip(specs, policies, strict=True), key=lambda sp: -sp[1].priority):
        if not in_request_phase(kind):
            continue
        trace = ctx.trace
        span = trace.child("policy " + policy.name) if trace is not None and policy.spanned else None
        try:
            resp = await policy.on_request(req, ctx)
        finally:
            if span is not None:
                span.end()
        if resp is not None:
            if not resp.stopped_by:
                resp.stopped_by = policy.name
            return resp
    return None


async def slow_response(specs, policies, req, resp, ctx) -> None:
    ordered = sorted(zip(specs, policies, strict=True), key=lambda sp: -sp[1].priority)
    for (kind, _p, _o, _s), policy in reversed(ordered):
        if in_request_phase(kind):
            await policy.on_response(req, resp, ctx)


def request() -> Request:
    async def receive():
        return {"type": "http.request", "body": b""}

    return Request("GET", "/", b"", [], None, None, False, "http", "t", receive)


class Trace:
    policy_spans = True

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def child(self, name: str):
        self.log.append("open " + name)
        log = self.log

        class Span:
            def end(self) -> None:
                log.append("end " + name)

        return Span()


spec = st.tuples(
    st.sampled_from(KINDS), st.integers(0, 1000), st.sampled_from(["pass", "pass", "refuse", "named"]), st.booleans()
)


@settings(max_examples=300, deadline=None)
@given(st.lists(spec, max_size=8), st.booleans(), st.booleans())
def test_fast_pipeline_matches_the_awaited_slow_path(specs, traced, direct):
    """`direct`: the forms the gateway calls (`request` / `response`, awaited only when they
    return an awaitable), else the awaited `run_request` / `run_response`."""

    def run(fast: bool):
        calls: list[str] = []
        policies = [make(i, k, p, o, calls, s) for i, (k, p, o, s) in enumerate(specs)]
        ctx = Context(trace=Trace(calls) if traced else None)
        req = request()

        async def go():
            if fast and direct:
                pipe = Pipeline(policies)
                refusal = pipe.request(req, ctx)
                if refusal is not None and not isinstance(refusal, Response):
                    refusal = await refusal
                resp = refusal or Response(200)
                pending = pipe.response(req, resp, ctx)
                if pending is not None:
                    await pending
            elif fast:
                pipe = Pipeline(policies)
                refusal = await pipe.run_request(req, ctx)
                resp = refusal or Response(200)
                await pipe.run_response(req, resp, ctx)
            else:
                refusal = await slow_request(specs, policies, req, ctx)
                resp = refusal or Response(200)
                await slow_response(specs, policies, req, resp, ctx)
            return refusal, resp

        refusal, resp = asyncio.run(go())
        got = None if refusal is None else (refusal.status, refusal.stopped_by)
        return calls, got, resp.status, resp.headers

    assert run(True) == run(False)


def test_an_async_override_of_a_sync_parent_is_awaited_not_the_parents_function():
    calls: list[str] = []
    p = make(0, "override", 1, "refuse", calls, True)
    pipe = Pipeline([p])
    resp = asyncio.run(pipe.run_request(request(), Context()))
    assert calls == ["req-async:p0"] and resp is not None and resp.stopped_by == "p0"
    assert pipe._request_steps[0][1] is None


def test_the_real_synchronous_policies_are_called_directly_and_answer_as_awaited():
    from bastion.policies.body_limit import BodyLimit, BodyLimitConfig
    from bastion.policies.cors import Cors, CorsConfig
    from bastion.policies.ip_rules import IpRules, IpRulesConfig
    from bastion.policies.request_id import RequestId, RequestIdConfig
    from bastion.policies.security_headers import SecurityHeaders, SecurityHeadersConfig

    env = PolicyEnv()
    policies: list[Policy] = [
        RequestId(RequestIdConfig(), env),
        IpRules(IpRulesConfig(block=["127.0.0.0/8"]), env),
        BodyLimit(BodyLimitConfig(), env),
        Cors(CorsConfig(allow_origins=["https://a.example"]), env),
        SecurityHeaders(SecurityHeadersConfig(), env),
    ]
    pipe = Pipeline(policies)
    assert all(now is not None for _, now in pipe._request_steps + pipe._response_steps)

    import ipaddress

    def req() -> Request:
        r = request()
        r.client_ip = ipaddress.ip_address("127.0.0.1")
        r.request_id = "rid-1"  # RequestId keeps it: both answers carry the same id
        return r

    class Plain(Policy):  # the same refusal through the awaited method
        name: ClassVar[str] = "x"
        priority: ClassVar[int] = 0
        Config = PolicyConfig

    fast = asyncio.run(pipe.run_request(req(), Context()))
    awaited = asyncio.run(policies[1].on_request(req(), Context()))
    assert fast is not None and awaited is not None
    assert (fast.status, fast.body) == (awaited.status, awaited.body)
    assert fast.status == 403 and b"rid-1" in fast.body
    assert fast.stopped_by == "ip_rules"
    assert Pipeline([Plain(PolicyConfig(), env)]).request_phase == ()
