"""Policies and the ordered pipeline that runs them.

A policy is a class with a pydantic `Config`, a `priority` (higher runs earlier in the request
phase and later in the response phase) and up to three phase methods (the request and response
phases either async, `on_request` / `on_response`, or plain functions that never wait,
`on_request_sync` / `on_response_sync`, called without a coroutine). It is built once from its
validated config; the hot path only calls the phase methods. Policies talk to each other through
`Context`, never by importing each other.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from bastion.http import Request, Response
from bastion.principal import DEFAULT_HEADERS, HeaderNames, Principal

log = logging.getLogger("bastion.pipeline")


class PolicyConfig(BaseModel):
    """Base of every policy's config: unknown keys are errors, `enabled` turns it off."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True

    def lint(self) -> list[tuple[str, str, str]]:
        """`bastion check`'s findings about this setting that validates but is unsafe:
        (severity "error" or "warning", the key under the policy or "", message). Each policy
        owns its rules, as Kong's plugins own their `entity_checks`."""
        return []


# `Context.values` key: names of query parameters that carry a secret in this request (lower
# case, a frozenset), set by a policy that reads a credential from the query (auth's API key
# schemes with a `query_param`); the log policies redact them as they do their configured ones.
SECRET_QUERY_PARAMS = "secret_query_params"


@dataclass(slots=True, init=False)
class Context:
    """What the policies of one request learned, for the policies after them and the log."""

    principal: Principal | None = None  # set only through `authenticate`
    values: dict[str, Any] = field(default_factory=dict)
    log_fields: dict[str, Any] = field(default_factory=dict)
    # Changes to the request the upstream will see (headers are lower-case bytes).
    upstream_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    drop_request_headers: set[bytes] = field(default_factory=set)
    # ResponseRewriters (usually the policy itself) that want to change the answer's body. When
    # one `wants` the response, its body goes through `bastion.response_body` (decoded, checked
    # as a stream, refused with 502 when it cannot be filtered), under `body_rules` (set by the
    # `response_body` policy; None: the defaults).
    response_rewriters: list[ResponseRewriter] = field(default_factory=list)
    body_rules: Any = None
    # The trace hook: set by the tracing policy; the pipeline opens `trace.child(...)` spans around
    # the policies (those with `spanned`) when `trace.policy_spans` is on. Any object with those
    # two members will do: the pipeline knows no tracing library.
    trace: Any = None

    def __init__(
        self,
        principal: Principal | None = None,
        values: dict[str, Any] | None = None,
        log_fields: dict[str, Any] | None = None,
        upstream_headers: list[tuple[bytes, bytes]] | None = None,
        drop_request_headers: set[bytes] | None = None,
        response_rewriters: list[ResponseRewriter] | None = None,
        body_rules: Any = None,
        trace: Any = None,
    ) -> None:
        # (written out: one per request, and literals cost less than the dataclass's factory calls)
        self.principal = principal
        self.values = {} if values is None else values
        self.log_fields = {} if log_fields is None else log_fields
        self.upstream_headers = [] if upstream_headers is None else upstream_headers
        self.drop_request_headers = set() if drop_request_headers is None else drop_request_headers
        self.response_rewriters = [] if response_rewriters is None else response_rewriters
        self.body_rules = body_rules
        self.trace = trace

    def authenticate(self, principal: Principal, headers: HeaderNames) -> None:
        """Make `principal` the request's caller and tell the upstream (as `headers` names it).
        Raises ValueError, changing nothing, when a value cannot be a header."""
        rendered = headers.render(principal)
        self.principal = principal
        self.upstream_headers.extend(rendered)


class ResponseRewriter(Protocol):
    """A policy that changes answers' bodies. `wants` sees the head; `json` says whether the body
    is JSON (declared, or a mislabelled answer that `sniff_json` will check). `transform` returns
    a `bastion.response_body.BodyTransform` (feed/finish over decoded bytes) for this body."""

    def wants(self, resp: Response, json: bool) -> bool: ...

    def transform(self, req: Request, resp: Response, ctx: Context, info: Any) -> Any: ...


C = TypeVar("C", bound=PolicyConfig)
# What a request phase written as `on_request_sync` returns: None (go on), a Response (the answer),
# or an awaitable of either (this request needs the slow way).
RequestAnswer = Response | None | Awaitable[Response | None]


