"""The upstream behind the OpenAPI tests: it echoes what reached it, and answers a pet with
properties its schema does not declare (for the response checks)."""

from __future__ import annotations

import orjson
from upstream_app import read_body


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    body = await read_body(receive)
    if scope["method"] == "GET" and path.startswith("/v1/pets/") and path.rsplit("/", 1)[-1].isdigit():
        doc = {
            "id": int(path.rsplit("/", 1)[-1]),
            "name": "rex",
            "tag": None,
            "secret_note": "only-for-the-owner",
            "internal_cost": 12.5,
        }
        if path.endswith("/666"):
            doc = {"id": "not-a-number", "name": "rex"}
    else:
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = body.decode("latin-1")
        doc = {
            "method": scope["method"],
            "path": path,
            "query": scope["query_string"].decode("latin-1"),
            "body": parsed,
            "headers": {k.decode(): v.decode("latin-1") for k, v in scope["headers"]},
        }
    out = orjson.dumps(doc)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": out})
