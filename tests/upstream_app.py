"""A real upstream for the tests: it reports exactly what reached it."""

from __future__ import annotations

import asyncio
import hashlib
from urllib.parse import parse_qs

import orjson


async def _body(receive) -> bytes:
    out = b""
    while True:
        msg = await receive()
        out += msg.get("body", b"")
        if not msg.get("more_body"):
            return out


async def _json(send, status, doc, extra=()):
    body = orjson.dumps(doc)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"server", b"upstream-secret/9.9"), (b"x-powered-by", b"PHP/5.1"),
        (b"keep-alive", b"timeout=5"), (b"x-upstream-private", b"hop"),
        (b"connection", b"x-upstream-private"), *extra]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    q = parse_qs(scope.get("query_string", b"").decode())
    if path.startswith("/slow"):
        await asyncio.sleep(float(q.get("s", ["2"])[0]))
        return await _json(send, 200, {"slow": True})
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(int(q.get("n", ["5"])[0])):
            await send({"type": "http.response.body", "body": b"part %d\n" % i, "more_body": True})
            await asyncio.sleep(float(q.get("gap", ["0.3"])[0]))
        await send({"type": "http.response.body", "body": b""})
        return
    if path.endswith("/cors-reflect"):
        origin = dict(scope["headers"]).get(b"origin", b"*")
        return await _json(send, 200, {"ok": True}, [(b"access-control-allow-origin", origin),
                                                     (b"access-control-allow-credentials", b"true")])
    if path == "/cache":
        return await _json(send, 200, {"ok": True}, [(b"cache-control", b"public, max-age=600")])
    body = await _body(receive)
    await _json(send, 200, {
        "method": scope["method"], "path": path,
        "raw_path": (scope.get("raw_path") or b"").decode("latin-1"),
        "query": scope.get("query_string", b"").decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body_len": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
        "peer": list(scope.get("client") or []),
    })
