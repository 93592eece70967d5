"""The ASGI middleware protects the wrapped app's `websocket` scopes the same way: the handshake
through the route's policies, then the same guarded relay (limits, hooks, GraphQL checks)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import jwt
import pytest
from helpers import ThreadedUvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bastion.middleware import BastionMiddleware

from .test_websocket_graphql import graphql_ws

SECRET = "m" * 40
ISS = "https://issuer.mw.test"
APP_SAW: list[dict[str, str]] = []


async def echo(ws: WebSocket) -> None:
    APP_SAW.append({k.decode(): v.decode() for k, v in ws.scope["headers"]})
    APP_SAW[-1]["path"] = ws.scope["path"]
    await ws.accept()
    try:
        while True:
            await ws.send_text(await ws.receive_text())
    except WebSocketDisconnect:
        return


async def deny(ws: WebSocket) -> None:
    await ws.send_denial_response(PlainTextResponse("not for you", status_code=418))


async def boom(ws: WebSocket) -> None:
    raise RuntimeError("the app failed")


async def bye(ws: WebSocket) -> None:
    await ws.accept()
    await ws.receive_text()
    await ws.close(4100, "app says bye")


def token(sub: str = "mw-user") -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISS, "sub": sub, "iat": now, "exp": now + 300}, SECRET, algorithm="HS256")


AUTH = {
    "schemes": {
        "bearer": {"type": "jwt", "issuers": [{"issuer": ISS, "algorithms": ["HS256"], "keys": [{"secret": SECRET}]}]}
    }
}


@pytest.fixture(scope="module")
def app_server():
    inner = Starlette(
        routes=[
            WebSocketRoute("/ws/echo", echo),
            WebSocketRoute("/graphql", graphql_ws),
            WebSocketRoute("/app/deny", deny),
            WebSocketRoute("/app/boom", boom),
            WebSocketRoute("/app/bye", bye),
        ]
    )
    app = BastionMiddleware(
        inner,
        {
            "routes": [
                {"path": "/ws/*", "policies": {"auth": AUTH}, "websocket": {"max_message_bytes": 100}},
                {"path": "/graphql", "policies": {"graphql": {"mode": "enforce", "limits": {"max_depth": 2}}}},
                {"path": "/off", "websocket": False},
            ]
        },
    )
    with ThreadedUvicorn(app) as server:
        yield server


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_middleware_handshake_runs_the_route_policies(app_server):
    base = f"ws://127.0.0.1:{app_server.port}"

    async def go():
        n = len(APP_SAW)
        with pytest.raises(InvalidStatus) as info:
            async with connect(base + "/ws/echo"):
                pass
        assert info.value.response.status_code == 401
        assert len(APP_SAW) == n  # the app never saw the refused handshake
        async with connect(
            base + "/ws/%65cho/../echo", additional_headers={"Authorization": f"Bearer {token()}"}
        ) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            await ws.send("x" * 500)  # over the route's max_message_bytes
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        seen = APP_SAW[-1]
        assert seen["x-bastion-subject"] == "mw-user"
        assert seen["path"] == "/ws/echo"  # the normalised path, as checked

    run(go())


def test_middleware_graphql_guard_per_subscription(app_server):
    base = f"ws://127.0.0.1:{app_server.port}"

    async def go():
        async with connect(base + "/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            deep = {"query": "subscription { tick { next { next { n } } } }"}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": deep}))
            err = json.loads(await ws.recv())
            assert err["id"] == "1" and err["type"] == "error"
            await ws.send(
                json.dumps({"id": "2", "type": "subscribe", "payload": {"query": "subscription { count(to: 2) }"}})
            )
            got = [json.loads(await ws.recv()) for _ in range(3)]
            assert [m["type"] for m in got] == ["next", "next", "complete"]

    run(go())


def test_middleware_websocket_false(app_server):
    async def go():
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{app_server.port}/off"):
                pass
        assert info.value.response.status_code == 403

    run(go())


def test_middleware_app_refusals_failures_and_closes(app_server, caplog):
    base = f"ws://127.0.0.1:{app_server.port}"

    async def go():
        with pytest.raises(InvalidStatus) as info:  # the app's own denial response, passed on
            async with connect(base + "/app/deny"):
                pass
        assert info.value.response.status_code == 418 and info.value.response.body == b"not for you"
        with pytest.raises(InvalidStatus) as info:  # a failing app: refused, never a traceback
            async with connect(base + "/app/boom"):
                pass
        assert info.value.response.status_code == 403
        assert b"Traceback" not in (info.value.response.body or b"")
        async with connect(base + "/app/bye") as ws:  # unrouted: the default policies, then the app
            await ws.send("hi")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4100, "app says bye")

    caplog.set_level(logging.ERROR, logger="bastion.websocket")
    run(go())
    assert "the application failed on a websocket" in caplog.text
