"""OpenAPI routes inside a Starlette app (middleware mode): the same checks, no proxy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import ThreadedUvicorn, raw_request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion.middleware import BastionMiddleware

SPECS = Path(__file__).resolve().parents[2] / "specs"
SECRET = "s" * 40


async def orders(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"received": json.loads(body), "length": request.headers.get("content-length")})


async def tree(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@pytest.fixture(scope="module")
def server():
    app = Starlette(
        routes=[
            Route("/api/orders", orders, methods=["POST"]),
            Route("/api/tree", tree, methods=["PUT"]),
            Route("/other", tree),
        ]
    )
    app.add_middleware(
        BastionMiddleware,
        config={
            "policies": {
                "auth": {
                    "schemes": {
                        "oauth": {
                            "type": "jwt",
                            "issuers": [
                                {"issuer": "https://issuer.test", "algorithms": ["HS256"], "keys": [{"secret": SECRET}]}
                            ],
                        }
                    }
                }
            },
            "routes": [{"openapi": str(SPECS / "shop" / "openapi.yaml")}],
        },
    )
    with ThreadedUvicorn(app) as s:
        yield s


def test_validation_and_inventory_in_middleware_mode(server):
    import time

    import jwt

    now = int(time.time())
    tok = jwt.encode(
        {"iss": "https://issuer.test", "sub": "a", "iat": now, "exp": now + 60, "scope": "orders:write"},
        SECRET,
        algorithm="HS256",
    )
    h = {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}
    order = {
        "item": "  book ",
        "email": "A@B.CO",
        "total": {"amount": 1, "currency": "EUR"},
        "payment": {"kind": "transfer", "iban": "DE00"},
    }
    r = raw_request(server.port, "POST", "/api/orders", h, json.dumps(order).encode())
    assert r.status == 200, r.body
    got = r.json()
    assert got["received"]["item"] == "book" and got["received"]["email"] == "a@b.co"
    assert got["length"] == str(len(json.dumps(got["received"], separators=(",", ":")).encode()))
    bad = {**order, "is_admin": True}
    assert raw_request(server.port, "POST", "/api/orders", h, json.dumps(bad).encode()).status == 422
    assert raw_request(server.port, "PUT", "/api/tree", {"Content-Type": "application/json"}, b'{"x": 1}').status == 422
    # undocumented: anonymous callers learn nothing (401); authenticated ones get 404
    assert raw_request(server.port, "GET", "/api/hidden").status == 401
    r = raw_request(server.port, "GET", "/api/hidden", {"Authorization": f"Bearer {tok}"})
    assert r.status == 404 and r.json()["type"].endswith("/undocumented-endpoint")
    # outside the spec's base path the app routes as before, under the default policies
    assert raw_request(server.port, "GET", "/other", {"Authorization": f"Bearer {tok}"}).status == 200
