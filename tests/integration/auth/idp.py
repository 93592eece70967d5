"""A tiny identity provider for the tests: a JWKS endpoint and an introspection endpoint,
counting how often each is called."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import parse_qs

import jwt
from upstream_app import read_body as _body

from tests.unit.auth.keys import EC, RSA

CALLS = {"jwks": 0, "introspect": 0}
STATE = {"jwks_down": False, "extra_keys": []}
CLIENT = ("gateway", "introspection-secret")


def jwks() -> dict:
    keys = []
    for kid, key, alg in (("rsa1", RSA, "RS256"), ("ec1", EC, "ES256"), *STATE["extra_keys"]):
        impl = jwt.algorithms.get_default_algorithms()[alg]
        jwk = impl.to_jwk(key.public_key(), as_dict=True)
        jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        keys.append(jwk)
    return {"keys": keys}


async def _send(send, status, doc):
    body = json.dumps(doc).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/jwks.json":
        CALLS["jwks"] += 1
        if STATE["jwks_down"]:
            return await _send(send, 503, {"error": "down"})
        return await _send(send, 200, jwks())
    if scope["path"] == "/introspect":
        CALLS["introspect"] += 1
        headers = dict(scope["headers"])
        expected = b"Basic " + base64.b64encode(f"{CLIENT[0]}:{CLIENT[1]}".encode())
        if headers.get(b"authorization") != expected:
            return await _send(send, 401, {"error": "invalid_client"})
        form = parse_qs((await _body(receive)).decode())
        token = form.get("token", [""])[0]
        now = int(time.time())
        if token == "opaque-good":
            return await _send(
                send,
                200,
                {"active": True, "sub": "svc-7", "scope": "orders:read", "exp": now + 300, "client_id": "svc"},
            )
        return await _send(send, 200, {"active": False})
    await _send(send, 404, {})