class Policy(Generic[C]):
    name: ClassVar[str]
    priority: ClassVar[int]
    Config: ClassVar[type[PolicyConfig]]
    per_route: ClassVar[bool] = True  # may a route override its config?
    unrouted: ClassVar[bool] = False  # does it also run for requests that match no route?
    default_on: ClassVar[bool] = False  # active without any config?
    spanned: ClassVar[bool] = True  # gets a trace span per phase when the request is traced
    warn_when_off: ClassVar[bool] = False  # `bastion check` warns when a config turns it off
    # Its request phase, run by the edge pipeline before routing, is complete there (request id,
    # the tracing decision): a route's pipeline built with `edge=` does not call it again.
    edge_once: ClassVar[bool] = False

    def __init__(self, config: C, env: PolicyEnv) -> None:
        self.config: C = config
        self.env = env

    # A phase that never waits is written as `on_request_sync` / `on_response_sync`: the pipeline
    # calls it directly, without creating and awaiting a coroutine (~2.5k instructions a call).
    # `on_request` / `on_response` (what direct callers await) then run the same function. A class
    # whose own `on_request` overrides this one is awaited, whatever its `on_request_sync` does.
    # `on_request_sync` may also return an awaitable (not a Response) when this request needs the
    # slow way (a store to ask, a body to read): it is awaited then, in the same place.
    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        resp = self.on_request_sync(req, ctx)
        if resp is not None and not isinstance(resp, Response):
            return await resp
        return resp

    def on_request_sync(self, req: Request, ctx: Context) -> RequestAnswer:
        return None

    async def on_response(self, req: Request, resp: Response, ctx: Context) -> None:
        self.on_response_sync(req, resp, ctx)

    def on_response_sync(self, req: Request, resp: Response, ctx: Context) -> None:
        return None

    def on_log(self, req: Request, resp: Response, ctx: Context, record: dict[str, Any]) -> None:
        return None

    async def on_ws_message(self, req: Request, ctx: Context, message: WsMessage) -> Response | None:
        """Each message a client sends on an open WebSocket (after the handshake passed this
        route's request phase): None lets it through; a problem refuses it (a GraphQL operation
        gets its protocol's `error` and the socket stays open; any other message closes it)."""
        return None

    async def close(self) -> None:
        return None


@dataclass(slots=True)
class WsMessage:
    """One client message on an open WebSocket, as the `on_ws_message` hook sees it.
    `operation`: for a GraphQL-over-WebSocket `subscribe`/`start`, its payload (`query`,
    `variables`, `operationName`) and `id`; None for any other message."""

    data: str | bytes
    subprotocol: str | None = None
    kind: str | None = None  # the GraphQL protocol's message type, when the socket speaks one
    id: str | None = None
    operation: dict[str, Any] | None = None


@dataclass(slots=True)
class PolicyEnv:
    """What a policy may know of the gateway: facts, never other policies."""

    config_dir: str = "."
    tls: bool = False
    principal_headers: HeaderNames = DEFAULT_HEADERS  # where `Context.authenticate` publishes


def _overrides(policy: Policy, method: str) -> bool:
    return getattr(type(policy), method) is not getattr(Policy, method)


def _phase(policy: Policy, method: str) -> Callable[..., Any] | None:
    """The bound function the pipeline calls for `policy`'s phase `method` ("on_request" or
    "on_response"), and whether it returns a coroutine: the policy's own `method` when it
    overrides it (awaited), else its `method_sync` when that is overridden (called), else None
    (not in the phase). Either way it is what `await policy.<method>(...)` runs."""
    if _overrides(policy, method):
        return None
    if _overrides(policy, method + "_sync"):
        return getattr(policy, method + "_sync")
    return None


def _in_phase(policy: Policy, method: str) -> bool:
    return _overrides(policy, method) or _overrides(policy, method + "_sync")


