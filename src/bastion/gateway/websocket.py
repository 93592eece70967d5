"""WebSockets through the gateway (docs/websockets.md).

The handshake is a request like any other: `serve_websocket` turns the `websocket` scope into a
GET and runs it through `Gateway.handle` (request id, IP rules, auth, scopes, rate limits, the
route's whole request phase); only the exchange differs. It refuses what the route forbids
(`websocket: false`, a cookie-carrying handshake from a foreign Origin, too many sockets for
one principal), then opens the other side — the upstream over ws:// or wss:// with the
`websockets` library, or the wrapped app in middleware mode — and relays messages both ways under
`SocketGuard` (size, rates, the policies' `on_ws_message`, GraphQL-over-WebSocket operations)
and `Deadlines` (idle, lifetime, token expiry and revocation). One audit line per connection
(the log phase runs when the socket ends, with its duration and counts).

The upstream client is the `websockets` library: a maintained RFC 6455 implementation with
per-message deflate, keepalive pings and back-pressure (`send` waits for the write buffer).
Pings are per hop: uvicorn answers and sends the client's, the library the upstream's (ASGI has
no ping message to relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
from prometheus_client import Counter, Gauge

from bastion.config.model import WebSocketConfig
from bastion.gateway.proxy import upstream_tls
from bastion.http import ClientDisconnected, Headers, Request, Response, problem, unsafe_header
from bastion.observability import REGISTRY
from bastion.pipeline import Context, Pipeline, WsMessage
from bastion.policies.cors import OriginMatcher, canonical_origin  # the CORS policy's origin rules, shared
from bastion.ratelimit import Rate, StoreUnavailable, parse_rate, shared_store
from bastion.ratelimit.algorithms import token_bucket

log = logging.getLogger("bastion.websocket")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

GRAPHQL_PROTOCOLS = ("graphql-transport-ws", "graphql-ws")
# `Sec-WebSocket-Protocol: graphql-transport-ws, bearer.<token>`: browsers cannot set headers on a
# WebSocket, so the token travels as an offered subprotocol; it becomes `Authorization: Bearer`
# for the handshake's auth and is never offered to the upstream nor echoed back.
TOKEN_PROTOCOL_PREFIX = "bearer."
# the client's handshake headers the upstream client writes itself
_WS_HEADERS = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"host",
    }
)
# headers a response-phase policy may add that have no place on a 101 (the server writes its own)
_NOT_ON_101 = frozenset(
    {b"content-type", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"date", b"server"}
)
# keys of a `connection_init` payload that carry the credential (Apollo, urql, graphql-ws clients)
# the longest credential taken from connection_init (the jwt scheme's default max_token_bytes):
# it travels as a header, which bypassed the listener's head limit
_INIT_TOKEN_MAX = 8192
_INIT_TOKEN_KEYS = ("authorization", "authtoken", "token", "accesstoken", "access_token")

OPEN = Gauge("bastion_websockets_open", "WebSockets open through the gateway", ["route"], registry=REGISTRY)
MESSAGES = Counter(
    "bastion_websocket_messages_total", "WebSocket messages relayed", ["route", "direction"], registry=REGISTRY
)
REFUSALS = Counter(
    "bastion_websocket_refusals_total",
    "WebSocket handshakes refused, operations refused and sockets closed by the gateway",
    ["route", "reason"],
    registry=REGISTRY,
)

# Close codes: RFC 6455 7.4.1; 4401/4403/4429 as graphql-transport-ws uses them (4xxx: private).
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_GOING_AWAY = 1001
CLOSE_BAD_GATEWAY = 1014
_STATUS_CLOSE = {401: 4401, 403: 4403, 429: 4429}


class Closed(Exception):
    """The other side (upstream or app) closed: its code and reason."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class Peer(Protocol):
    """The side the gateway relays to: the upstream connection or the wrapped app."""

    subprotocol: str | None

    async def send(self, data: str | bytes) -> None: ...

    async def recv(self) -> str | bytes: ...  # raises Closed

    async def close(self, code: int, reason: str) -> None: ...


# ---- the handshake --------------------------------------------------------------------------
@dataclass(slots=True)
class Handshake:
    """What the gateway read from the client's upgrade before the lifecycle runs."""

    offered: list[str]  # subprotocols offered, token entries removed
    token_in_protocol: bool
    graphql: str | None  # the GraphQL protocol the gateway chose when it accepts early
    accepted: bool = False  # the client was accepted before the lifecycle (credential in connection_init)
    init: str | None = None  # that connection_init, forwarded first
    status: int = 0  # a refusal's status, while its body is on the way
    close: tuple[int, str] | None = None  # the close code and reason of a connection_init refusal


def offered_protocols(headers: Headers) -> tuple[list[str], list[str]]:
    """(subprotocols, tokens) of the handshake's `Sec-WebSocket-Protocol` headers."""
    offered: list[str] = []
    tokens: list[str] = []
    for k, v in headers:
        if k == b"sec-websocket-protocol":
            for part in v.decode("latin-1").split(","):
                p = part.strip()
                if p.lower().startswith(TOKEN_PROTOCOL_PREFIX):
                    tokens.append(p[len(TOKEN_PROTOCOL_PREFIX) :])
                elif p:
                    offered.append(p)
    return offered, tokens


