"""One lifecycle (issue 19): the same table of requests through `bastion serve` in front of an
app and through the ASGI middleware wrapping the same app must get the same answers — status,
problem type, the headers the policies set, and the (filtered) body."""

from __future__ import annotations

import json
import uuid

import pytest
from helpers import ThreadedUvicorn, raw_request, run_gateway

from bastion.auth.apikeys import hash_key
from bastion.middleware import BastionMiddleware

KEY = "bk_test_" + "Q" * 43


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/data":
        body = json.dumps({"items": [{"id": i, "password": "hunter2", "name": f"n{i}"} for i in range(3)]}).encode()
        ctype = b"application/json"
    elif scope["path"] == "/boom":
        body, ctype = b"Traceback (most recent call last):\n  File app.py", b"text/plain"
        await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", ctype)]})
        await send({"type": "http.response.body", "body": body})
        return
    else:
        body, ctype = b"ok", b"text/plain"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def config(upstream_url: str | None) -> dict:
    route = {"upstream": "up"} if upstream_url else {}
    limited = f"limited-{uuid.uuid4().hex}"  # each deployment its own counter (memory stores are per process)
    cfg = {
        "policies": {
            "audit": {"enabled": False},
            "cors": {"allow_origins": ["https://app.example.com"]},
            "response_filter": {},
            "error_masking": {},
            "body_limit": {"max_bytes": 1000},
        },
        "routes": [
            {"path": "/admin/*", **route, "policies": {"ip_rules": {"allow": ["10.0.0.0/8"]}}},
            {
                "path": "/orders/*",
                **route,
                "policies": {
                    "auth": {
                        "scopes": ["read"],
                        "schemes": {
                            "key": {
                                "type": "api_key",
                                "keys": [{"id": "k1", "hash": hash_key(KEY), "owner": "acme", "scopes": ["read"]}],
                            }
                        },
                    }
                },
            },
            {
                "path": "/limited",
                "name": limited,
                **route,
                "policies": {
                    "rate_limit": {
                        "algorithm": "sliding_log",  # exact, whatever the clock
                        "limits": [{"rate": "2/minute", "key": ["route"]}],
                    }
                },
            },
            {"path": "/*", **route},
        ],
    }
    if upstream_url:
        cfg["upstreams"] = {"up": {"urls": [upstream_url]}}
    return cfg


CASES = [
    ("GET", "/hello", {}, None),
    ("GET", "/data", {}, None),
    ("GET", "/boom", {}, None),
    ("GET", "/admin/x", {}, None),
    ("GET", "/Admin/x", {}, None),
    ("GET", "/public/..;/admin/x", {}, None),
    ("GET", "/admin%3bx", {}, None),
    ("GET", "/orders/1", {}, None),
    ("GET", "/orders/1", {"X-API-Key": KEY}, None),
    ("GET", "/orders/1", {"X-API-Key": "bk_test_wrong"}, None),
    ("GET", "/hello", {"X-Original-URL": "/admin/x"}, None),
    ("OPTIONS", "/hello", {"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"}, None),
    ("GET", "/hello", {"Origin": "https://app.example.com.evil.com"}, None),
    ("POST", "/hello", {"Content-Type": "application/json"}, b"x" * 2000),
    ("GET", "/limited", {}, None),
    ("GET", "/limited", {}, None),
    ("GET", "/limited", {}, None),
]
COMPARED_HEADERS = (
    "content-type",
    "access-control-allow-origin",
    "vary",
    "x-content-type-options",
    "www-authenticate",
    "allow",
    "retry-after",
)


def answer(port: int, case) -> tuple:
    method, target, headers, body = case
    r = raw_request(port, method, target, headers, body=body)
    problem = r.json().get("type") if r.header("content-type") == "application/problem+json" else None
    shown = {h: r.header(h) for h in COMPARED_HEADERS}
    payload = r.body if problem is None else None
    return r.status, problem, shown, payload


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("equivalence")
    with ThreadedUvicorn(app) as upstream, ThreadedUvicorn(BastionMiddleware(app, config(None))) as mw:
        with run_gateway(config(upstream.url), tmp) as gw:
            yield gw.port, mw.port


def test_the_proxy_and_the_middleware_answer_alike(both):
    gw, mw = both
    differences = []
    for case in CASES:
        a, b = answer(gw, case), answer(mw, case)
        if a != b:
            differences.append((case[:2], a, b))
    assert not differences, differences


def test_the_table_exercises_the_policies(tmp_path):
    """Run once more against a fresh proxy: the answers are the ones the policies give, so the
    comparison above compared refusals, filtering and limits, not only 200s."""
    with ThreadedUvicorn(app) as upstream, run_gateway(config(upstream.url), tmp_path) as gw:
        got = [answer(gw.port, case) for case in CASES]
    assert [g[0] for g in got] == [200, 200, 500, 403, 403, 403, 400, 401, 200, 401, 200, 204, 200, 413, 200, 200, 429]
    assert b"password" not in got[1][3] and b"n2" in got[1][3]
