"""`bastion init`: a starter config from an OpenAPI spec or a GraphQL endpoint, as a user runs it.
Each generated file is refused by the real `bastion check` while a TODO is left, passes once the
TODOs are filled (programmatically here), and the filled file serves: login-like operations get
the login limits, the GraphQL guard has the introspected schema."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from clock import clear_of_window_edge
from helpers import PROCESS_SECONDS, ThreadedUvicorn, raw_request, run_gateway

from bastion.auth.apikeys import hash_key

BASTION = [sys.executable, "-m", "bastion.cli"]
SPECS = Path(__file__).resolve().parents[1] / "specs"
KEY = "bk_test_" + "I" * 43
MARKER = re.compile(r"\$\{(TODO_[A-Z0-9_]+)\}")


def run(*args, cwd=None):
    return subprocess.run([*BASTION, *args], capture_output=True, text=True, timeout=PROCESS_SECONDS, cwd=cwd)


def fill(text: str) -> str:
    """What an operator would put in place of each TODO marker, chosen by what it names."""

    def value(m: re.Match) -> str:
        name = m.group(1)
        if name.endswith("_HASH"):
            return hash_key(KEY)
        if name.endswith("_JWKS_URL"):
            return "https://id.example.com/.well-known/jwks.json"
        if name.endswith("_ISSUER"):
            return "https://id.example.com/"
        if name.endswith("_AUDIENCE"):
            return "shop-api"
        raise AssertionError(f"a TODO the test does not know how to fill: {name}")

    return MARKER.sub(value, text)


def init_and_check(tmp_path: Path, *args: str) -> tuple[Path, str]:
    out = tmp_path / "bastion.yaml"
    r = run("init", *args, "-o", str(out))
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    todos = MARKER.findall(text)
    # every TODO is listed with its line
    for name in todos:
        assert re.search(rf"bastion.yaml:\d+: {name}:", r.stderr), (name, r.stderr)
    assert f"{len(todos)} TODO(s) to fill" in r.stderr
    if todos:  # a TODO left means `bastion check` refuses the file, naming the line
        c = run("check", str(out))
        assert c.returncode == 2 and "TODO_" in c.stderr and "not set" in c.stderr, c.stderr
        out.write_text(fill(text))
    c = run("check", str(out))
    assert c.returncode == 0 and "ok" in c.stderr, c.stderr
    return out, r.stderr


@pytest.mark.parametrize("spec", ["petstore.yaml", "shop/openapi.yaml"])
def test_starter_from_the_test_specs_passes_check_once_filled(tmp_path, spec):
    shutil.copytree(SPECS, tmp_path / "specs")
    out, _ = init_and_check(tmp_path, "--openapi", str(tmp_path / "specs" / spec), "--upstream", "http://127.0.0.1:9")
    doc = yaml.safe_load(out.read_text())
    assert doc["routes"][0]["openapi"] == f"specs/{spec}"  # relative to the config, as the gateway reads it
    spec_doc = yaml.safe_load((tmp_path / "specs" / spec).read_text())
    # a scheme for every securityScheme, same name
    assert set(doc["policies"]["auth"]["schemes"]) == set(spec_doc["components"]["securitySchemes"])
    assert doc["policies"]["cors"]["allow_origins"] == [] and doc["policies"]["cors"]["allow_credentials"] is False
    text = out.read_text()
    if spec == "shop/openapi.yaml":
        assert "PUT    /api/tree  -- security: [] (public on purpose)" in text
    else:
        assert "GET    /v1/health  -- security: [] (public on purpose)" in text


LOGIN_SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "accounts", "version": "1"},
    "servers": [{"url": "https://api.example.com/v1"}],
    "security": [{"key": []}],
    "paths": {
        "/auth/login": {
            "post": {
                "operationId": "logIn",
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "username": {"type": "string", "maxLength": 50},
                                    "password": {"type": "string", "maxLength": 100},
                                },
                            }
                        }
                    },
                },
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/items": {"get": {"operationId": "listItems", "responses": {"200": {"description": "ok"}}}},
        "/open": {"get": {"operationId": "openThing", "security": None, "responses": {"200": {"description": "ok"}}}},
    },
    "components": {
        "securitySchemes": {
            "key": {"type": "apiKey", "in": "header", "name": "X-Key"},
            "sso": {
                "type": "openIdConnect",
                "openIdConnectUrl": "https://id.example.com/.well-known/openid-configuration",
            },
        }
    },
}


def test_login_like_operations_get_login_limits_and_the_filled_config_serves(tmp_path, upstream):
    spec = dict(LOGIN_SPEC)
    spec["paths"] = dict(spec["paths"])
    del spec["paths"]["/open"]
    spec["paths"]["/reports"] = {
        "get": {
            "operationId": "reports",
            "security": [{"sso": ["reports:read"]}],
            "responses": {"200": {"description": "ok"}},
        }
    }
    (tmp_path / "accounts.yaml").write_text(yaml.safe_dump(spec))
    out, stderr = init_and_check(tmp_path, "--openapi", str(tmp_path / "accounts.yaml"), "--upstream", upstream.url)
    doc = yaml.safe_load(out.read_text())
    rl = doc["policies"]["rate_limit"]
    assert rl["login_paths"] == ["/v1/auth/login"] and rl["login_limits"] == ["5/minute"]
    assert "POST   /v1/auth/login  logIn  -- security: [] (public on purpose)" in out.read_text()
    assert "reports:read" in out.read_text() and "openid-configuration" in out.read_text()
    # the filled file, served: the key works, a missing key is refused, the login is limited
    text = out.read_text().replace("port: 8080", "port: 0").replace("port: 9901", "port: 0")
    served = yaml.safe_load(text)  # the limits as written; only the key space is this test's own (the
    served["policies"]["rate_limit"]["key_prefix"] = f"init-{uuid.uuid4().hex}"  # store is process-wide)
    text = yaml.safe_dump(served)
    clear_of_window_edge(60, 20)  # the login limit uses the clock-aligned default (tests/clock.py)
    with run_gateway(text, tmp_path) as g:
        assert raw_request(g.port, "GET", "/v1/items", {"X-Key": KEY}).status == 200
        assert raw_request(g.port, "GET", "/v1/items").status == 401
        assert raw_request(g.port, "GET", "/v1/undocumented", {"X-Key": KEY}).status == 404
        body = json.dumps({"username": "a", "password": "b"}).encode()
        statuses = [
            raw_request(g.port, "POST", "/v1/auth/login", {"Content-Type": "application/json"}, body).status
            for _ in range(6)
        ]
        assert statuses == [200] * 5 + [429], statuses


def test_operations_without_any_security_are_listed_and_noted(tmp_path):
    spec = dict(LOGIN_SPEC)
    del spec["security"]
    spec["paths"] = {k: v for k, v in spec["paths"].items() if k != "/open"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    out, stderr = init_and_check(tmp_path, "--openapi", str(tmp_path / "s.yaml"), "--upstream", "http://127.0.0.1:9")
    assert "GET    /v1/items  listItems  -- no security at all" in out.read_text()
    assert "GET /v1/items has no security requirement" in stderr


@pytest.mark.parametrize(
    "name,login",
    [
        ("/auth/login", True),
        ("userLogin", True),
        ("signIn", True),
        ("/oauth/token", True),
        ("/tokens", True),
        ("/users/{id}/password", True),
        ("resetPassword", True),
        ("/sessions", True),
        ("createOrder", False),
        ("catalogue", False),
        ("authorName", False),
        ("/blogin", False),
        ("/pets", False),
    ],
)
def test_login_like_names(name, login):
    from bastion.init import _login_like

    assert _login_like(name) is login


def test_init_refuses_bad_input_without_a_traceback(tmp_path):
    (tmp_path / "bad.yaml").write_text("openapi: 3.0.3\ninfo: {}\n")
    r = run(
        "init",
        "--openapi",
        str(tmp_path / "bad.yaml"),
        "--upstream",
        "http://127.0.0.1:9",
        "-o",
        str(tmp_path / "b.yaml"),
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and not (tmp_path / "b.yaml").exists()
    r = run("init", "--openapi", str(SPECS / "petstore.yaml"), "--upstream", "ftp://x", "-o", str(tmp_path / "b.yaml"))
    assert r.returncode == 2 and "not an http(s) URL" in r.stderr
    r = run("init", "--openapi", str(SPECS / "petstore.yaml"), "-o", str(tmp_path / "b.yaml"))
    assert r.returncode == 2 and "--upstream" in r.stderr
    (tmp_path / "b.yaml").write_text("mine")
    r = run(
        "init",
        "--openapi",
        str(SPECS / "petstore.yaml"),
        "--upstream",
        "http://127.0.0.1:9",
        "-o",
        str(tmp_path / "b.yaml"),
    )
    assert r.returncode == 2 and (tmp_path / "b.yaml").read_text() == "mine"
    r = run("init", "--graphql", "http://127.0.0.1:1/graphql", "-o", str(tmp_path / "g.yaml"))
    assert r.returncode == 2 and "introspection" in r.stderr and "Traceback" not in r.stderr


SDL = """
type Query { orders(first: Int): [Order!]! me: User }
type Mutation { signIn(email: String!, password: String!): String  placeOrder(item: String!): Order }
type Order { id: ID! item: String lines(first: Int): [Line!]! }
type Line { sku: String }
type User { id: ID! orders: [Order!]! }
"""


async def graphql_upstream(scope, receive, send):
    from graphql import build_schema, graphql
    from upstream_app import read_body

    if scope["type"] != "http":
        return
    doc = json.loads(await read_body(receive))
    r = await graphql(build_schema(SDL), doc["query"], root_value={"me": {"id": "1", "orders": []}})
    body = json.dumps({"data": r.data, **({"errors": [e.message for e in r.errors]} if r.errors else {})}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def test_graphql_starter_introspects_once_and_guards(tmp_path):
    from graphql import build_schema, print_schema

    with ThreadedUvicorn(graphql_upstream) as up:
        out, stderr = init_and_check(tmp_path, "--graphql", f"{up.url}/graphql")
        schema_file = tmp_path / "bastion.schema.graphql"
        assert print_schema(build_schema(schema_file.read_text())) == print_schema(build_schema(SDL))
        doc = yaml.safe_load(out.read_text())
        assert doc["upstreams"]["graphql"]["urls"] == [up.url]
        route = doc["routes"][0]
        assert route["path"] == "/graphql"
        guard = route["policies"]["graphql"]
        assert guard["costs"]["schema_file"] == "bastion.schema.graphql"
        assert guard["costs"]["fields"] == {"Mutation.signIn": 100, "Mutation.placeOrder": 10}
        assert guard["introspection"] is False
        text = out.read_text().replace("port: 8080", "port: 0").replace("port: 9901", "port: 0")
        with run_gateway(text, tmp_path) as g:

            def post(query):
                return raw_request(
                    g.port,
                    "POST",
                    "/graphql",
                    {"Content-Type": "application/json"},
                    json.dumps({"query": query}).encode(),
                )

            assert post("{ me { id } }").status == 200
            assert post("{ __schema { types { name } } }").status == 403  # introspection refused
            # a list field multiplies by its size argument: 1000 orders x 1000 lines is over max_cost
            r = post("{ orders(first: 1000) { lines(first: 1000) { sku } } }")
            assert r.status == 400 and "cost" in r.body.decode().lower()