def _init_credentials(payload: Any, depth: int = 0) -> list[str]:
    """Every credential a `connection_init` payload carries, as Authorization values (a bare
    token gets `Bearer `), in order: the keys any GraphQL server may read it from, at the top
    and under `headers` (Apollo), whatever their case."""
    found: list[str] = []
    if not isinstance(payload, dict):
        return found
    for k, v in payload.items():
        if not isinstance(k, str):
            continue
        if k.lower() in _INIT_TOKEN_KEYS and isinstance(v, str) and v:
            found.append(v if " " in v else "Bearer " + v)
        elif k.lower() == "headers" and depth == 0:  # {headers: {Authorization: ...}} (Apollo)
            found.extend(_init_credentials(v, 1))
    return found


def _init_token(payload: Any) -> str | None:
    found = _init_credentials(payload)
    return found[0] if found else None


def _without_credentials(payload: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in payload.items():
        if isinstance(k, str) and k.lower() in _INIT_TOKEN_KEYS:
            continue
        if isinstance(k, str) and k.lower() == "headers" and depth == 0 and isinstance(v, dict):
            v = _without_credentials(v, 1)
        out[k] = v
    return out


async def _read_init(receive: Receive, timeout: float) -> tuple[str | None, str | None, int]:
    """The first message of an accepted GraphQL socket: (its text, the credential in its
    payload, 0), or (None, None, close code): 4408 when nothing came in time, 4400 for a binary
    first message, 1000 when the client left."""
    try:
        async with asyncio.timeout(timeout):
            message = await receive()
    except TimeoutError:
        return None, None, 4408
    if message["type"] == "websocket.disconnect":
        return None, None, 1000
    if message["type"] != "websocket.receive" or message.get("text") is None:
        return None, None, 4400
    text = message["text"]
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text, None, 0
    if not isinstance(data, dict) or data.get("type") != "connection_init":
        return text, None, 0
    found = _init_credentials(data.get("payload"))
    if len(set(found)) > 1:  # the gateway would check one, the upstream might read another
        return None, None, 4409
    return text, (found[0] if found else None), 0


def _refusal_sender(send: Send, hs: Handshake) -> Send:
    """The lifecycle's `send` for a websocket scope: a refusal before the socket is accepted is
    the ASGI WebSocket denial response (the HTTP status and problem body); after an early accept
    it closes the socket (401 → 4401, 403 → 4403, 429 → 4429, others 1008) with the problem's
    type as the reason."""

    async def send_(message: dict[str, Any]) -> None:
        kind = message["type"]
        if not kind.startswith("http.response."):
            await send(message)
            return
        if not hs.accepted:
            await send({**message, "type": "websocket." + kind})
            return
        if kind == "http.response.start":
            hs.status = message["status"]
            return
        if message.get("more_body"):
            return
        try:
            reason = str(orjson.loads(message.get("body") or b"{}").get("type", ""))
        except (orjson.JSONDecodeError, AttributeError):
            reason = ""
        if hs.close is not None:  # a connection_init refusal: its own code and reason
            await send({"type": "websocket.close", "code": hs.close[0], "reason": hs.close[1]})
            return
        code = _STATUS_CLOSE.get(hs.status, CLOSE_POLICY)
        await send({"type": "websocket.close", "code": code, "reason": reason.rsplit("/", 1)[-1][:100]})

    return send_


def http_scope(scope: Scope, tokens: list[str], init_token: str | None) -> Scope:
    """The handshake as the GET the lifecycle checks: tokens from the subprotocol or the
    `connection_init` payload become `Authorization` headers (two credentials: two headers, which
    the auth policy refuses as ambiguous)."""
    headers = list(scope["headers"])
    for t in tokens:
        headers.append((b"authorization", b"Bearer " + t.encode("latin-1")))
    if init_token is not None:
        headers.append((b"authorization", init_token.encode("utf-8", "replace")))
    out = dict(scope)
    scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "ws"), scope.get("scheme", "http"))
    # (the request's scheme, as policies and X-Forwarded-Proto know it: http or https)
    out.update(type="http", method="GET", headers=headers, http_version=scope.get("http_version", "1.1"), scheme=scheme)
    out["bastion.websocket"] = True
    return out


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def serve_websocket(gateway: Any, scope: Scope, receive: Receive, send: Send, app: Any = None) -> None:
    """A `websocket` scope through the one lifecycle. `app`: the wrapped ASGI app (middleware
    mode); without it the route's upstream."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    offered, tokens = offered_protocols(scope["headers"])
    names = {k for k, _ in scope["headers"]}
    graphql = next((p for p in offered if p in GRAPHQL_PROTOCOLS), None)
    hs = Handshake(offered, bool(tokens), graphql)
    scope = http_scope(scope, tokens, None)
    if graphql and not tokens and b"authorization" not in names and b"cookie" not in names:
        # a GraphQL client that may carry its credential in connection_init: the auth policy
        # asks for it when the handshake has none — after every policy before it (IP rules,
        # CORS, limits on the head) and the route's own refusals passed, so a handshake refused
        # for anything but its credential is refused at the handshake, never accepted first
        scope["bastion.credential_later"] = functools.partial(_credential_later, gateway.state, receive, send, hs)
    exchange = WsExchange(gateway, receive, send, hs, app)
    await gateway.handle(scope, _no_body, _refusal_sender(send, hs), exchange, unrouted_to_exchange=app is not None)


async def _credential_later(
    state: Any, receive: Receive, send: Send, hs: Handshake, req: Request
) -> str | Response | None:
    """Called by the auth policy for a GraphQL handshake without a credential: the route's
    WebSocket refusals first (still answered as HTTP), then accept, wait for the first message and
    return the credential of its `connection_init` payload (or None). The upstream is still not
    contacted before the lifecycle has checked the handshake with it. A socket waiting for its
    connection_init counts against its client IP's sockets (as an anonymous socket does): no
    client holds more than `max_per_principal` accepted sockets."""
    if hs.accepted:  # (one auth policy per route: never twice)
        return None
    match = state.router.match("GET", req.path, req.host)
    cfg: WebSocketConfig = match.route.target.websocket if match.route is not None else WebSocketConfig()
    if not cfg.enabled:
        return None  # refused by the exchange (websocket-refused), as an HTTP answer
    refusal = _route_refusal(req, cfg, hs.token_in_protocol)
    if refusal is not None:
        return refusal
    key = f"ip:{req.client_ip}"
    if _open_by_key.get(key, 0) >= cfg.max_per_principal:
        return _problem(req, 429, "too-many-sockets", f"at most {cfg.max_per_principal} sockets per principal")
    _open_by_key[key] = _open_by_key.get(key, 0) + 1
    try:
        await send({"type": "websocket.accept", "subprotocol": hs.graphql})
        hs.accepted = True
        hs.init, init_token, code = await _read_init(receive, cfg.connection_init_timeout)
    finally:
        _release(key)
    if hs.init is None:
        if code == 1000:
            raise ClientDisconnected()
        if code == 4409:
            hs.close = (4400, "ambiguous-credentials")
            return _problem(req, 400, "ambiguous-credentials", "a connection_init with more than one credential")
        hs.close = (code, "connection_init timeout" if code == 4408 else "connection_init expected")
        return _problem(req, 408 if code == 4408 else 400, "connection-init", hs.close[1])
    if init_token is not None and len(init_token) > _INIT_TOKEN_MAX:
        # it becomes a header of the upstream's handshake: no larger than a header may be
        hs.close = (4400, "connection_init credential too large")
        return _problem(req, 400, "connection-init", hs.close[1])
    return init_token


def _release(key: str) -> None:
    left = _open_by_key.get(key, 1) - 1
    if left <= 0:
        _open_by_key.pop(key, None)
    else:
        _open_by_key[key] = left


# ---- per principal ----------------------------------------------------------------------------
_open_by_key: dict[str, int] = {}


def principal_key(req: Request, ctx: Context) -> str:
    p = ctx.principal
    if p is not None:
        return f"p:{p.issuer or ''}:{p.subject}"
    return f"ip:{req.client_ip}"


# ---- the exchange -----------------------------------------------------------------------------
class WsExchange:
    """The lifecycle's exchange for a websocket: the route's refusals, the other side opened, the
    relay; returns the (unsent) refusal, or the 101 once the socket has ended."""

    def __init__(self, gateway: Any, receive: Receive, send: Send, hs: Handshake, app: Any) -> None:
        self.gateway = gateway
        self.receive = receive
        self.send = send
        self.hs = hs
        self.app = app
        self.state = gateway.state  # the state `handle` runs with (no await in between)
        self.record: dict[str, Any] = {}  # merged into the log phase's record by `handle`

    def _target(self, req: Request) -> Any:
        match = self.state.router.match("GET", req.path, req.host)
        return match.route.target if match.route is not None else None

    async def __call__(self, req: Request, ctx: Context, pipeline: Pipeline, send: Send) -> Response:
        target = self._target(req)
        cfg: WebSocketConfig = target.websocket if target is not None else WebSocketConfig()
        route = req.route_name or "-"
        refusal = self._refuse(req, ctx, cfg)
        if refusal is not None:
            REFUSALS.labels(route, refusal.reason or "refused").inc()
            return refusal
        key = principal_key(req, ctx)
        if _open_by_key.get(key, 0) >= cfg.max_per_principal:
            REFUSALS.labels(route, "too-many-sockets").inc()
            return _problem(req, 429, "too-many-sockets", f"at most {cfg.max_per_principal} sockets per principal")
        _open_by_key[key] = _open_by_key.get(key, 0) + 1
        try:
            return await self._open_and_relay(req, ctx, pipeline, target, cfg, route)
        finally:
            _release(key)

    def _refuse(self, req: Request, ctx: Context, cfg: WebSocketConfig) -> Response | None:
        if not cfg.enabled:
            return _problem(req, 403, "websocket-refused", "this route does not accept WebSocket upgrades")
        return _route_refusal(req, cfg, self.hs.token_in_protocol)

    async def _open_and_relay(
        self, req: Request, ctx: Context, pipeline: Pipeline, target: Any, cfg: WebSocketConfig, route: str
    ) -> Response:
        protocols = [self.hs.graphql] if self.hs.accepted and self.hs.graphql else self.hs.offered
        t0 = time.perf_counter()
        peer_or_refusal: Peer | Response
        if self.app is not None:
            peer_or_refusal = await AppPeer.open(self.app, req, ctx, self.gateway, protocols, self.hs)
        else:
            peer_or_refusal = await open_upstream_ws(self.gateway, target, req, ctx, protocols, cfg)
        opened = time.perf_counter()
        self.record["upstream_ms"] = round((opened - t0) * 1000, 3)
        if isinstance(peer_or_refusal, Response):
            REFUSALS.labels(route, peer_or_refusal.reason or "upstream").inc()
            return peer_or_refusal
        peer = peer_or_refusal
        if not self.hs.accepted:
            head = Response(101)  # the response phase's headers (request id, ...) on the 101
            await pipeline.run_response(req, head, ctx)
            headers = [(k, v) for k, v in head.headers if k not in _NOT_ON_101 and not k.startswith(b"sec-websocket-")]
            await self.send({"type": "websocket.accept", "subprotocol": peer.subprotocol, "headers": headers})
            self.hs.accepted = True
        elif peer.subprotocol != self.hs.graphql:
            await peer.close(CLOSE_GOING_AWAY, "")
            await self.send({"type": "websocket.close", "code": 1002, "reason": "subprotocol not accepted upstream"})
            return Response(101, reason="upstream refused the subprotocol")
        guard = SocketGuard(req, ctx, pipeline, cfg, peer.subprotocol, route)
        OPEN.labels(route).inc()
        try:
            end = await self._first_message(peer, guard)
            if end is None:
                end = await relay(self.receive, self.send, peer, guard, Deadlines(cfg, ctx, pipeline, req))
        finally:
            OPEN.labels(route).dec()
            self.record["websocket_open_ms"] = round((time.perf_counter() - opened) * 1000, 3)
        ctx.log_fields["websocket"] = {
            "subprotocol": peer.subprotocol,
            "messages_in": guard.inbound,
            "messages_out": guard.outbound,
            "closed_by": end.by,
            "close_code": end.code,
            "close_reason": end.reason,
            "refused_operations": guard.refused_operations,
        }
        if end.by == "gateway":
            REFUSALS.labels(route, end.reason or "closed").inc()
        return Response(101, reason=f"websocket closed by {end.by} ({end.code})")

    async def _first_message(self, peer: Peer, guard: SocketGuard) -> End | None:
        """The message read before the lifecycle (a `connection_init`, or whatever came first)
        gets every message's checks (size, rates, `on_ws_message`) before it is forwarded: a
        `subscribe` sent first is an operation like any other. None: the relay goes on."""
        if self.hs.init is None:
            return None
        try:
            verdict = await guard.check_in(self.hs.init)
        except Exception as exc:  # a policy hook failed: as in the relay, close both sides
            log.error("request %s: the websocket relay failed", guard.req.request_id, exc_info=exc)
            verdict = Verdict("close", code=1011, reason="internal-error")
        if verdict.action == "reply":
            await self.send({"type": "websocket.send", "text": verdict.reply})
            return None
        if verdict.action == "close":
            end = End("gateway", verdict.code, verdict.reason)
            await _close_both(self.send, peer, end)
            return end
        try:
            await peer.send(verdict.reply if verdict.action == "rewrite" else self.hs.init)
        except Closed as exc:
            end = End("upstream", exc.code, exc.reason)
            await _close_both(self.send, peer, end)
            return end
        return None


def _route_refusal(req: Request, cfg: WebSocketConfig, token_in_protocol: bool) -> Response | None:
    """The route's refusal of a handshake on an enabled WebSocket route that needs no principal:
    a cross-site (Origin) handshake."""
    if not origin_allowed(req, cfg, token_in_protocol):
        log.warning("request %s: cross-site WebSocket handshake refused", req.request_id)
        return _problem(
            req,
            403,
            "cross-site-websocket",
            "a cookie-carrying WebSocket handshake from an Origin not allowed here",
        )
    return None


def _problem(req: Request, status: int, type_: str, detail: str) -> Response:
    resp = problem(status, type_, detail, request_id=req.request_id, stopped_by="websocket")
    resp.reason = type_
    return resp


# Authorization schemes a browser sends by itself once the user gave them (ambient, as cookies)
_AMBIENT_SCHEMES = frozenset({b"basic", b"digest", b"negotiate", b"ntlm"})


def origin_allowed(req: Request, cfg: WebSocketConfig, token_in_protocol: bool) -> bool:
    """Cross-site WebSocket hijacking: a browser sends the site's cookies on any page's WebSocket
    handshake and CORS does not apply, so a handshake that carries cookies (and no
    non-ambient credential: an Authorization header or token subprotocol) must come from this
    host's own origin (http or https: behind a TLS-terminating proxy the gateway may not know
    the scheme) or one of `allowed_origins` (matched as the CORS policy matches: exact, or `*`
    for one DNS label). No Origin: not a browser."""
    if cfg.check_origin == "never":
        return True
    if cfg.check_origin == "cookies":
        if req.header(b"cookie") is None:
            return True
        # an Authorization header is not ambient (a page cannot set one on a WebSocket) unless the
        # browser keeps it (Basic, Digest, Negotiate, NTLM: sent by itself once given); a
        # token subprotocol is: any page may offer `bearer.x`, so it exempts nothing — the
        # victim's cookies would still ride along to the upstream
        auth = req.header(b"authorization")
        if auth is not None and not token_in_protocol and auth.split(b" ", 1)[0].lower() not in _AMBIENT_SCHEMES:
            return True
    origin = req.header_str(b"origin")
    if origin is None:
        return cfg.check_origin != "always"
    origin = origin.strip()
    if cfg.allowed_origins and _matcher(tuple(cfg.allowed_origins)).allows(origin):
        return True
    canon = canonical_origin(origin)
    if canon is None or canon == "null" or not req.host:
        return False
    host = req.host.lower()
    return canon in (f"http://{host}", f"https://{host}") or canon in (
        canonical_origin(f"http://{host}"),
        canonical_origin(f"https://{host}"),
    )


@functools.lru_cache(maxsize=256)
def _matcher(origins: tuple[str, ...]) -> OriginMatcher:
    return OriginMatcher(list(origins))


# ---- the upstream ----------------------------------------------------------------------------
class UpstreamPeer:
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.subprotocol: str | None = conn.subprotocol

    async def send(self, data: str | bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self.conn.send(data)  # waits while the write buffer is above its limit
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def recv(self) -> str | bytes:
        from websockets.exceptions import ConnectionClosed

        try:
            return await self.conn.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.conn.close(code, reason)


def _closed(exc: Any) -> Closed:
    rcvd = exc.rcvd
    if rcvd is None:
        return Closed(1006, "")
    return Closed(rcvd.code, rcvd.reason)


def upstream_ws_headers(gateway: Any, req: Request, ctx: Context) -> Headers:
    """The headers the upstream's handshake carries: exactly what an HTTP request would
    (`Gateway.upstream_headers`: forwarding, principal, drops), less the WebSocket ones the
    client library writes itself; checked at the same choke point as every upstream header."""
    headers = gateway.upstream_headers(req, ctx, None, gateway.state.request_drop)
    return [(k, v) for k, v in headers if k not in _WS_HEADERS]


async def open_upstream_ws(
    gateway: Any, target: Any, req: Request, ctx: Context, protocols: list[str], cfg: WebSocketConfig
) -> UpstreamPeer | Response:
    """Connect to the route's upstream (ws:// for http://, wss:// with the upstream's TLS
    settings for https://): the peer, or an unsent problem (502/504, or the upstream's own
    refusal status when it is a 4xx)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    pool = target.upstream if target is not None else None
    if pool is None or not hasattr(pool, "config"):
        return _problem(req, 502, "upstream-unavailable", "this route has no WebSocket upstream")
    prefix, authority, _ = pool.pick()
    base = next(u for u in map(urlsplit, pool.config.urls) if u.netloc.encode() == authority)
    tls = base.scheme == "https"
    path = prefix.decode("latin-1") + req.path + ("?" + req.query.decode("latin-1") if req.query else "")
    uri = f"{'wss' if tls else 'ws'}://{base.netloc}{path}"
    headers = upstream_ws_headers(gateway, req, ctx)
    trace = ctx.trace
    span = None
    if trace is not None:
        if trace.recording:
            span = trace.child(f"websocket upstream {pool.name}", client=True)
            headers.extend(trace.headers_for(span))
        else:
            headers.extend(trace.headers_for(trace.root))
    bad = unsafe_header(headers)
    if bad is not None:
        if span is not None:
            span.end()
        return gateway._unsafe_header(req, ctx, bad)
    t = pool.config.timeouts
    try:
        conn = await connect(
            uri,
            additional_headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
            subprotocols=protocols or None,  # type: ignore[arg-type]
            ssl=upstream_tls(pool.config) if tls else None,
            open_timeout=t.connect + t.read,
            max_size=cfg.max_message_bytes,
            user_agent_header=None,
            compression="deflate",
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if span is not None:
            span.set_attribute("http.response.status_code", status)
        return _problem(
            req,
            status if 400 <= status < 500 else 502,
            "upstream-refused",
            f"upstream {pool.name} refused the WebSocket upgrade ({status})",
        )
    except TimeoutError:
        return _problem(req, 504, "upstream-timeout", f"upstream {pool.name} did not accept the upgrade in time")
    except (OSError, InvalidHandshake) as exc:
        return _problem(req, 502, "upstream-unavailable", f"upstream {pool.name}: {type(exc).__name__}")
    finally:
        if span is not None:
            span.end()
    return UpstreamPeer(conn)


# ---- the wrapped app (middleware mode) -----------------------------------------------------------
class AppPeer:
    """The wrapped ASGI app as the other side: it runs as a task fed through bounded queues
    (back-pressure both ways), with the normalised path and the principal headers, as in HTTP."""

    def __init__(self, task: asyncio.Task[None], to_app: asyncio.Queue[dict[str, Any]], from_app: asyncio.Queue[Any]):
        self.task = task
        self.to_app = to_app
        self.from_app = from_app
        self.subprotocol: str | None = None

    @classmethod
    async def open(
        cls, app: Any, req: Request, ctx: Context, gateway: Any, protocols: list[str], hs: Handshake
    ) -> AppPeer | Response:
        from bastion.gateway.proxy import client_headers

        drop = frozenset(ctx.drop_request_headers | gateway.state.request_drop | {b"sec-websocket-protocol"})
        headers = client_headers(_original_headers(req), drop)
        if protocols:
            headers.append((b"sec-websocket-protocol", ", ".join(protocols).encode("latin-1")))
        headers += ctx.upstream_headers
        bad = unsafe_header(headers)
        if bad is not None:
            return gateway._unsafe_header(req, ctx, bad)
        scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "wss" if req.scheme == "https" else "ws",
            "path": req.path,
            "raw_path": req.path.encode("latin-1"),
            "query_string": req.query,
            "headers": headers,
            "subprotocols": protocols,
            "client": (str(req.client_ip), 0) if req.client_ip else None,
            "extensions": {"websocket.http.response": {}},
        }
        to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue(16)
        from_app: asyncio.Queue[Any] = asyncio.Queue(16)
        await to_app.put({"type": "websocket.connect"})

        async def run() -> None:
            try:
                await app(scope, to_app.get, from_app.put)
            except Exception as exc:  # logged here; the client gets a refusal or a close
                log.error("request %s: the application failed on a websocket", req.request_id, exc_info=exc)
            finally:
                with contextlib.suppress(asyncio.QueueFull):  # (full: `recv` sees the task done)
                    from_app.put_nowait(None)  # the app returned

        task = asyncio.create_task(run())
        peer = cls(task, to_app, from_app)
        first = await peer._next()
        if first is not None and first["type"] == "websocket.accept":
            peer.subprotocol = first.get("subprotocol")
            return peer
        if first is not None and first["type"] == "websocket.http.response.start":  # the app's own denial
            body = b""
            while True:
                more = await peer._next()
                if more is None or more.get("type") != "websocket.http.response.body":
                    break
                body += more.get("body", b"")
                if not more.get("more_body"):
                    break
            await peer._stop(grace=1.0)
            resp = Response(first["status"], [(k.lower(), v) for k, v in first.get("headers", [])], body)
            resp.stopped_by = "app"
            resp.reason = "app refused the upgrade"
            return resp
        await peer._stop()
        return _problem(req, 403, "websocket-refused", "the application refused the WebSocket")

    async def send(self, data: str | bytes) -> None:
        if self.task.done():
            raise Closed(1006, "")
        key = "text" if isinstance(data, str) else "bytes"
        await self.to_app.put({"type": "websocket.receive", key: data})

    async def _next(self) -> Any:
        """The app's next message; None once it returned (also when the sentinel found no room)."""
        while True:
            if not self.from_app.empty():
                return self.from_app.get_nowait()
            if self.task.done():
                return None
            getter = asyncio.ensure_future(self.from_app.get())
            await asyncio.wait({getter, self.task}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                return getter.result()
            getter.cancel()

    async def recv(self) -> str | bytes:
        message = await self._next()
        if message is None:
            raise Closed(1000, "")
        if message["type"] == "websocket.close":
            raise Closed(message.get("code", 1000), message.get("reason") or "")
        if message["type"] == "websocket.send":
            text = message.get("text")
            return text if text is not None else message.get("bytes", b"")
        return await self.recv()

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.to_app.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        await self._stop(grace=1.0)

    async def _stop(self, grace: float = 0.0) -> None:
        if grace and not self.task.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self.task), grace)
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


