"""The gateway as an ASGI application: build the request once, route, run policies, proxy."""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl

from bastion.config.model import HTTP_METHODS
from bastion.gateway.proxy import (
    FORWARDING,
    UPSTREAM_IDENTITY,
    UnsafeHeader,
    UpstreamError,
    client_headers,
    drop_with,
    open_upstream,
    strip_hop_by_hop,
)
from bastion.gateway.state import GatewayState, RouteTarget
from bastion.http import (
    BadPath,
    BodyTimeout,
    BodyTooLarge,
    ClientDisconnected,
    ClientGone,
    Headers,
    Request,
    Response,
    alternative_readings,
    body_problem,
    ip_text,
    normalise_path,
    parse_ip,
    problem,
)
from bastion.http.headers import METHOD_OVERRIDE_HEADERS, php_field_name
from bastion.net.http1 import UpstreamProtocolError, UpstreamTimeout
from bastion.pipeline import Context, Pipeline, RequestAnswer
from bastion.response_body import BodyRefused, drive_gate, open_gate

try:
    from uvicorn.protocols.utils import ClientDisconnected as _UvicornClientGone
except ImportError:  # (the middleware mode without uvicorn)
    _UvicornClientGone = ClientGone  # type: ignore[misc,assignment]

log = logging.getLogger("bastion.gateway")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
# "Call the upstream" for a mode other than proxying: given the checked request, answer it
# (streaming through `send`) and return the response; a returned response with `stopped_by` set
# was not sent, and the lifecycle sends it (after the response phase).
Exchange = Callable[[Request, Context, Pipeline, Send], Awaitable[Response]]

# RFC 9110 7.2: uri-host [":" port] — a DNS name (labels of letters, digits, '-', '_'), an IPv4
# address or a bracketed IPv6 literal. Anything else (lists, userinfo, quotes, spaces, non-ASCII)
# would be copied into X-Forwarded-Host / Forwarded and read differently upstream.
_HOST = re.compile(
    r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}"
    r"[A-Za-z0-9_])?)*\.?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)
# Host values `_HOST` accepted, remembered (a client sends the same Host request after request;
# the pattern costs ~400 ns a match): client-chosen, so bounded in number and size
_GOOD_HOSTS: set[str] = set()
_GOOD_HOSTS_MAX = 1024
# Request bodies are read whole before the upstream is contacted (nginx's proxy_request_buffering):
# a client that trickles its body then holds one of its own capped connections, never one of the
# upstream pool's, and the upstream always gets a Content-Length it can trust. Up to
# MEMORY_BODY in memory, the rest in an anonymous temporary file.
MEMORY_BODY = 1024 * 1024
FILE_BLOCK = 64 * 1024
_DROP_REQUEST = FORWARDING | {b"host", b"expect", b"content-length"}
_DROPS: dict[frozenset[bytes], frozenset[bytes]] = {}
# The routing cache (`Gateway._route`): client-chosen keys, so bounded in number and in size
_ROUTED_MAX = 4096
_ROUTED_KEY_MAX = 512


def _drop_set(request_drop: frozenset[bytes]) -> frozenset[bytes]:
    """`_DROP_REQUEST` and a state's `request_drop`, built once per state rather than per request."""
    drop = _DROPS.get(request_drop)
    if drop is None:
        if len(_DROPS) > 64:  # reloads with other settings: keep it small
            _DROPS.clear()
        drop = _DROPS[request_drop] = _DROP_REQUEST | request_drop
    return drop


def forwarding_headers(
    peer: str, scheme: str, host: str, prior_xff: bytes | None, prior_fwd: bytes | None
) -> tuple[tuple[bytes, bytes], ...]:
    """X-Forwarded-For/-Proto/-Host and Forwarded for the upstream: `peer` appended to the chain
    a trusted proxy built (`prior_*`), or starting it."""
    xff = (prior_xff + b", " if prior_xff else b"") + peer.encode()
    for_ = f'"[{peer}]"' if ":" in peer else peer
    fwd = f"for={for_};proto={scheme}"
    if host:
        fwd += f';host="{host}"'
    out = [(b"x-forwarded-for", xff), (b"x-forwarded-proto", scheme.encode())]
    if host:
        out.append((b"x-forwarded-host", host.encode("latin-1")))
    out.append((b"forwarded", (prior_fwd + b", " if prior_fwd else b"") + fwd.encode("latin-1")))
    return tuple(out)


