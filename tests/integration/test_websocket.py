"""WebSockets through a real gateway to a real Starlette upstream, driven by the `websockets`
client: relay both ways, close codes, the handshake's lifecycle (auth, Origin, rate limits, IP
rules) before the upstream is contacted, limits on the open socket, audit and metrics."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import jwt
import pytest
from helpers import ThreadedUvicorn, audit_lines, run_gateway
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bastion.auth.apikeys import hash_key

SECRET = "w" * 40
ISS = "https://issuer.ws.test"
KEY = "bk_test_" + "W" * 43

# what the upstream saw: handshakes (path, headers, subprotocols) and close frames from the gateway
SEEN: dict[str, list[Any]] = {"handshakes": [], "closes": [], "flood": [0]}


async def echo(ws: WebSocket) -> None:
    offered = ws.scope.get("subprotocols") or []
    SEEN["handshakes"].append(
        {"path": ws.scope["path"], "headers": [(k.decode(), v.decode()) for k, v in ws.scope["headers"]]}
    )
    await ws.accept(subprotocol=offered[0] if offered else None)
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                SEEN["closes"].append((msg.get("code"), msg.get("reason")))
                return
            text = msg.get("text")
            if text is None:
                await ws.send_bytes(msg.get("bytes") or b"")
            elif text == "headers":
                await ws.send_text(json.dumps({"headers": [(k.decode(), v.decode()) for k, v in ws.scope["headers"]]}))
            elif text.startswith("close:"):
                _, code, reason = text.split(":", 2)
                await ws.close(int(code), reason)
                return
            elif text.startswith("flood:"):  # as fast as the gateway takes them, until it goes away
                _, n, size = text.split(":")
                SEEN["flood"] = [0]
                sending = asyncio.create_task(flood(ws, int(n), int(size)))
                try:
                    msg = await ws.receive()  # the gateway's close ends the flood
                finally:
                    sending.cancel()
                if msg["type"] == "websocket.disconnect":
                    SEEN["closes"].append((msg.get("code"), msg.get("reason")))
                    return
            elif text.startswith("big:"):
                await ws.send_text("x" * int(text[4:]))
            else:
                await ws.send_text(text)
    except WebSocketDisconnect:
        return


async def flood(ws: WebSocket, n: int, size: int) -> None:
    """`n` messages of `size` random bytes (incompressible under per-message deflate). A send
    that the transport takes at once does not yield, and uvicorn keeps taking sends after the
    peer has gone: without the yield, a flood nobody reads would hold this upstream's event loop
    (and fail the next tests' handshakes) until all `n` are made."""
    for _ in range(n):
        await ws.send_bytes(os.urandom(size))
        SEEN["flood"][0] += 1
        await asyncio.sleep(0)  # the receive side sees the close


async def refuse(ws: WebSocket) -> None:
    await ws.close(1008)  # before accept: the server answers the upgrade 403


upstream_app = Starlette(routes=[WebSocketRoute("/ws/refuse", refuse), WebSocketRoute("/{rest:path}", echo)])


def token(sub: str = "alice", ttl: float = 300, **claims: Any) -> str:
    now = time.time()
    return jwt.encode(
        {"iss": ISS, "sub": sub, "iat": int(now), "exp": int(now + ttl), **claims}, SECRET, algorithm="HS256"
    )


AUTH = {
    "schemes": {
        "bearer": {"type": "jwt", "issuers": [{"issuer": ISS, "algorithms": ["HS256"], "keys": [{"secret": SECRET}]}]},
        "key": {
            "type": "api_key",
            "cookie": "session_key",
            "keys": [{"id": "k1", "hash": hash_key(KEY), "owner": "cookie-user", "scopes": []}],
        },
    }
}


@pytest.fixture(scope="module")
def ws_upstream():
    with ThreadedUvicorn(upstream_app) as server:
        yield server


@pytest.fixture(scope="module")
def gw(ws_upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ws")
    up = {"upstream": "ws"}
    cfg = {
        "upstreams": {"ws": {"urls": [ws_upstream.url], "timeouts": {"connect": 10, "read": 30, "total": 60}}},
        "policies": {"audit": {"output": str(tmp / "audit.log")}},
        "routes": [
            {
                "path": "/ws/echo",
                **up,
                "websocket": {"allowed_origins": ["https://app.example", "https://*.apps.example"]},
            },
            {"path": "/ws/refuse", **up},
            {"path": "/off/*", **up, "websocket": False},
            {"path": "/auth/*", **up, "policies": {"auth": AUTH}},
            {"path": "/scoped/*", **up, "policies": {"auth": {**AUTH, "require": [{"bearer": ["chat:read"]}]}}},
            {
                "path": "/limits/*",
                **up,
                "policies": {"auth": AUTH},
                "websocket": {
                    "max_message_bytes": 1000,
                    "messages_per_second": "5/second burst 5",
                    "max_per_principal": 2,
                },
            },
            {"path": "/idle/*", **up, "websocket": {"idle_timeout": 0.5}},
            {"path": "/life/*", **up, "websocket": {"max_lifetime": 1.0, "idle_timeout": 60}},
            {
                "path": "/expiry/*",
                **up,
                "policies": {"auth": AUTH},
                "websocket": {"revocation_check": 0.2},
            },
            {
                "path": "/throttled/*",
                **up,
                "policies": {
                    "rate_limit": {
                        "algorithm": "sliding_log",  # exact, whatever the clock
                        "limits": [{"rate": "2/minute", "key": ["ip", "route"]}],
                    }
                },
            },
            {"path": "/blocked/*", **up, "policies": {"ip_rules": {"block": ["127.0.0.0/8"]}}},
            {"path": "/gone/*", "upstream": "down"},
        ],
    }
    cfg["upstreams"]["down"] = {"urls": ["http://127.0.0.1:9"], "timeouts": {"connect": 1, "read": 1, "total": 2}}
    with run_gateway(cfg, tmp) as g:
        g.audit = tmp / "audit.log"  # type: ignore[attr-defined]
        yield g


def ws_url(gw, path: str) -> str:
    return f"ws://127.0.0.1:{gw.port}{path}"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def refused(url: str, **kw: Any) -> tuple[int, dict]:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, **kw):
            pass
    resp = info.value.response
    return resp.status_code, json.loads(resp.body or b"{}")


async def closed_with(ws: Any, timeout: float = 10) -> tuple[int | None, str]:
    """Read until the gateway closes: its close code and reason."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd else None), (exc.rcvd.reason if exc.rcvd else "")
    raise AssertionError("not closed")


# ---- relay -------------------------------------------------------------------------------------
def test_text_and_binary_relayed_both_ways_with_subprotocol(gw):
    async def go():
        async with connect(ws_url(gw, "/ws/echo"), subprotocols=["chat.v1"]) as ws:
            assert ws.subprotocol == "chat.v1"
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01\xff")
            assert await ws.recv() == b"\x00\x01\xff"
            big = "y" * 200_000  # frames larger than any socket buffer, relayed whole
            await ws.send(big)
            assert await ws.recv() == big
            await ws.send("headers")
            seen = dict(json.loads(await ws.recv())["headers"])
            answer = ws.response.headers
        return seen, answer

    seen, answer = run(go())
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"  # the request's scheme, not the scope's "ws"
    assert seen["x-request-id"]  # the handshake got a request id like any request
    assert answer["x-request-id"] == seen["x-request-id"]  # and the client sees it on the 101
    assert answer["x-content-type-options"] == "nosniff"  # the response phase ran on the 101
    assert seen["sec-websocket-protocol"] == "chat.v1"


def test_close_codes_and_reasons_propagate_both_ways(gw):
    async def go():
        async with connect(ws_url(gw, "/ws/echo")) as ws:
            await ws.send("close:4000:bye from upstream")
            code, reason = await closed_with(ws)
        assert (code, reason) == (4000, "bye from upstream")
        SEEN["closes"].clear()
        async with connect(ws_url(gw, "/ws/echo")) as ws:
            await ws.send("ping?")
            assert await ws.recv() == "ping?"
            await ws.close(4001, "client done")
        for _ in range(100):
            if SEEN["closes"]:
                break
            await asyncio.sleep(0.05)
        assert SEEN["closes"][-1] == (4001, "client done")

    run(go())


def test_back_pressure_a_client_that_does_not_read_slows_the_upstream(gw):
    """The client reads nothing while the upstream sends 400 messages of 256 KiB (100 MiB): with
    back-pressure the upstream's sends stop once the buffers on the way are full, far short of
    all of them; without it the gateway would take everything into memory."""

    async def go():
        async with connect(ws_url(gw, "/ws/echo"), max_size=None, max_queue=1, close_timeout=1) as ws:
            await ws.send("flood:400:262144")
            await asyncio.sleep(3)  # a bound, not a timing: a slower machine sends fewer
            stalled = SEEN["flood"][0]
            got = await ws.recv()  # and what was held back still arrives once the client reads
            assert isinstance(got, bytes) and len(got) == 262144
            return stalled

    stalled = run(go())
    assert stalled < 200  # (about 40 here: the buffers of two TCP hops and one message per relay)


def test_ping_pong_kept(gw):
    async def go():
        async with connect(ws_url(gw, "/ws/echo")) as ws:
            latency = await asyncio.wait_for(await ws.ping(b"x"), 5)  # answered by the gateway's server
            assert latency >= 0
            await ws.send("still open")
            assert await ws.recv() == "still open"

    run(go())


def test_route_websocket_false_refuses_before_the_upstream(gw):
    before = len(SEEN["handshakes"])
    status, body = run(refused(ws_url(gw, "/off/ws/echo")))
    assert status == 403 and body["type"].endswith("websocket-refused")
    assert len(SEEN["handshakes"]) == before


def test_upstream_refusal_and_unreachable_upstream(gw):
    status, body = run(refused(ws_url(gw, "/ws/refuse")))
    assert status == 403 and body["type"].endswith("upstream-refused")
    status, body = run(refused(ws_url(gw, "/gone/x")))
    assert status == 502 and body["type"].endswith("upstream-unavailable")


# ---- the handshake's lifecycle -------------------------------------------------------------------
def test_auth_runs_before_the_upstream_is_contacted(gw):
    before = len(SEEN["handshakes"])
    status, _ = run(refused(ws_url(gw, "/auth/ws/echo")))
    assert status == 401
    status, _ = run(refused(ws_url(gw, "/auth/ws/echo"), additional_headers={"Authorization": "Bearer nope"}))
    assert status == 401
    assert len(SEEN["handshakes"]) == before

    async def go():
        async with connect(
            ws_url(gw, "/auth/ws/echo"), additional_headers={"Authorization": f"Bearer {token()}"}
        ) as ws:
            await ws.send("headers")
            return dict(json.loads(await ws.recv())["headers"])

    seen = run(go())
    assert seen["x-bastion-subject"] == "alice"
    # scopes: a token without the route's scope is refused (403) before the upstream
    before = len(SEEN["handshakes"])
    status, body = run(refused(ws_url(gw, "/scoped/ws"), additional_headers={"Authorization": f"Bearer {token()}"}))
    assert status == 403 and "scope" in body["type"]
    assert len(SEEN["handshakes"]) == before

    async def scoped():
        hdr = {"Authorization": f"Bearer {token(scope='chat:read')}"}
        async with connect(ws_url(gw, "/scoped/ws"), additional_headers=hdr) as ws:
            await ws.send("ok")
            return await ws.recv()

    assert run(scoped()) == "ok"


def test_token_in_subprotocol_is_lifted_and_never_offered_upstream(gw):
    tok = token(sub="bob")

    async def go():
        async with connect(ws_url(gw, "/auth/ws/echo"), subprotocols=["chat.v1", f"bearer.{tok}"]) as ws:
            assert ws.subprotocol == "chat.v1"
            await ws.send("headers")
            return dict(json.loads(await ws.recv())["headers"])

    seen = run(go())
    assert seen["x-bastion-subject"] == "bob"
    assert tok not in seen["sec-websocket-protocol"] and seen["sec-websocket-protocol"] == "chat.v1"
    # a token in the subprotocol and another in Authorization: two credentials, refused
    status, body = run(
        refused(
            ws_url(gw, "/auth/ws/echo"),
            subprotocols=["chat.v1", f"bearer.{tok}"],
            additional_headers={"Authorization": f"Bearer {token()}"},
        )
    )
    assert status == 400 and "ambiguous" in body["type"]


def test_cross_site_cookie_handshake_refused(gw):
    cookie = {"Cookie": f"session_key={KEY}"}
    own = f"http://127.0.0.1:{gw.port}"

    async def opens(path: str, headers: dict[str, str]) -> bool:
        try:
            async with connect(ws_url(gw, path), additional_headers=headers) as ws:
                await ws.send("hi")
                return await ws.recv() == "hi"
        except InvalidStatus as exc:
            assert exc.response.status_code == 403
            assert json.loads(exc.response.body)["type"].endswith("cross-site-websocket")
            return False

    async def go():
        # cookie-authenticated route: a foreign page's handshake is refused, the site's own passes
        assert not await opens("/auth/ws/echo", {**cookie, "Origin": "https://evil.example"})
        assert await opens("/auth/ws/echo", {**cookie, "Origin": own})
        assert await opens("/auth/ws/echo", cookie)  # no Origin: not a browser
        # a route whose upstream may read cookies itself: the same rule, with the allowlist
        assert not await opens("/ws/echo", {"Cookie": "sid=1", "Origin": "https://evil.example"})
        assert await opens("/ws/echo", {"Cookie": "sid=1", "Origin": "https://app.example"})
        assert await opens("/ws/echo", {"Cookie": "sid=1", "Origin": "https://eu.apps.example"})  # a pattern
        assert not await opens("/ws/echo", {"Cookie": "sid=1", "Origin": "https://apps.example.evil.example"})
        assert not await opens("/ws/echo", {"Cookie": "sid=1", "Origin": "null"})
        # no cookie: no ambient authority to hijack
        assert await opens("/ws/echo", {"Origin": "https://evil.example"})
        # a header credential with the cookie: not refused as cross-site (here the auth policy
        # refuses two credentials as ambiguous: 400)
        status, body = await refused(
            ws_url(gw, "/auth/ws/echo"),
            additional_headers={**cookie, "Origin": "https://evil.example", "Authorization": f"Bearer {token()}"},
        )
        assert status == 400 and "ambiguous" in body["type"]

    run(go())


def test_rate_limit_on_connection_attempts_and_ip_rules(gw):
    async def go():
        for _ in range(2):
            async with connect(ws_url(gw, "/throttled/ws/echo")) as ws:
                await ws.send("a")
                await ws.recv()
        status, _ = await refused(ws_url(gw, "/throttled/ws/echo"))
        assert status == 429
        status, _ = await refused(ws_url(gw, "/blocked/ws/echo"))
        assert status == 403

    run(go())


# ---- limits on the open socket -------------------------------------------------------------------
def test_message_size_limit_closes_1009(gw):
    async def go():
        hdr = {"Authorization": f"Bearer {token(sub='size')}"}
        async with connect(ws_url(gw, "/limits/ws/echo"), additional_headers=hdr) as ws:
            await ws.send("x" * 900)
            assert len(await ws.recv()) == 900
            await ws.send("x" * 2000)
            return await closed_with(ws)

    assert run(go()) == (1009, "message-too-big")


def test_message_rate_per_connection_closes_1008(gw):
    async def go():
        hdr = {"Authorization": f"Bearer {token(sub='rate')}"}
        async with connect(ws_url(gw, "/limits/ws/echo"), additional_headers=hdr) as ws:
            for i in range(20):
                try:
                    await ws.send(str(i))
                except ConnectionClosed:
                    break
            return await closed_with(ws)

    assert run(go()) == (1008, "message-rate")


def test_max_sockets_per_principal(gw):
    async def go():
        hdr = {"Authorization": f"Bearer {token(sub='many')}"}
        a = await connect(ws_url(gw, "/limits/ws/echo"), additional_headers=hdr)
        b = await connect(ws_url(gw, "/limits/ws/echo"), additional_headers=hdr)
        status, body = await refused(ws_url(gw, "/limits/ws/echo"), additional_headers=hdr)
        other = await connect(  # another principal is not affected
            ws_url(gw, "/limits/ws/echo"), additional_headers={"Authorization": f"Bearer {token(sub='other')}"}
        )
        await a.close()
        await asyncio.sleep(0.3)
        c = await connect(ws_url(gw, "/limits/ws/echo"), additional_headers=hdr)  # a place freed
        for ws in (b, c, other):
            await ws.close()
        return status, body

    status, body = run(go())
    assert status == 429 and body["type"].endswith("too-many-sockets")


def test_idle_timeout_and_max_lifetime(gw):
    async def idle():
        async with connect(ws_url(gw, "/idle/ws/echo")) as ws:
            return await closed_with(ws)

    async def lifetime():
        async with connect(ws_url(gw, "/life/ws/echo")) as ws:
            t0 = time.monotonic()
            try:
                while True:  # busy, never idle: the lifetime still ends it
                    await ws.send("k")
                    await ws.recv()
                    await asyncio.sleep(0.1)
            except ConnectionClosed as exc:
                assert exc.rcvd is not None
                return exc.rcvd.code, exc.rcvd.reason, time.monotonic() - t0

    assert run(idle()) == (1001, "idle-timeout")
    code, reason, took = run(lifetime())
    assert (code, reason) == (1001, "max-lifetime") and took >= 0.9


def test_token_expiry_closes_4401(gw):
    async def go():
        hdr = {"Authorization": f"Bearer {token(sub='short', ttl=2)}"}
        async with connect(ws_url(gw, "/expiry/ws/echo"), additional_headers=hdr) as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            return await closed_with(ws)

    assert run(go()) == (4401, "token-expired")


def test_revoked_token_closes_the_open_socket(gw):
    from bastion.auth.revocation import revocation_store

    tok = token(sub="revoked-later", jti="jti-ws-1")

    async def go():
        async with connect(ws_url(gw, "/expiry/ws/echo"), additional_headers={"Authorization": f"Bearer {tok}"}) as ws:
            await ws.send("a")
            assert await ws.recv() == "a"
            # the memory store is per process: the gateway's thread sees this revocation
            await revocation_store("memory").revoke_jti("jti-ws-1", time.time() + 300)
            return await closed_with(ws)

    assert run(go()) == (4401, "token-revoked")


# ---- observability -----------------------------------------------------------------------------
def test_one_audit_line_per_connection_and_metrics(gw):
    from prometheus_client import generate_latest

    from bastion.observability import REGISTRY

    async def go():
        async with connect(ws_url(gw, "/ws/echo")) as ws:
            for i in range(3):
                await ws.send(f"m{i}")
                await ws.recv()
            await ws.send("headers")
            rid = dict(json.loads(await ws.recv())["headers"])["x-request-id"]
        return rid

    rid = run(go())
    run(refused(ws_url(gw, "/off/metrics")))  # a refusal of this test's own, counted
    lines = [x for x in audit_lines(gw.audit, rid) if x["request_id"] == rid]
    assert len(lines) == 1
    line = lines[0]
    assert line["status"] == 101
    assert line["websocket"]["messages_in"] == 4 and line["websocket"]["messages_out"] == 4
    assert line["websocket"]["closed_by"] == "client" and line["websocket"]["close_code"] == 1000
    text = generate_latest(REGISTRY).decode()
    assert 'bastion_websocket_messages_total{direction="in",route="/ws/echo"}' in text
    assert "bastion_websockets_open" in text
    assert 'bastion_websocket_refusals_total{reason="websocket-refused",route="/off/*"}' in text


# ---- a property: the Origin rule ----------------------------------------------------------------
def _canon(origin: str) -> str | None:
    from bastion.policies.cors import canonical_origin

    return canonical_origin(origin.lower())


_hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,6}){0,2}(:[0-9]{1,5})?", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https", "ws", "wss", "null", "file", "chrome-extension"]),
    host=_hosts,
    own=_hosts,
    cookie=st.booleans(),
    header_credential=st.booleans(),
)
def test_origin_rule_property(scheme, host, own, cookie, header_credential):
    """Invariant: a handshake that carries cookies and no header credential is let through only
    from its own origin (same host, http(s)/ws(s) matching the request's scheme) or an allowed one."""
    from bastion.config.model import WebSocketConfig
    from bastion.gateway.websocket import origin_allowed
    from bastion.http import Request

    async def _r():
        return {}

    headers = [(b"origin", f"{scheme}://{host}".encode())]
    if cookie:
        headers.append((b"cookie", b"sid=1"))
    if header_credential:
        headers.append((b"authorization", b"Bearer x"))
    req = Request("GET", "/", b"", headers, None, None, False, "http", own, _r)
    cfg = WebSocketConfig(allowed_origins=["https://*.app.example"])
    ok = origin_allowed(req, cfg, False)
    if not cookie or header_credential:
        assert ok
    else:
        canon = _canon(f"{scheme}://{host}")
        same = (
            scheme in ("http", "https")
            and canon is not None
            and canon in (_canon(f"http://{own}"), _canon(f"https://{own}"))
        )
        assert ok == same