def _original_headers(req: Request) -> Headers:
    # the handshake's headers as received (the lifted token included: the app sees the
    # credential as the upstream would, in Authorization)
    return list(req.headers)


# ---- per message ------------------------------------------------------------------------------
@dataclass(slots=True)
class Verdict:
    action: str  # "pass", "reply" (to the client, the socket stays open), "close", "rewrite" (forward `reply`)
    reply: str = ""
    code: int = 1000
    reason: str = ""


PASS = Verdict("pass")


class SocketGuard:
    """Every message's checks: size, the connection's and the principal's message rates (the
    rate-limit library), and the route's `on_ws_message` hooks. A GraphQL `subscribe`/`start`
    refused by a hook gets its protocol's `error` for that id; anything else refused closes."""

    def __init__(
        self, req: Request, ctx: Context, pipeline: Pipeline, cfg: WebSocketConfig, subprotocol: str | None, route: str
    ) -> None:
        self.req = req
        self.ctx = ctx
        self.pipeline = pipeline
        self.cfg = cfg
        self.subprotocol = subprotocol
        self.graphql = subprotocol if subprotocol in GRAPHQL_PROTOCOLS else None
        self.route = route
        self.rate: Rate | None = parse_rate(cfg.messages_per_second) if cfg.messages_per_second else None
        self.principal_rate: Rate | None = parse_rate(cfg.principal_messages) if cfg.principal_messages else None
        self.bucket: Any = None
        self.key = principal_key(req, ctx)
        self.inbound = 0
        self.outbound = 0
        self.refused_operations = 0
        # the gateway checked (or refused) a credential on this socket: connection_init payloads
        # must not carry another (`_init_credentials`)
        self.init_checked = ctx.principal is not None or b"authorization" in ctx.drop_request_headers
        self.count_in = MESSAGES.labels(route, "in")  # labelled once, not per message
        self.count_out = MESSAGES.labels(route, "out")

    async def check_in(self, data: str | bytes) -> Verdict:
        self.inbound += 1
        self.count_in.inc()
        if _size(data) > self.cfg.max_message_bytes:
            return Verdict("close", code=CLOSE_TOO_BIG, reason="message-too-big")
        if self.rate is not None:
            self.bucket, decision = token_bucket(self.bucket, time.monotonic(), self.rate, 1)
            if not decision.allowed:
                return Verdict("close", code=CLOSE_POLICY, reason="message-rate")
        if self.principal_rate is not None:
            try:
                d = await shared_store(self.cfg.store).hit("token_bucket", "ws:" + self.key, self.principal_rate)
                allowed = d.allowed
            except StoreUnavailable:
                allowed = False  # fail closed, as the rate_limit policy's default
            if not allowed:
                return Verdict("close", code=CLOSE_POLICY, reason="principal-message-rate")
        if self.graphql is not None and self.init_checked:
            # every message, text or binary (graphql-ws reads a binary frame as text), parsed:
            # a substring test would miss `connection\u005finit`
            verdict = self._init_credentials(data)
            if verdict is not None:
                return verdict
        if not self.pipeline.ws_message_phase:
            return PASS
        message = self._message(data)
        if message is None:  # a GraphQL socket's message that is not JSON
            return Verdict("close", code=4400, reason="invalid-message")
        refusal = await self.pipeline.run_ws_message(self.req, self.ctx, message)
        if refusal is None:
            return PASS
        reason = _problem_type(refusal)
        if message.operation is not None and message.id is not None and self.graphql is not None:
            self.refused_operations += 1
            REFUSALS.labels(self.route, "operation:" + reason).inc()
            return Verdict("reply", reply=self._error(message.id, refusal))
        return Verdict("close", code=_STATUS_CLOSE.get(refusal.status, CLOSE_POLICY), reason=reason[:100])

    def _init_credentials(self, data: str | bytes) -> Verdict | None:
        """A `connection_init` is forwarded as the client wrote it, and GraphQL servers read a
        credential from its payload: it may carry none but the one the handshake was checked
        with (another: close 4400 `ambiguous-credentials`, as two credentials over HTTP), and
        one the upstream must not see (refused on a public route, or `forward_credentials:
        false`) is taken out of the payload first."""
        parsed = _json_object(data)
        if parsed is None or not any(
            isinstance(k, str) and k.casefold() == "type" and v == "connection_init" for k, v in parsed.items()
        ):
            return None
        payload = parsed.get("payload")
        found = _init_credentials(payload)
        if not found or not isinstance(payload, dict):
            return None
        if b"authorization" in self.ctx.drop_request_headers:
            out = {k: (_without_credentials(v) if k == "payload" else v) for k, v in parsed.items()}
            return Verdict("rewrite", reply=orjson.dumps(out).decode())
        if self.ctx.principal is None:
            return None  # the gateway checked no credential: the upstream's business
        checked = self.req.header_str(b"authorization")
        if any(c != checked for c in found):
            return Verdict("close", code=4400, reason="ambiguous-credentials")
        return None

    def check_out(self, data: str | bytes) -> Verdict:
        self.outbound += 1
        self.count_out.inc()
        if _size(data) > self.cfg.max_message_bytes:
            return Verdict("close", code=CLOSE_TOO_BIG, reason="upstream-message-too-big")
        return PASS

    def _message(self, data: str | bytes) -> WsMessage | None:
        """The message as the hooks see it; None (close 4400) for a GraphQL socket's message that
        is not a JSON object, or any operation-like message with a key that only a
        case-insensitive decoder reads as a protocol key (`_ambiguous`)."""
        parsed = _json_object(data) if self.graphql is not None or data.lstrip()[:1] in ("{", b"{") else None
        if parsed is None:
            return None if self.graphql is not None else WsMessage(data, self.subprotocol)
        if self.graphql is None and not any(
            isinstance(k, str) and k.casefold() == "type" and v in ("subscribe", "start") for k, v in parsed.items()
        ):
            # no GraphQL subprotocol negotiated, yet some servers (gqlgen) speak graphql-ws to a
            # client that offered none: a JSON `subscribe`/`start` is still an operation (refused: close)
            return WsMessage(data, self.subprotocol)
        payload = parsed.get("payload")
        if _ambiguous(parsed, _MESSAGE_KEYS) or (isinstance(payload, dict) and _ambiguous(payload, _OPERATION_KEYS)):
            return None
        kind = parsed.get("type")
        id_ = parsed.get("id")
        id_ = id_ if isinstance(id_, str) else (str(id_) if isinstance(id_, int) else None)
        op = None
        if kind in ("subscribe", "start"):
            op = payload if isinstance(payload, dict) else {}
        return WsMessage(data, self.subprotocol, kind if isinstance(kind, str) else None, id_, op)

    def _error(self, id_: str, refusal: Response) -> str:
        errors = _graphql_errors(refusal)
        if self.graphql == "graphql-transport-ws":
            return orjson.dumps({"id": id_, "type": "error", "payload": errors}).decode()
        return orjson.dumps({"id": id_, "type": "error", "payload": errors[0]}).decode()  # legacy: one error


