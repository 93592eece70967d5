"""The same policies as ASGI middleware, inside a real FastAPI app served by uvicorn."""

from __future__ import annotations

import json
import uuid

import pytest
from clock import clear_of_window_edge
from helpers import ThreadedUvicorn, raw_request

KEY = {"X-API-Key": "bk_test_example_key_only_for_the_fastapi_example_000000"}


@pytest.fixture(scope="module")
def app_server():
    from examples.fastapi_app import app

    with ThreadedUvicorn(app) as server:
        yield server


def test_unrouted_paths_get_the_global_policies(app_server):
    r = raw_request(app_server.port, "GET", "/public/hello")
    assert r.status == 200 and r.json() == {"hello": "world"}
    assert r.header("x-request-id") and r.header("x-content-type-options") == "nosniff"


def test_auth_scopes_and_object_rules(app_server):
    assert raw_request(app_server.port, "GET", "/users/alice/orders").status == 401
    r = raw_request(app_server.port, "GET", "/users/alice/orders", KEY)
    assert r.status == 200 and r.json()["seen_subject"] == "alice"
    assert raw_request(app_server.port, "GET", "/users/bob/orders", KEY).status == 404
    spoofed = raw_request(app_server.port, "GET", "/users/alice/orders", {**KEY, "X-Bastion-Subject": "root"})
    assert spoofed.json()["seen_subject"] == "alice"


def test_the_app_sees_the_normalised_path(app_server):
    r = raw_request(app_server.port, "GET", "/users/x/../bob/orders", KEY)
    assert r.status == 404  # checked as /users/bob/orders, not as what the client wrote
    assert raw_request(app_server.port, "GET", "/%75sers/alice/orders", KEY).status == 200


def test_response_filter_and_cors_in_middleware_mode(app_server):
    r = raw_request(app_server.port, "GET", "/users/alice/orders", {**KEY, "Origin": "https://app.example.com"})
    assert "password_hash" not in r.body.decode()
    assert r.header("access-control-allow-origin") == "https://app.example.com"
    assert int(r.header("content-length")) == len(r.body)


def test_rate_limits_and_graphql_guard(app_server):
    h = {"X-Client": uuid.uuid4().hex}
    clear_of_window_edge(60, 15)  # the example's 5/minute uses the clock-aligned default (tests/clock.py)
    statuses = [raw_request(app_server.port, "GET", "/public/hello", h).status for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    deep = {"query": "{ a { b { c { d { e } } } } }"}
    g = {"Content-Type": "application/json", "X-Client": uuid.uuid4().hex}  # its own rate-limit bucket
    r = raw_request(app_server.port, "POST", "/graphql", g, json.dumps(deep).encode())
    assert r.status == 400 and r.json()["errors"][0]["extensions"]["code"] == "QUERY_LIMIT_EXCEEDED"
    ok = raw_request(app_server.port, "POST", "/graphql", g, json.dumps({"query": "{ hello }"}).encode())
    assert ok.status == 200 and ok.json()["received"] == {"query": "{ hello }"}  # the body was replayed


def test_an_exception_in_the_app_becomes_problem_json(app_server):
    r = raw_request(app_server.port, "GET", "/boom", {"X-Request-Id": "mw-boom", "X-Client": uuid.uuid4().hex})
    assert r.status == 500 and r.header("content-type") == "application/problem+json"
    assert r.json()["request_id"] == "mw-boom" and b"secrets" not in r.body
