"""The Pipeline itself: priority order, short-circuit, `stopped_by`, the response phase in
reverse, only overriding phases run, and a failing log sink never breaks serving."""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from bastion.http import Request, Response, problem
from bastion.pipeline import Context, Pipeline, Policy, PolicyConfig, PolicyEnv


def make(
    name: str,
    priority: int,
    calls: list[str],
    *,
    stop: bool = False,
    log_fails: bool = False,
    request: bool = True,
    response: bool = True,
) -> Policy:
    attrs: dict = {"name": name, "priority": priority, "Config": PolicyConfig}

    async def on_request(self, req, ctx):
        calls.append(f"req:{name}")
        return problem(403, "no", "stopped") if stop else None

    async def on_response(self, req, resp, ctx):
        calls.append(f"resp:{name}")

    def on_log(self, req, resp, ctx, record):
        calls.append(f"log:{name}")
        if log_fails:
            raise RuntimeError("sink down")

    if request:
        attrs["on_request"] = on_request
    if response:
        attrs["on_response"] = on_response
    attrs["on_log"] = on_log
    cls = type(f"P_{name}", (Policy,), attrs)
    return cls(PolicyConfig(), PolicyEnv())


def request() -> Request:
    async def receive():
        return {"type": "http.request", "body": b""}

    return Request("GET", "/", b"", [], None, None, False, "http", "t", receive)


def test_request_phase_by_priority_response_phase_reversed():
    calls: list[str] = []
    p = Pipeline([make("low", 10, calls), make("high", 900, calls), make("mid", 500, calls)])
    req, ctx = request(), Context()
    assert asyncio.run(p.run_request(req, ctx)) is None
    asyncio.run(p.run_response(req, Response(200), ctx))
    assert calls == ["req:high", "req:mid", "req:low", "resp:low", "resp:mid", "resp:high"]


def test_the_first_refusal_stops_the_request_phase_and_names_its_policy():
    calls: list[str] = []
    p = Pipeline([make("a", 900, calls), make("b", 500, calls, stop=True), make("c", 100, calls)])
    resp = asyncio.run(p.run_request(request(), Context()))
    assert resp is not None and resp.status == 403 and resp.stopped_by == "b"
    assert calls == ["req:a", "req:b"]


def test_a_stopped_by_set_by_the_policy_is_kept():
    calls: list[str] = []

    class Named(Policy):
        name: ClassVar[str] = "named"
        priority: ClassVar[int] = 1
        Config = PolicyConfig

        async def on_request(self, req, ctx):
            return Response(401, stopped_by="auth:jwt")

    resp = asyncio.run(Pipeline([Named(PolicyConfig(), PolicyEnv())]).run_request(request(), Context()))
    assert resp is not None and resp.stopped_by == "auth:jwt"
    assert calls == []


def test_only_policies_that_override_a_phase_are_in_it():
    calls: list[str] = []
    p = Pipeline([make("req-only", 2, calls, response=False), make("resp-only", 1, calls, request=False)])
    assert [x.name for x in p.request_phase] == ["req-only"]
    assert [x.name for x in p.response_phase] == ["resp-only"]
    assert [x.name for x in p.log_phase] == ["req-only", "resp-only"]


def test_a_failing_log_sink_is_logged_and_the_others_still_run(caplog):
    calls: list[str] = []
    p = Pipeline([make("first", 2, calls, log_fails=True), make("second", 1, calls)])
    with caplog.at_level(logging.ERROR, logger="bastion.pipeline"):
        p.run_log(request(), Response(200), Context(), {})
    assert calls == ["log:first", "log:second"]
    assert any("first" in r.getMessage() for r in caplog.records)


def test_traced_requests_get_a_span_per_spanned_policy():
    calls: list[str] = []
    spans: list[str] = []

    class Span:
        def __init__(self, name):
            spans.append(name)

        def end(self):
            spans.append("end")

    class Trace:
        policy_spans = True

        def child(self, name):
            return Span(name)

    quiet = make("quiet", 1, calls)
    type(quiet).spanned = False
    p = Pipeline([make("loud", 2, calls), quiet])
    ctx = Context(trace=Trace())
    asyncio.run(p.run_request(request(), ctx))
    assert spans == ["policy loud", "end"] and calls == ["req:loud", "req:quiet"]
