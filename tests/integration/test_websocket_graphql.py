"""GraphQL subscriptions through the gateway: a real graphql-core server speaking
graphql-transport-ws and the legacy graphql-ws, driven by the `websockets` client. The guard
and the WAF check every `subscribe`/`start`; a refused operation gets the protocol's `error` for
its id while the socket stays open; the credential may travel in `connection_init`."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from graphql import (
    GraphQLArgument,
    GraphQLField,
    GraphQLInt,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLString,
    parse,
    subscribe,
)
from helpers import ThreadedUvicorn, audit_lines, run_gateway
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

SECRET = "g" * 40
ISS = "https://issuer.gql.test"

# ---- the subscription server (graphql-core `subscribe`) -------------------------------------------
Tick: GraphQLObjectType = GraphQLObjectType(
    "Tick", lambda: {"n": GraphQLField(GraphQLInt), "next": GraphQLField(Tick, resolve=lambda t, _i: t)}
)


async def _count(_root: Any, _info: Any, to: int) -> AsyncIterator[int]:
    for i in range(1, to + 1):
        yield i
        await asyncio.sleep(0.01)


async def _ticks(_root: Any, _info: Any, to: int = 3) -> AsyncIterator[dict]:
    for i in range(1, to + 1):
        yield {"n": i}
        await asyncio.sleep(0.01)


async def _echo(_root: Any, _info: Any, text: str) -> AsyncIterator[str]:
    yield text


SCHEMA = GraphQLSchema(
    query=GraphQLObjectType("Query", {"hello": GraphQLField(GraphQLString, resolve=lambda *_: "world")}),
    subscription=GraphQLObjectType(
        "Subscription",
        {
            "count": GraphQLField(
                GraphQLInt,
                args={"to": GraphQLArgument(GraphQLNonNull(GraphQLInt))},
                subscribe=_count,
                resolve=lambda v, _i, **_: v,
            ),
            "tick": GraphQLField(
                Tick, args={"to": GraphQLArgument(GraphQLInt)}, subscribe=_ticks, resolve=lambda v, _i, **_: v
            ),
            "echo": GraphQLField(
                GraphQLString,
                args={"text": GraphQLArgument(GraphQLNonNull(GraphQLString))},
                subscribe=_echo,
                resolve=lambda v, _i, **_: v,
            ),
        },
    ),
)
UPSTREAM_SUBSCRIBES: list[str] = []  # the operations the upstream received
UPSTREAM_CONNECTIONS: list[str] = []  # the sockets it was asked to open (their paths)


async def graphql_ws(ws: WebSocket) -> None:
    """graphql-transport-ws (and the legacy graphql-ws: start/data/stop) over graphql-core."""
    UPSTREAM_CONNECTIONS.append(ws.scope["path"])
    offered = ws.scope.get("subprotocols") or []
    proto = next((p for p in offered if p in ("graphql-transport-ws", "graphql-ws")), None)
    if proto is None:
        await ws.close(4406)
        return
    await ws.accept(subprotocol=proto)
    legacy = proto == "graphql-ws"
    headers = {k.decode(): v.decode() for k, v in ws.scope["headers"]}
    running: dict[str, asyncio.Task] = {}

    async def run(id_: str, payload: dict) -> None:
        UPSTREAM_SUBSCRIBES.append(payload.get("query", ""))
        result: Any = subscribe(SCHEMA, parse(payload["query"]), variable_values=payload.get("variables"))
        if inspect.isawaitable(result):  # graphql-core 3.2 returns an awaitable, 3.3 the iterator
            result = await result
        if not hasattr(result, "__aiter__"):
            await ws.send_json({"id": id_, "type": "error", "payload": [{"message": str(result.errors)}]})
            return
        async for item in result:
            await ws.send_json({"id": id_, "type": "data" if legacy else "next", "payload": item.formatted})
        await ws.send_json({"id": id_, "type": "complete"})

    try:
        while True:
            msg = await ws.receive_json()
            kind = msg.get("type")
            if kind == "connection_init":
                ack = {"subject": headers.get("x-bastion-subject"), "request_id": headers.get("x-request-id")}
                await ws.send_json({"type": "connection_ack", "payload": ack})
            elif kind == "ping":
                await ws.send_json({"type": "pong"})
            elif kind in ("subscribe", "start"):
                running[msg["id"]] = asyncio.create_task(run(msg["id"], msg["payload"]))
            elif kind in ("complete", "stop"):
                task = running.pop(msg["id"], None)
                if task:
                    task.cancel()
            elif kind == "connection_terminate":
                await ws.close(1000)
                return
    except WebSocketDisconnect:
        pass
    finally:
        for task in running.values():
            task.cancel()


graphql_app = Starlette(routes=[WebSocketRoute("/graphql", graphql_ws), WebSocketRoute("/{p:path}", graphql_ws)])


def token(sub: str = "gql-user", ttl: float = 300) -> str:
    now = time.time()
    return jwt.encode({"iss": ISS, "sub": sub, "iat": int(now), "exp": int(now + ttl)}, SECRET, algorithm="HS256")


AUTH = {
    "schemes": {
        "bearer": {"type": "jwt", "issuers": [{"issuer": ISS, "algorithms": ["HS256"], "keys": [{"secret": SECRET}]}]}
    }
}
GUARD = {"mode": "enforce", "limits": {"max_depth": 3}, "introspection": False}


def gateway_config(upstream_url: str, audit: str) -> dict:
    return {
        "upstreams": {"gql": {"urls": [upstream_url], "timeouts": {"connect": 10, "read": 30, "total": 60}}},
        "policies": {"audit": {"output": audit}},
        "routes": [
            {"path": "/graphql", "upstream": "gql", "policies": {"auth": AUTH, "graphql": GUARD, "waf": {}}},
            {"path": "/open/graphql", "upstream": "gql", "policies": {"graphql": GUARD}},
            {
                "path": "/slow/graphql",
                "upstream": "gql",
                "policies": {"auth": AUTH},
                "websocket": {"connection_init_timeout": 0.5},
            },
        ],
    }


@pytest.fixture(scope="module")
def gql_upstream():
    with ThreadedUvicorn(graphql_app) as server:
        yield server


@pytest.fixture(scope="module")
def gw(gql_upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gqlws")
    with run_gateway(gateway_config(gql_upstream.url, str(tmp / "audit.log")), tmp) as g:
        g.audit = tmp / "audit.log"  # type: ignore[attr-defined]
        yield g


def url(gw, path: str = "/graphql") -> str:
    return f"ws://127.0.0.1:{gw.port}{path}"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def recv_json(ws: Any) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def collect(ws: Any, id_: str) -> list[dict]:
    """Messages for one operation id until its complete or error."""
    out = []
    while True:
        msg = await recv_json(ws)
        if msg.get("id") != id_:
            continue
        out.append(msg)
        if msg["type"] in ("complete", "error"):
            return out


DEEP = "subscription { tick { next { next { next { next { n } } } } } }"


def test_subscription_with_token_in_connection_init_and_deep_one_refused_socket_open(gw):
    async def go():
        async with connect(url(gw), subprotocols=["graphql-transport-ws"]) as ws:
            assert ws.subprotocol == "graphql-transport-ws"
            await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token()}"}}))
            ack = await recv_json(ws)
            assert ack["type"] == "connection_ack"
            assert ack["payload"]["subject"] == "gql-user"  # the upstream got the principal
            q = {"query": "subscription ($n: Int!) { count(to: $n) }", "variables": {"n": 3}}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": q}))
            msgs = await collect(ws, "1")
            assert [m["payload"]["data"]["count"] for m in msgs if m["type"] == "next"] == [1, 2, 3]
            before = len(UPSTREAM_SUBSCRIBES)
            await ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": {"query": DEEP}}))
            err = await collect(ws, "2")
            assert err[-1]["type"] == "error" and isinstance(err[-1]["payload"], list)
            assert err[-1]["payload"][0]["extensions"]["code"] == "QUERY_LIMIT_EXCEEDED"
            assert len(UPSTREAM_SUBSCRIBES) == before  # never reached the upstream
            # the socket stays open: another operation works
            await ws.send(
                json.dumps({"id": "3", "type": "subscribe", "payload": {"query": "subscription { tick(to: 2) { n } }"}})
            )
            msgs = await collect(ws, "3")
            assert [m["payload"]["data"]["tick"]["n"] for m in msgs if m["type"] == "next"] == [1, 2]

    run(go())


def test_missing_or_bad_credential_in_connection_init_closes_4401(gw):
    async def go(payload: dict) -> tuple[int | None, str]:
        async with connect(url(gw), subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            except ConnectionClosed as exc:
                return (exc.rcvd.code if exc.rcvd else None), (exc.rcvd.reason if exc.rcvd else "")

    before = len(UPSTREAM_CONNECTIONS)
    code, _ = run(go({}))
    assert code == 4401
    code, _ = run(go({"Authorization": "Bearer not-a-token"}))
    assert code == 4401
    assert len(UPSTREAM_CONNECTIONS) == before  # refused before the upstream was contacted


def test_token_in_subprotocol_for_graphql_clients(gw):
    async def go():
        async with connect(url(gw), subprotocols=["graphql-transport-ws", f"bearer.{token('sp-user')}"]) as ws:
            assert ws.subprotocol == "graphql-transport-ws"
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            ack = await recv_json(ws)
            return ack["payload"]["subject"]

    assert run(go()) == "sp-user"


def test_waf_refuses_injection_in_subscription_arguments_socket_open(gw):
    async def go():
        async with connect(url(gw), subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"authToken": token()}}))
            assert (await recv_json(ws))["type"] == "connection_ack"
            bad = {
                "query": "subscription ($t: String!) { echo(text: $t) }",
                "variables": {"t": "1' UNION SELECT password FROM users--"},
            }
            await ws.send(json.dumps({"id": "a", "type": "subscribe", "payload": bad}))
            err = await collect(ws, "a")
            assert err[-1]["type"] == "error"
            assert err[-1]["payload"][0]["extensions"]["code"] == "waf-blocked"
            ok = {"query": "subscription ($t: String!) { echo(text: $t) }", "variables": {"t": "hello there"}}
            await ws.send(json.dumps({"id": "b", "type": "subscribe", "payload": ok}))
            msgs = await collect(ws, "b")
            assert msgs[0]["payload"]["data"]["echo"] == "hello there"
            # the same attack written inline in the query, with an escape the server decodes
            inline = {"query": 'subscription { echo(text: "1\\u0027 UNION SELECT password FROM users--") }'}
            await ws.send(json.dumps({"id": "c", "type": "subscribe", "payload": inline}))
            err = await collect(ws, "c")
            assert err[-1]["type"] == "error"

    run(go())


def test_legacy_graphql_ws_protocol(gw):
    async def go():
        async with connect(url(gw, "/open/graphql"), subprotocols=["graphql-ws"]) as ws:
            assert ws.subprotocol == "graphql-ws"
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert (await recv_json(ws))["type"] == "connection_ack"
            await ws.send(json.dumps({"id": "1", "type": "start", "payload": {"query": DEEP}}))
            err = await collect(ws, "1")
            assert err[-1]["type"] == "error" and isinstance(err[-1]["payload"], dict)  # legacy: one error
            await ws.send(
                json.dumps({"id": "2", "type": "start", "payload": {"query": "subscription { count(to: 2) }"}})
            )
            msgs = await collect(ws, "2")
            assert [m["payload"]["data"]["count"] for m in msgs if m["type"] == "data"] == [1, 2]

    run(go())


def test_introspection_refused_and_one_audit_line_with_counts(gw):
    async def go():
        async with connect(url(gw, "/open/graphql"), subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init"}))
            rid = (await recv_json(ws))["payload"]["request_id"]
            q = {"query": "subscription { __schema { types { name } } }"}
            await ws.send(json.dumps({"id": "i", "type": "subscribe", "payload": q}))
            refused = await collect(ws, "i")
            await ws.send(
                json.dumps({"id": "j", "type": "subscribe", "payload": {"query": "subscription { count(to: 1) }"}})
            )
            ok = await collect(ws, "j")
        return rid, refused, ok

    rid, refused, ok = run(go())
    assert refused[-1]["type"] == "error"
    assert ok[-1]["type"] == "complete"
    lines = [x for x in audit_lines(gw.audit, rid) if x["request_id"] == rid]
    assert len(lines) == 1 and lines[0]["status"] == 101
    ws = lines[0]["websocket"]
    assert ws["subprotocol"] == "graphql-transport-ws"
    assert ws["refused_operations"] == 1
    assert ws["messages_in"] == 3  # connection_init and two subscribes (the close is not a message)


def test_no_connection_init_in_time_closes_4408_without_the_upstream(gw):
    async def go():
        before = len(UPSTREAM_CONNECTIONS)
        async with connect(url(gw, "/slow/graphql"), subprotocols=["graphql-transport-ws"]) as ws:
            try:
                await asyncio.wait_for(ws.recv(), 5)
            except ConnectionClosed as exc:
                assert exc.rcvd is not None
                assert len(UPSTREAM_CONNECTIONS) == before
                return exc.rcvd.code
        return None

    assert run(go()) == 4408