_MESSAGE_KEYS = frozenset({"type", "id", "payload"})
_OPERATION_KEYS = frozenset({"query", "variables", "operationName", "extensions"})
_FOLDED = {k.casefold() for k in _MESSAGE_KEYS | _OPERATION_KEYS}


def _ambiguous(obj: dict[str, Any], names: frozenset[str]) -> bool:
    """A key that is not one of `names` but that a case-insensitive decoder reads as one: Go's
    encoding/json (gqlgen) matches keys to fields with Unicode case folding ("Type", "ſ" = "s"),
    the last one winning, where the checks read only the exact key."""
    return any(isinstance(k, str) and k not in names and k.casefold() in _FOLDED for k in obj)


def _json_object(data: str | bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _size(data: str | bytes) -> int:
    """Bytes on the wire (UTF-8 for text; encoded only when it could matter)."""
    if isinstance(data, str):
        return len(data) if data.isascii() else len(data.encode())
    return len(data)


def _problem_type(resp: Response) -> str:
    try:
        body = orjson.loads(resp.body) if resp.body else {}
    except orjson.JSONDecodeError:
        body = {}
    if isinstance(body, dict):
        if isinstance(body.get("type"), str):
            return str(body["type"]).rsplit("/", 1)[-1]
        errs = body.get("errors")
        if isinstance(errs, list) and errs and isinstance(errs[0], dict):
            code = (errs[0].get("extensions") or {}).get("code")
            if isinstance(code, str):
                return code
    return resp.reason or f"refused-{resp.status}"


def _graphql_errors(resp: Response) -> list[dict[str, Any]]:
    """The refusal as GraphQL errors: the guard's own when it answered GraphQL-shaped, else one
    built from the problem."""
    try:
        body = orjson.loads(resp.body) if resp.body else {}
    except orjson.JSONDecodeError:
        body = {}
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        return [e for e in body["errors"] if isinstance(e, dict)] or [{"message": "refused"}]
    detail = body.get("detail") if isinstance(body, dict) else None
    return [
        {
            "message": detail if isinstance(detail, str) else "the operation was refused",
            "extensions": {"code": _problem_type(resp), "status": resp.status},
        }
    ]


# ---- time limits ----------------------------------------------------------------------------
class Deadlines:
    """Idle timeout, maximum lifetime, the credential's expiry and (for tokens with a `jti`, when
    the route's auth policy has a revocation store) periodic revocation checks."""

    def __init__(self, cfg: WebSocketConfig, ctx: Context, pipeline: Pipeline, req: Request) -> None:
        now = time.monotonic()
        self.cfg = cfg
        self.last = now
        self.end_of_life = now + cfg.max_lifetime
        self.expires: float | None = None
        p = ctx.principal
        if p is not None and p.exp is not None:
            self.expires = now + max(0.0, p.exp - time.time())
        self.revocation = _revocation_check(pipeline, req, ctx)
        self.next_revocation = now + cfg.revocation_check

    def touch(self) -> None:
        self.last = time.monotonic()

    async def watch(self) -> Verdict:
        while True:
            now = time.monotonic()
            if self.expires is not None and now >= self.expires:
                return Verdict("close", code=self.cfg.expiry_close_code, reason="token-expired")
            if now >= self.end_of_life:
                return Verdict("close", code=CLOSE_GOING_AWAY, reason="max-lifetime")
            if now - self.last >= self.cfg.idle_timeout:
                return Verdict("close", code=CLOSE_GOING_AWAY, reason="idle-timeout")
            if self.revocation is not None and now >= self.next_revocation:
                self.next_revocation = now + self.cfg.revocation_check
                reason = await self.revocation()
                if reason is not None:
                    return Verdict("close", code=self.cfg.expiry_close_code, reason=reason)
            wake = [self.end_of_life, self.last + self.cfg.idle_timeout]
            if self.expires is not None:
                wake.append(self.expires)
            if self.revocation is not None:
                wake.append(self.next_revocation)
            await asyncio.sleep(max(0.01, min(wake) - now))


def _revocation_check(pipeline: Pipeline, req: Request, ctx: Context) -> Callable[[], Awaitable[str | None]] | None:
    """A check of the socket's credential against the route's auth policy's revocation store
    (the one the handshake consulted), as that policy checks it: by `jti`, and by subject for
    tokens with an `iat` (logout-everywhere); an unreachable store is that policy's
    `revocation_fail` (closed, the default: the socket closes). The close reason, or None."""
    p = ctx.principal
    if p is None or (p.jti is None and not p.subject):
        return None
    auth = next((x for x in pipeline.policies if x.name == "auth"), None)
    url = getattr(auth, "revocation_url", None)
    if not isinstance(url, str):
        return None
    fail_closed = getattr(auth, "revocation_fail", "closed") != "open"
    from bastion.auth.revocation import revocation_store

    jti, sub, iat = p.jti, (p.subject or None) if p.iat is not None else None, p.iat

    async def revoked() -> str | None:
        try:
            return "token-revoked" if await revocation_store(url).is_revoked(jti, sub, iat) else None
        except Exception:
            log.warning("request %s: revocation store unreachable for an open socket", req.request_id)
            return "revocation-unavailable" if fail_closed else None

    return revoked


# ---- the relay --------------------------------------------------------------------------------
@dataclass(slots=True)
class End:
    by: str  # "client", "upstream", "gateway"
    code: int
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _sendable(code: int) -> int:
    """A close code that may go on the wire (1005/1006/1015 are never sent: RFC 6455 7.4.1)."""
    if code in (1005,):
        return 1000
    if code in (1006, 1015) or code < 1000 or code >= 5000:
        return CLOSE_BAD_GATEWAY
    return code


async def relay(receive: Receive, send: Send, peer: Peer, guard: SocketGuard, deadlines: Deadlines) -> End:
    """Messages both ways until one side closes or a limit is reached; then the other side is
    closed with the code and reason (a gateway decision closes both). Each direction waits for
    its writer (`send` returns when the transport takes more), so a slow reader slows its writer.
    Over 60 lines because the two directions are closures sharing the guard and deadlines; each
    is short, and splitting them out would pass five arguments for no clarity."""

    async def client_to_peer() -> End:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return End("client", message.get("code", 1005), message.get("reason") or "")
            if kind != "websocket.receive":
                continue
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            deadlines.touch()
            verdict = await guard.check_in(data)
            if verdict.action == "reply":
                await send({"type": "websocket.send", "text": verdict.reply})
                continue
            if verdict.action == "close":
                return End("gateway", verdict.code, verdict.reason)
            if verdict.action == "rewrite":
                data = verdict.reply
            try:
                await peer.send(data)
            except Closed as exc:
                return End("upstream", exc.code, exc.reason)

    async def peer_to_client() -> End:
        while True:
            try:
                data = await peer.recv()
            except Closed as exc:
                return End("upstream", exc.code, exc.reason)
            deadlines.touch()
            verdict = guard.check_out(data)
            if verdict.action == "close":
                return End("gateway", verdict.code, verdict.reason)
            key = "text" if isinstance(data, str) else "bytes"
            await send({"type": "websocket.send", key: data})

    async def watchdog() -> End:
        v = await deadlines.watch()
        return End("gateway", v.code, v.reason)

    tasks = [asyncio.create_task(c()) for c in (client_to_peer, peer_to_client, watchdog)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
    finished = next(t for t in tasks if t in done)
    try:
        end = finished.result()
    except OSError:  # the client went away while a message was on its way to it
        end = End("client", 1006, "")
    except Exception as exc:  # a policy hook failed: a server error, never a traceback to anyone
        log.error("request %s: the websocket relay failed", guard.req.request_id, exc_info=exc)
        end = End("gateway", 1011, "internal-error")
    await _close_both(send, peer, end)
    return end


async def _close_both(send: Send, peer: Peer, end: End) -> None:
    if end.by == "client":  # a client that vanished (1006) is "going away" to the upstream
        await peer.close(CLOSE_GOING_AWAY if end.code == 1006 else _sendable(end.code), end.reason)
        return
    code = _sendable(end.code)
    with contextlib.suppress(Exception):
        await send({"type": "websocket.close", "code": code, "reason": end.reason[:120]})
    if end.by == "gateway":
        await peer.close(CLOSE_GOING_AWAY, end.reason[:120])
    else:
        await peer.close(1000, "")
