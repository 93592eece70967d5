"""The demo upstream: a small users/orders API with an admin area, as plain ASGI.

It is deliberately naive (it trusts whatever reaches it, shows its framework in `Server`,
answers any origin's CORS): the gateway in front of it is what makes it safe.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

import orjson

USERS = {
    "1": {"id": "1", "username": "alice", "email": "alice@example.com", "role": "user"},
    "2": {"id": "2", "username": "bob", "email": "bob@example.com", "role": "user"},
    "3": {"id": "3", "username": "root", "email": "root@example.com", "role": "admin"},
}
ORDERS = {
    "1": [{"id": "o-100", "item": "keyboard", "total": 49.5}],
    "2": [{"id": "o-200", "item": "monitor", "total": 199.0}],
    "3": [],
}


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


async def _send(send, status: int, doc: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps(doc)
    hs = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"server", b"demo-framework/0.1"),
        (b"x-powered-by", b"DemoPython/3.11"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": hs + (headers or [])})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    method, path = scope["method"], scope["path"]
    headers = {k.decode(): v.decode("latin-1") for k, v in scope["headers"]}
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:  # the same API, mounted under /api (the gateway's OpenAPI route)
        parts = parts[1:]
    # A naive upstream: echoes any Origin back (the gateway replaces this).
    cors = [(b"access-control-allow-origin", headers["origin"].encode())] if "origin" in headers else []
    if parts == ["graphql"]:
        from bastion.demo.graphql_api import handle

        status, body = await handle(scope, await _read_body(receive), USERS, ORDERS)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    if parts == ["health"]:
        return await _send(send, 200, {"status": "ok"})
    if parts == ["echo"]:
        body = await _read_body(receive)
        return await _send(
            send,
            200,
            {
                "method": method,
                "path": path,
                "raw_path": scope.get("raw_path", b"").decode("latin-1"),
                "query": scope.get("query_string", b"").decode("latin-1"),
                "headers": headers,
                "body_bytes": len(body),
            },
            cors,
        )
    if parts == ["slow"]:
        q = parse_qs(scope.get("query_string", b"").decode())
        await asyncio.sleep(float(q.get("seconds", ["2"])[0]))
        return await _send(send, 200, {"slept": True})
    if parts == ["stream"]:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(5):
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b""})
        return
    if parts == ["users"] and method == "GET":
        return await _send(send, 200, list(USERS.values()), cors)
    if len(parts) == 2 and parts[0] == "users" and method == "GET":
        user = USERS.get(parts[1])
        return await _send(send, 200 if user else 404, user or {"error": "no such user"}, cors)
    if len(parts) == 3 and parts[0] == "users" and parts[2] == "orders":
        if method == "POST":
            body = await _read_body(receive)
            try:
                order = orjson.loads(body)
            except orjson.JSONDecodeError:
                return await _send(send, 400, {"error": "invalid JSON"})
            return await _send(send, 201, {"id": "o-new", **order}, cors)
        return await _send(send, 200, ORDERS.get(parts[1], []), cors)
    if parts[:1] == ["admin"]:
        return await _send(send, 200, {"admin": True, "secret_settings": {"debug": True}})
    return await _send(send, 404, {"error": "not found", "path": path})