class Pipeline:
    """The policies of one route (or of unrouted requests), in priority order."""

    __slots__ = (
        "policies",
        "request_phase",
        "response_phase",
        "log_phase",
        "ws_message_phase",
        "_request_steps",
        "_response_steps",
        "_request_calls",
        "_response_calls",
    )

    def __init__(self, policies: list[Policy], edge: tuple[Policy, ...] | list[Policy] = ()) -> None:
        """`edge`: the policies the edge pipeline runs for every request before this one; those
        among them that are `edge_once` are left out of this request phase (the same instance
        would only find its work done: ~3k instructions a call, and a second, empty policy span
        when the request is traced)."""
        self.policies = sorted(policies, key=lambda p: -p.priority)
        done = {id(p) for p in edge if p.edge_once}
        self.request_phase = tuple(p for p in self.policies if _in_phase(p, "on_request") and id(p) not in done)
        self.response_phase = tuple(p for p in reversed(self.policies) if _in_phase(p, "on_response"))
        self.log_phase = tuple(p for p in self.policies if _overrides(p, "on_log"))
        self.ws_message_phase = tuple(p for p in self.policies if _overrides(p, "on_ws_message"))
        # (policy, its synchronous phase function or None: await its coroutine method)
        self._request_steps = tuple((p, _phase(p, "on_request")) for p in self.request_phase)
        self._response_steps = tuple((p, _phase(p, "on_response")) for p in self.response_phase)
        # What `request` / `response` call for each step: the synchronous function, or the
        # policy's own coroutine method (its coroutine is then awaited in `_resume_*`)
        self._request_calls = tuple(now or p.on_request for p, now in self._request_steps)
        self._response_calls = tuple(now or p.on_response for p, now in self._response_steps)

    def request(self, req: Request, ctx: Context) -> RequestAnswer:
        """The request phase without a coroutine while every step answers at once: None (go on),
        the Response that stops the request, or an awaitable of either (a step waits: it and
        the steps after it run in `_resume_request`, as `run_request` always did). A request
        whose trace wants policy spans takes the awaited path from the step where it does (the
        tracing policy may set it in this very phase)."""
        i = 0
        for call in self._request_calls:
            trace = ctx.trace
            if trace is not None and trace.policy_spans:
                return self._resume_request(i, None, req, ctx)
            answer = call(req, ctx)
            if answer is not None:
                if isinstance(answer, Response):
                    if not answer.stopped_by:
                        answer.stopped_by = self.request_phase[i].name
                    return answer
                return self._resume_request(i, answer, req, ctx)
            i += 1
        return None

    async def _resume_request(
        self, start: int, pending: Awaitable[Response | None] | None, req: Request, ctx: Context
    ) -> Response | None:
        """The request phase from step `start` on, every step awaited as it needs: `pending`, when
        given, is that step's awaitable (already called); policy spans when the trace asks."""
        steps = self._request_steps
        if pending is not None:
            resp = await pending
            if resp is not None:
                if not resp.stopped_by:
                    resp.stopped_by = steps[start][0].name
                return resp
            start += 1
        for policy, now in steps[start:]:
            trace = ctx.trace
            if trace is not None and trace.policy_spans and policy.spanned:
                span = trace.child("policy " + policy.name)
                try:
                    resp = await policy.on_request(req, ctx)  # (runs `now` when there is one)
                finally:
                    span.end()
            elif now is not None:
                answer = now(req, ctx)
                resp = answer if answer is None or isinstance(answer, Response) else await answer
            else:
                resp = await policy.on_request(req, ctx)
            if resp is not None:
                if not resp.stopped_by:
                    resp.stopped_by = policy.name
                return resp
        return None

    async def run_request(self, req: Request, ctx: Context) -> Response | None:
        """`request`, awaited (for callers that always await)."""
        answer = self.request(req, ctx)
        if answer is None or isinstance(answer, Response):
            return answer
        return await answer

    async def run_ws_message(self, req: Request, ctx: Context, message: WsMessage) -> Response | None:
        for policy in self.ws_message_phase:
            resp = await policy.on_ws_message(req, ctx, message)
            if resp is not None:
                if not resp.stopped_by:
                    resp.stopped_by = policy.name
                return resp
        return None

    def response(self, req: Request, resp: Response, ctx: Context) -> Awaitable[None] | None:
        """The response phase without a coroutine while every step is synchronous: None when
        done, else an awaitable of the rest (from the first step that returned a coroutine)."""
        i = 0
        for call in self._response_calls:
            pending = call(req, resp, ctx)
            if pending is not None and hasattr(pending, "__await__"):  # (a sync step's stray value is ignored)
                return self._resume_response(i, pending, req, resp, ctx)
            i += 1
        return None

    async def _resume_response(
        self, start: int, pending: Awaitable[None], req: Request, resp: Response, ctx: Context
    ) -> None:
        await pending
        for call in self._response_calls[start + 1 :]:
            pending = call(req, resp, ctx)
            if pending is not None and hasattr(pending, "__await__"):
                await pending

    async def run_response(self, req: Request, resp: Response, ctx: Context) -> None:
        """`response`, awaited (for callers that always await)."""
        pending = self.response(req, resp, ctx)
        if pending is not None:
            await pending

    def run_log(self, req: Request, resp: Response, ctx: Context, record: dict[str, Any]) -> None:
        for policy in self.log_phase:
            try:
                policy.on_log(req, resp, ctx, record)
            except Exception:  # a log sink must never break serving
                log.exception("policy %s failed in the log phase", policy.name)
