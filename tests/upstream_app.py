"""A real upstream for the tests: it reports exactly what reached it."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from urllib.parse import parse_qs

import orjson

MIRRORED: list[bytes] = []
SLOW_IN_FLIGHT = [0]  # /slow requests being served now: tests wait on it instead of sleeping
SLOW_STARTED = [0]  # /slow requests ever started (only grows: "n more reached the upstream")
STREAM_GATE = threading.Event()  # /stream-gated sends its last part once a test sets this


async def read_body(receive) -> bytes:
    """The whole request body of an ASGI request (shared by the test apps)."""
    out = b""
    while True:
        msg = await receive()
        out += msg.get("body", b"")
        if not msg.get("more_body"):
            return out


async def _json(send, status, doc, extra=()):
    body = orjson.dumps(doc)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"server", b"upstream-secret/9.9"),
                (b"x-powered-by", b"PHP/5.1"),
                (b"x-runtime", b"0.004"),
                (b"x-debug-token-link", b"http://10.0.0.7/_profiler/abc"),
                (b"x-backend-server", b"app-3.internal"),
                (b"keep-alive", b"timeout=5"),
                (b"x-upstream-private", b"hop"),
                (b"connection", b"x-upstream-private"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    q = parse_qs(scope.get("query_string", b"").decode())
    if path.startswith("/slow"):
        SLOW_IN_FLIGHT[0] += 1
        SLOW_STARTED[0] += 1
        try:
            await asyncio.sleep(float(q.get("s", ["2"])[0]))  # the slowness is what the caller asked for
        finally:
            SLOW_IN_FLIGHT[0] -= 1
        return await _json(send, 200, {"slow": True})
    if path == "/stream-gated":  # "part 0", then "part 1" once STREAM_GATE is set (60 s at most)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"part 0\n", "more_body": True})
        for _ in range(6000):
            if STREAM_GATE.is_set():
                break
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"part 1\n"})
        return
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(int(q.get("n", ["5"])[0])):
            await send({"type": "http.response.body", "body": b"part %d\n" % i, "more_body": True})
            await asyncio.sleep(float(q.get("gap", ["0.3"])[0]))
        await send({"type": "http.response.body", "body": b""})
        return
    if path.endswith("/cors-reflect"):
        origin = dict(scope["headers"]).get(b"origin", b"*")
        return await _json(
            send,
            200,
            {"ok": True},
            [(b"access-control-allow-origin", origin), (b"access-control-allow-credentials", b"true")],
        )
    if path == "/sensitive":
        return await _json(
            send,
            200,
            {
                "id": 1,
                "name": "alice",
                "Password": "hunter2",
                "password_hash": "$argon2id$...",
                "profile": {
                    "ssn": "078-05-1120",
                    "bio": "card 4111 1111 1111 1111 here",
                    "orders": [
                        {
                            "id": 7,
                            "api_key": "sk_live_x",
                            "note": "ok",
                            "deep": [
                                {
                                    "secret_key": "s",
                                    "token_hint": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2ln",
                                }
                            ],
                        }
                    ],
                },
                "not_a_card": "1234 5678 9012 3456",
                "tags": ["public", "-----BEGIN RSA PRIVATE KEY-----abc"],
            },
        )
    if path.endswith("/crash"):
        body = b"Traceback (most recent call last):\n  File \"/srv/app.py\", line 3\npsycopg2.errors.SyntaxError: SELECT * FROM users WHERE id='1''"
        await send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [(b"content-type", b"text/html"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/big-json":
        return await _json(send, 200, {"password": "p", "filler": "x" * 300_000})
    if path == "/cache":
        return await _json(send, 200, {"ok": True}, [(b"cache-control", b"public, max-age=600")])
    body = await read_body(receive)
    if path.endswith("/mirror"):  # answers with exactly the JSON it received
        MIRRORED.append(body)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    await _json(
        send,
        200,
        {
            "method": scope["method"],
            "path": path,
            "raw_path": (scope.get("raw_path") or b"").decode("latin-1"),
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "peer": list(scope.get("client") or []),
        },
    )