# (peer, scheme, Host) -> forwarding_headers(...) for peers that are not trusted proxies (bounded)
_FORWARDING_MADE: dict[tuple[str, str, str], tuple[tuple[bytes, bytes], ...]] = {}


def _ms(seconds: float) -> float:
    """`seconds` in milliseconds to the microsecond: what `round(seconds * 1000, 3)` gave, in
    ~80 ns instead of ~260 (CPython's `round` with digits goes through a correctly rounded
    decimal conversion, twice a request). The nearest whole number of microseconds divided by
    1000 is the double nearest that decimal, so it prints with at most three decimals, as
    round's did; the two differ only on a tie in the fourth decimal. The request path writes
    this expression inline (the call would cost what it saves): tests hold it to this."""
    return int(seconds * 1e6 + 0.5) / 1000


class Gateway:
    """ASGI app. `state` is swapped whole on reload; a request keeps the state it started with."""

    def __init__(self, state: GatewayState, *, client_body_timeout: float = 30.0) -> None:
        self.state = state
        self.client_body_timeout = client_body_timeout
        self._retired: list[GatewayState] = []

    # ---- lifecycle -------------------------------------------------------------------------
    async def swap(self, new: GatewayState) -> None:
        old, self.state = self.state, new
        old.retired = True
        if old.inflight == 0:
            await old.close()
        else:
            self._retired.append(old)

    async def aclose(self) -> None:
        await self.state.close()
        for old in self._retired:
            await old.close()
        self._retired.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.handle(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif kind == "websocket":  # the same lifecycle, with the handshake as the request (gateway/websocket.py)
            from bastion.gateway.websocket import serve_websocket

            await serve_websocket(self, scope, receive, send)

    # ---- one request -----------------------------------------------------------------------
    async def handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        exchange: Exchange | None = None,
        *,
        unrouted_to_exchange: bool = False,
    ) -> None:
        """The one request lifecycle, for the proxy and the ASGI middleware alike: build the
        request, the edge policies, route, the route's request phase, then `exchange` (the
        proxy's `forward`, or the middleware's "call the app"), the response phase, the log phase;
        any failure inside answers problem+json. `unrouted_to_exchange`: a request no route
        matches goes to the exchange under the default policies (the middleware's app routes it)
        instead of being answered 404."""
        state = self.state
        state.inflight += 1
        req: Request | None = None
        try:
            req = self.build_request(scope, receive, state)
            ctx = Context()
            record: dict[str, Any] = {}
            if state.edge.request_phase:  # (no coroutine made and awaited unless a step waits)
                answer = state.edge.request(req, ctx)
                if answer is not None and not isinstance(answer, Response):
                    await answer
            pipeline, resp, target = self.decide_now(scope, req, ctx, state)
            if resp is not None and not isinstance(resp, Response):
                resp = await resp
            if unrouted_to_exchange and resp is not None and resp.status == 404 and resp.stopped_by == "router":
                pipeline = state.defaults
                resp = await pipeline.run_request(req, ctx)
            if resp is None:
                if exchange is None:
                    assert target is not None
                    resp = await self.forward(req, ctx, target, send, record, state)
                else:
                    resp = await exchange(req, ctx, pipeline, send)
                    record.update(getattr(exchange, "record", None) or {})  # a websocket's timings
                if resp.stopped_by:  # the exchange failed before anything was sent: a problem to send
                    if (pending := pipeline.response(req, resp, ctx)) is not None:
                        await pending
                    await send_whole(send, resp)
            else:
                if (pending := pipeline.response(req, resp, ctx)) is not None:
                    await pending
                await send_whole(send, resp)
                record["bytes_out"] = len(resp.body)
            if pipeline.log_phase:  # the record is for the log phase's policies only
                record["bytes_in"] = req.bytes_in
                record["duration_ms"] = int((time.perf_counter() - req.started) * 1e6 + 0.5) / 1000  # (`_ms`, inline)
                pipeline.run_log(req, resp, ctx, record)
        except Exception as exc:
            await self._fail(exc, req, state, send)
        finally:
            state.inflight -= 1
            if state.retired and state.inflight == 0 and state in self._retired:
                self._retired.remove(state)
                await state.close()

    async def _fail(self, exc: Exception, req: Request | None, state: GatewayState, send: Send) -> None:
        """The safety net: whatever went wrong, the client gets problem+json, never a traceback."""
        rid = req.request_id if req is not None else ""
        if isinstance(exc, (ClientDisconnected, ClientGone, _UvicornClientGone)):
            return  # nobody to answer (uvicorn's websocket protocol raises its own from send())
        answer = body_problem(exc, req, "gateway") if req is not None else None
        if answer is not None:
            resp = answer
        else:
            log.error("request %s failed inside the gateway", rid or "-", exc_info=exc)
            resp = problem(
                500,
                "internal-error",
                "the gateway failed on this request; its log has the details under this request id",
                request_id=rid,
                stopped_by="gateway",
            )
            resp.reason = f"internal error ({type(exc).__name__})"
        try:
            await send_whole(send, resp)
        except Exception:  # the response had already started: closing is all that is left
            return
        if req is not None:
            try:
                state.edge.run_log(req, resp, Context(), {"duration_ms": _ms(time.perf_counter() - req.started)})
            except Exception:
                pass

    def build_request(self, scope: Scope, receive: Receive, state: GatewayState) -> Request:
        headers: Headers = scope["headers"]
        client = scope.get("client")
        peer = parse_ip(client[0]) if client else None
        client_ip = peer
        scheme = scope.get("scheme", "http")
        host = ""
        hosts = 0
        xff = xfp = None
        for k, v in headers:
            if k == b"host":
                host = v.decode("latin-1")
                hosts += 1
            elif k == b"x-forwarded-for":
                xff = v if xff is None else xff + b"," + v
            elif k == b"x-forwarded-proto":
                xfp = v
        peer_trusted = bool(state.trusted) and peer in state.trusted
        if peer_trusted:
            # Walk X-Forwarded-For from the right: the first address not of a trusted proxy
            # is the client. Anything left of it was written by the client and is ignored.
            if xff:
                for part in reversed(xff.decode("latin-1").split(",")):
                    ip = parse_ip(part)
                    if ip is None:
                        break
                    client_ip = ip
                    if ip not in state.trusted:
                        break
            if xfp in (b"http", b"https"):
                scheme = xfp.decode()
        # positional (in the dataclass's field order: method, path, query, headers, client_ip,
        # peer_ip, peer_trusted, scheme, host, receive): binding ten keywords cost more than the rest
        req = Request(
            scope["method"],
            "",
            scope.get("query_string", b""),
            headers,
            client_ip,
            peer,
            peer_trusted,
            scheme,
            host,
            receive,
            body_timeout=self.client_body_timeout,
        )
        req.websocket = scope.get("bastion.websocket", False)  # set by gateway/websocket.py only
        req.credential_later = scope.get("bastion.credential_later")  # (the same)
        ext = scope.get("extensions")
        if ext and "tls" in ext:
            req.tls = ext["tls"]
        if hosts > 1:  # RFC 9112 3.2: a request with several Host headers is refused
            req.refusal = "more than one Host header"
        elif host and host not in _GOOD_HOSTS:
            if _HOST.fullmatch(host) is None:
                req.refusal = "the Host header is not a host name or address with an optional port"
            elif len(host) <= 256:
                if len(_GOOD_HOSTS) >= _GOOD_HOSTS_MAX:
                    _GOOD_HOSTS.clear()
                _GOOD_HOSTS.add(host)
        elif not host and scope.get("http_version") == "1.1":
            req.refusal = "an HTTP/1.1 request needs a Host header"
        return req

    async def decide(
        self, scope: Scope, req: Request, ctx: Context, state: GatewayState
    ) -> tuple[Pipeline, Response | None, RouteTarget | None]:
        """Normalise, route and run the request phase: a response to send, or a target."""
        pipeline, answer, target = self.decide_now(scope, req, ctx, state)
        if answer is not None and not isinstance(answer, Response):
            answer = await answer
        return pipeline, answer, (None if answer is not None else target)

    def decide_now(
        self, scope: Scope, req: Request, ctx: Context, state: GatewayState
    ) -> tuple[Pipeline, RequestAnswer, RouteTarget | None]:
        """`decide` without a coroutine: the answer is None (go on to the target), a Response,
        or an awaitable of either when a policy waits (`Pipeline.request`); the target is only
        meaningful when the answer is None."""
        refusal = self._read_target(scope, req, state)
        if refusal is not None:
            return state.edge, refusal, None
        preflight = req.method == "OPTIONS" and req.header(b"access-control-request-method") is not None
        method = req.method
        if preflight:
            method = req.header_str(b"access-control-request-method").strip().upper()[:32]  # type: ignore[union-attr]
        routed = self._route(req, method, state)
        if isinstance(routed, Response):
            return state.edge, routed, None
        target = routed.target
        req.route_name = routed.name
        pipeline = target.pipeline
        answer = pipeline.request(req, ctx) if pipeline.request_phase else None
        if preflight and target.methods is not None and "OPTIONS" not in target.methods:
            answer = self._options_refused(answer, req, target.methods)
        return pipeline, answer, target

    @staticmethod
    async def _options_refused(answer: RequestAnswer, req: Request, methods: frozenset[str]) -> Response:
        """A preflight to a route that does not allow OPTIONS: the request phase's own answer
        (a CORS refusal), else 405."""
        if answer is not None and not isinstance(answer, Response):
            answer = await answer
        if answer is not None:
            return answer
        return problem(
            405,
            "method-not-allowed",
            "OPTIONS is not allowed here",
            request_id=req.request_id,
            stopped_by="router",
            headers=[(b"allow", ", ".join(sorted(methods)).encode())],
        )

    def _read_target(self, scope: Scope, req: Request, state: GatewayState) -> Response | None:
        """The request line: refused head (several Hosts, a bad Host), the canonical path or a
        400, and a method override."""
        if req.refusal:
            req.path = scope["path"][:256]
            return problem(400, "bad-request", req.refusal, request_id=req.request_id, stopped_by="router")
        try:
            req.path = normalise_path(scope.get("raw_path") or scope["path"].encode("utf-8"))
        except BadPath as exc:
            req.path = scope["path"][:256]
            return problem(400, "bad-path", str(exc), request_id=req.request_id, stopped_by="router")
        if req.header(b"transfer-encoding") is not None and _transfer_codings(req.headers) != ["chunked"]:
            # RFC 9112 6.1: a coding the gateway does not apply (gzip, chunked) would reach every
            # policy and the upstream as the coded bytes, its name dropped (hop-by-hop): 501
            return problem(
                501,
                "transfer-coding-not-implemented",
                "only the chunked transfer coding is accepted",
                request_id=req.request_id,
                stopped_by="router",
            )
        if req.method == "POST":
            return self._override_method(req, state.config.edge.method_override)
        return None

    @staticmethod
    def _route(req: Request, method: str, state: GatewayState) -> Any:
        """`_route_uncached`, remembered per (method, path, Host) for the requests it routed
        (bounded; a refusal is worked out again each time: it carries the request's id)."""
        path, host = req.path, req.host
        key = (method, path, host)
        hit = state.routed.get(key)
        if hit is not None:
            if hit[1]:
                req.path_params = dict(hit[1])  # the request's own copy: policies may change it
            return hit[0]
        routed = Gateway._route_uncached(req, method, state)
        if not isinstance(routed, Response) and len(path) + len(host) <= _ROUTED_KEY_MAX:
            if len(state.routed) >= _ROUTED_MAX:
                state.routed.clear()
            state.routed[key] = (routed, dict(req.path_params))
        return routed

    @staticmethod
    def _route_uncached(req: Request, method: str, state: GatewayState) -> Any:
        """The matched route, or the answer: 404/405, 400 when another reading of the path names
        another route, 405 for TRACE where no route names it."""
        match = state.router.match(method, req.path, req.host)
        if match.route is None:
            if match.allowed:
                return problem(
                    405,
                    "method-not-allowed",
                    f"{method} is not allowed here",
                    request_id=req.request_id,
                    stopped_by="router",
                    headers=[(b"allow", ", ".join(sorted(match.allowed)).encode())],
                )
            return problem(
                404, "not-found", "no route matches this request", request_id=req.request_id, stopped_by="router"
            )
        for other in alternative_readings(req.path):
            if state.router.match(method, other, req.host).route is not match.route:
                return problem(
                    400,
                    "bad-path",
                    f"other servers read this path as another route ({other[:80]})",
                    request_id=req.request_id,
                    stopped_by="router",
                )
        methods = match.route.target.methods
        if method == "TRACE" and (methods is None or "TRACE" not in methods):
            # TRACE echoes the request, credentials included (cross-site tracing): only where a route names it
            return problem(
                405, "method-not-allowed", "TRACE is not allowed here", request_id=req.request_id, stopped_by="router"
            )
        req.path_params = match.params
        return match.route

    @staticmethod
    def _override_method(req: Request, honoured: bool) -> Response | None:
        """`edge.method_override`: a POST that names another method in one of the override
        headers or the `_method` query parameter (Rails, Laravel, Express) becomes that method
        before routing, so what is routed and checked is what the upstream is asked to do.
        Conflicting or unknown values are refused. Not honoured, the headers are dropped on the
        way out, but a `_method` parameter cannot be: the request is refused."""
        param = []
        # the name as any server decodes it (`%5Fmethod`) and as PHP registers it (`.method`)
        if req.query and (b"method" in req.query or b"%" in req.query):
            param = [
                v.encode("latin-1")
                for k, v in parse_qsl(req.query.decode("latin-1"), keep_blank_values=True)
                if k == "_method" or php_field_name(k) == "_method"
            ]
        if param and not honoured:
            return problem(
                400,
                "bad-method-override",
                "a _method parameter asks the upstream for another method "
                "than the one routed here (edge.method_override is off)",
                request_id=req.request_id,
                stopped_by="router",
            )
        if not honoured:
            return None
        values = {v.strip().upper() for k, v in req.headers if k.decode("latin-1") in METHOD_OVERRIDE_HEADERS}
        values |= {v.strip().upper() for v in param}
        if not values:
            return None
        method = values.pop().decode("latin-1")
        if values or method not in HTTP_METHODS or method == "CONNECT":
            return problem(
                400,
                "bad-method-override",
                "the method override headers name no single known method",
                request_id=req.request_id,
                stopped_by="router",
            )
        req.method = method
        return None

    # ---- proxying --------------------------------------------------------------------------
    def upstream_headers(
        self, req: Request, ctx: Context, body_len: int | None, request_drop: frozenset[bytes] = frozenset()
    ) -> Headers:
        drop = _drop_set(request_drop)
        if ctx.drop_request_headers:
            drop = drop_with(drop, ctx.drop_request_headers)
        out = client_headers(req.headers, drop)
        peer = ip_text(req.peer_ip) if req.peer_ip else "unknown"
        if req.peer_trusted:  # keep the chain the trusted proxy built; otherwise start afresh
            prior_xff = prior_fwd = None
            for k, v in req.headers:
                if k == b"x-forwarded-for":
                    prior_xff = v if prior_xff is None else prior_xff + b", " + v
                elif k == b"forwarded":
                    prior_fwd = v if prior_fwd is None else prior_fwd + b", " + v
            out.extend(forwarding_headers(peer, req.scheme, req.host, prior_xff, prior_fwd))
        else:  # a function of (peer, scheme, Host) alone: made once per combination
            key = (peer, req.scheme, req.host)
            made = _FORWARDING_MADE.get(key)
            if made is None:
                made = forwarding_headers(peer, req.scheme, req.host, None, None)
                if len(req.host) <= 256:  # client-chosen: bounded in size and number
                    if len(_FORWARDING_MADE) >= 4096:
                        _FORWARDING_MADE.clear()
                    _FORWARDING_MADE[key] = made
            out.extend(made)
        if body_len is not None:
            out.append((b"content-length", str(body_len).encode()))
        out.extend(ctx.upstream_headers)
        return out

    async def forward(
        self, req: Request, ctx: Context, target: RouteTarget, send: Send, record: dict[str, Any], state: GatewayState
    ) -> Response:
        """Proxy to the upstream and stream its answer; on failure return an unsent problem."""
        pool = target.upstream
        assert pool is not None  # a route without an upstream is a config error for `serve`
        try:
            body: bytes | AsyncIterator[bytes] | None = None
            body_len: int | None = None
            if (
                req.body is not None
                or req.header(b"content-length") is not None
                or req.header(b"transfer-encoding") is not None
            ):
                prepared = await self._request_body(req)
                if isinstance(prepared, Response):
                    return prepared
                body, body_len = prepared
            # (else: no body, nothing to read, no refusal to make: `_request_body` would say so)
            t0 = time.perf_counter()
            headers = self.upstream_headers(req, ctx, body_len, state.request_drop)
            if pool.config.preserve_host and req.host:
                headers.append((b"host", req.host.encode("latin-1")))
            if ctx.trace is None:  # (no span to open around it: one coroutine less)
                upstream = await open_upstream(pool, req, headers, body)
            else:
                upstream = await self._open(pool, req, ctx, headers, body)
        except BodyTooLarge as exc:
            return body_problem(exc, req, "body_limit")  # type: ignore[return-value]
        except BodyTimeout as exc:
            return body_problem(exc, req, "proxy")  # type: ignore[return-value]
        except ClientDisconnected:
            return Response(499, stopped_by="proxy", reason="client disconnected")
        except UnsafeHeader as exc:
            return self._unsafe_header(req, ctx, exc.name)
        except UpstreamError as exc:
            return problem(
                exc.status,
                "upstream-timeout" if exc.status == 504 else "upstream-unavailable",
                exc.detail,
                request_id=req.request_id,
                stopped_by="proxy",
            )
        record["upstream_ms"] = int((time.perf_counter() - t0) * 1e6 + 0.5) / 1000  # (`_ms`, inline)
        try:
            return await self._relay(req, ctx, target, pool, upstream, send, record)
        finally:
            upstream.release()

    async def _request_body(self, req: Request) -> tuple[bytes | AsyncIterator[bytes] | None, int | None] | Response:
        """The body to send upstream and its length, read whole first (`buffer_body`), or a
        refusal (a bad Content-Length; a `_method` body field is the `method_field` policy's)."""
        try:
            length = req.content_length()
        except ValueError:
            return problem(
                400,
                "bad-request",
                "the Content-Length header is not a number",
                request_id=req.request_id,
                stopped_by="proxy",
            )
        body: bytes | AsyncIterator[bytes] | None = None
        body_len: int | None = None
        if req.body is not None:  # a policy read (or rewrote) it
            body, body_len = req.body, len(req.body)
        elif length is not None or req.header(b"transfer-encoding") is not None:
            body, body_len = await buffer_body(req)
        return body, body_len

    @staticmethod
    async def _open(
        pool: Any, req: Request, ctx: Context, headers: Headers, body: bytes | AsyncIterator[bytes] | None
    ) -> Any:
        """Send the request; the trace context goes along (a client span when the request is sampled)."""
        trace = ctx.trace
        if trace is None:
            return await open_upstream(pool, req, headers, body)
        if not trace.recording:  # unsampled: pass the context on, make no span
            headers.extend(trace.headers_for(trace.root))
            return await open_upstream(pool, req, headers, body)
        span = trace.child(f"upstream {pool.name}", client=True)
        headers.extend(trace.headers_for(span))
        try:
            upstream = await open_upstream(pool, req, headers, body)
            span.set_attribute("http.response.status_code", upstream.status)
            return upstream
        finally:
            span.end()

    async def _relay(
        self,
        req: Request,
        ctx: Context,
        target: RouteTarget,
        pool: Any,
        upstream: Any,
        send: Send,
        record: dict[str, Any],
    ) -> Response:
        """The upstream's answer to the client: its head through the response phase, its body
        streamed (through the response-body engine when a policy rewrites it)."""
        resp = Response(upstream.status, strip_hop_by_hop(upstream.headers, UPSTREAM_IDENTITY))
        if resp.status == 204:  # RFC 9110 8.6: no Content-Length (a client would wait for a body)
            resp.headers = [(k, v) for k, v in resp.headers if k != b"content-length"]
        if resp.get_header(b"date") is None:
            resp.headers.append((b"date", http_date()))
        body_iter: AsyncIterator[bytes] | None = None
        # decoded, filtered as a stream, or refused (502); an answer no rewriter wants (error
        # masking's are 5xx only) keeps the whole-body path below
        if ctx.response_rewriters and (gate := open_gate(req, resp, ctx)) is not None:
            try:
                body_iter = await drive_gate(gate, upstream.body())
            except (UpstreamTimeout, UpstreamProtocolError, OSError) as exc:  # nothing sent yet
                timeout = isinstance(exc, UpstreamTimeout)
                return problem(
                    504 if timeout else 502,
                    "upstream-timeout" if timeout else "upstream-unavailable",
                    "the upstream broke off its answer",
                    request_id=req.request_id,
                    stopped_by="proxy",
                )
        if target.pipeline.response_phase and (pending := target.pipeline.response(req, resp, ctx)) is not None:
            await pending
        await send({"type": "http.response.start", "status": resp.status, "headers": resp.headers})
        if body_iter is None:
            whole = upstream.whole_body()
            if whole is not None:  # all of it arrived with the head: one message, the last
                await send({"type": "http.response.body", "body": whole, "more_body": False})
                record["bytes_out"] = len(whole)
                return resp
            body_iter = upstream.body()
        sent = 0
        try:
            async for chunk in body_iter:
                sent += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except ClientGone:  # (an OSError: before the upstream's) the upstream connection is closed, not read on
            record["bytes_out"] = sent
            record["client_gone"] = True
            resp.reason = "client went away during the answer"
            return resp
        except (UpstreamTimeout, UpstreamProtocolError, OSError) as exc:
            # Headers are out: the only honest signal left is to close the connection
            # without completing the body (returning from the ASGI app does that).
            record["bytes_out"] = sent
            record["upstream_aborted"] = True
            resp.reason = f"upstream broke off the response ({type(exc).__name__})"
            log.warning(
                "request %s: upstream %s broke off the response after %d bytes (%s)",
                req.request_id,
                pool.name,
                sent,
                type(exc).__name__,
            )
            return resp
        except BodyRefused as exc:  # unfilterable, found after the head went out: cut it
            record["bytes_out"] = sent
            record["body_refused"] = str(exc)
            resp.reason = f"response body unfilterable ({exc})"
            return resp
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        record["bytes_out"] = sent
        return resp

    @staticmethod
    def _unsafe_header(req: Request, ctx: Context, name: bytes) -> Response:
        """A header that cannot be written to the upstream: 401 when a credential's claims made it
        (a policy published it), 400 when the client sent it. Logged by name, never by value."""
        from_policy = any(k == name for k, _ in ctx.upstream_headers)
        log.warning(
            "request %s refused: header %r carries a control character or is not a valid name (%s)",
            req.request_id or "-",
            name.decode("latin-1"),
            "from a credential" if from_policy else "from the client",
        )
        if from_policy:
            return problem(
                401,
                "invalid-token",
                "the credential's claims cannot be passed on safely",
                request_id=req.request_id,
                stopped_by="proxy",
            )
        return problem(
            400,
            "bad-header",
            f"the header {name.decode('latin-1')[:64]!r} carries a control character or is not a valid header name",
            request_id=req.request_id,
            stopped_by="proxy",
        )


def _transfer_codings(headers: Headers) -> list[str]:
    """Every Transfer-Encoding line's codings in order, lower-cased (parameters kept: a
    `chunked;x=1` is not `chunked`)."""
    return [
        c.strip().lower()
        for k, v in headers
        if k == b"transfer-encoding"
        for c in v.decode("latin-1").split(",")
        if c.strip()
    ]


async def buffer_body(req: Request) -> tuple[bytes | AsyncIterator[bytes], int]:
    """The whole request body (within the route's limit and timeouts): bytes when it fits in
    MEMORY_BODY, else an iterator over a temporary file that is removed once read."""
    parts: list[bytes] = []
    size = 0
    spool = None
    try:
        async for chunk in req.chunks():
            size += len(chunk)
            if spool is not None:
                spool.write(chunk)
                continue
            parts.append(chunk)
            if size > MEMORY_BODY:
                spool = tempfile.TemporaryFile()
                for p in parts:
                    spool.write(p)
                parts = []
    except BaseException:
        if spool is not None:
            spool.close()
        raise
    if spool is None:
        data = b"".join(parts)
        req.body = data
        return data, size
    spool.seek(0)
    return _file_blocks(spool), size


async def _file_blocks(f: Any) -> AsyncIterator[bytes]:
    try:
        while block := f.read(FILE_BLOCK):
            yield block
    finally:
        f.close()


_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The Date header value, formatted once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode())
    return _date_cache[1]


async def send_whole(send: Send, resp: Response) -> None:
    headers = [(b"date", http_date()), *resp.headers]
    if resp.status != 204 and resp.status != 304 and not any(k == b"content-length" for k, _ in headers):
        headers = [*headers, (b"content-length", str(len(resp.body)).encode())]
    await send({"type": "http.response.start", "status": resp.status, "headers": headers})
    await send({"type": "http.response.body", "body": resp.body, "more_body": False})
