"""The differential checks against their controls: apps that misbehave on odd input without any
SQL (every quote gives 500, ints parsed strictly), that search by tokens (an `OR` in the input
matches more), or that are parameterised, must give no SQL injection finding; an injectable app
that swallows every error must still be found (boolean differential alone). Plus the credential
classifier as a property, and the one --output naming rule."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ThreadedUvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.scanner.checks.api3 import plaintext_credential
from bastion.scanner.reporters import infer_format, output_paths
from bastion.scanner.runner import ScanOptions, run_sync

NAMES = ["kettle", "toaster", "lamp", "desk", "chair", "mug", "teapot", "rug"]
SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "t", "version": "1"},
    "paths": {
        "/items": {
            "get": {
                "parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/items/{item_id}": {
            "get": {
                "parameters": [{"name": "item_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "ok"}},
            }
        },
    },
}


def make(kind: str) -> Starlette:
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    db.executemany("INSERT INTO items (name) VALUES (?)", [(n,) for n in NAMES])

    def search(q: str) -> list:
        if kind == "quote500":
            if "'" in q or '"' in q:
                raise RuntimeError("odd input")
            return [n for n in NAMES if q in n]
        if kind == "tokens":  # any word of the query, OR semantics
            words = [w for w in q.replace("'", " ").split() if w]
            return [n for n in NAMES if any(w.lower() in n for w in words)]
        if kind == "param":
            return [r[0] for r in db.execute("SELECT name FROM items WHERE name LIKE ?", (f"%{q}%",))]
        try:  # "masked": injectable, every error swallowed into an empty answer
            return [r[0] for r in db.execute(f"SELECT name FROM items WHERE name LIKE '%{q}%'")]
        except sqlite3.Error:
            return []

    def one(raw: str):
        if kind == "masked":
            try:
                rows = db.execute(f"SELECT id, name FROM items WHERE id = {raw}").fetchall()
            except sqlite3.Error:
                rows = []
        else:
            rows = db.execute("SELECT id, name FROM items WHERE id = ?", (int(raw),)).fetchall()  # ValueError → 500
        return rows

    async def items(request: Request):
        try:
            return JSONResponse({"items": search(request.query_params.get("q", ""))})
        except RuntimeError:
            return JSONResponse({"error": "internal"}, 500)

    async def item(request: Request):
        try:
            rows = one(request.path_params["item_id"])
        except ValueError:
            return JSONResponse({"error": "internal"}, 500)
        return JSONResponse({"id": rows[0][0], "name": rows[0][1]}) if rows else JSONResponse({"error": "nf"}, 404)

    async def spec(request: Request):
        return JSONResponse(SPEC)

    return Starlette(routes=[Route("/openapi.json", spec), Route("/items", items), Route("/items/{item_id}", item)])


@pytest.mark.parametrize(
    "kind,expected",
    [("quote500", set()), ("tokens", set()), ("param", set()), ("masked", {"/items", "/items/{item_id}"})],
)
def test_sqli_differentials_against_controls(kind, expected):
    with ThreadedUvicorn(make(kind)) as server:
        result = run_sync(ScanOptions(server.url, rate=200, checks=["api8-sqli"]))
    found = {
        "/items/{item_id}" if f.url.split("?")[0].count("/") > 3 else "/items"
        for f in result.findings
        if f.check == "api8-sqli"
    }
    assert found == expected, [(f.url, f.evidence) for f in result.findings]


HASHES = st.one_of(
    st.from_regex(r"\$2[aby]\$1[0-4]\$[./A-Za-z0-9]{53}", fullmatch=True),
    st.from_regex(r"\$argon2id\$v=19\$m=65536,t=3,p=4\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}", fullmatch=True),
    st.sampled_from([32, 40, 64, 128]).flatmap(lambda n: st.from_regex(rf"[0-9a-f]{{{n}}}", fullmatch=True)),
    st.from_regex(r"pbkdf2_sha256\$[0-9]{6}\$[A-Za-z0-9]{12}\$[A-Za-z0-9+/=]{44}", fullmatch=True),
    st.from_regex(r"[*•]{3,12}", fullmatch=True),
)
KEYS = st.sampled_from(["password", "passwd", "pwd", "db_password", "smtpPassword", "client-secret", "secret", "pin"])


@settings(max_examples=60, deadline=None)
@given(KEYS, HASHES)
def test_hashes_and_masks_are_never_plaintext_credentials(key, value):
    assert not plaintext_credential(key, value)


@settings(max_examples=60, deadline=None)
@given(KEYS, st.from_regex(r"[A-Za-z][A-Za-z0-9!@#%&*_.-]{5,30}", fullmatch=True))
def test_typed_passwords_are_plaintext_credentials(key, value):
    assert plaintext_credential(key, value)


@pytest.mark.parametrize(
    "key",
    [
        "password_hash",
        "hashed_password",
        "password_changed_at",
        "passenger",
        "spinner",
        "password_reset_required",
        "secret_question",
    ],
)
def test_credential_lookalike_keys_are_not_credentials(key):
    assert not plaintext_credential(key, "hunter2-typed")


def test_an_environment_pwd_is_a_directory_not_a_password():
    """Regression: Damn Vulnerable RESTaurant's /debug dumps os.environ, whose PWD is /app."""
    assert not plaintext_credential("PWD", "/tmp/dvr/app")
    assert not plaintext_credential("OLDPWD", "/")
    assert plaintext_credential("POSTGRES_PASSWORD", "password")


def test_an_environment_dump_reports_its_password_but_not_its_pwd():
    async def debug(request: Request):
        return JSONResponse({"env_vars": {"PWD": "/srv/app", "HOME": "/root", "DB_PASSWORD": "s3cret-db-pass"}})

    async def spec(request: Request):
        return JSONResponse(
            {
                "openapi": "3.0.3",
                "info": {"title": "t", "version": "1"},
                "paths": {"/debug": {"get": {"responses": {"200": {"description": "ok"}}}}},
            }
        )

    app = Starlette(routes=[Route("/openapi.json", spec), Route("/debug", debug)])
    with ThreadedUvicorn(app) as server:
        result = run_sync(ScanOptions(server.url, rate=200, checks=["api3"]))
    evidence = [(f.check, f.evidence) for f in result.findings]
    assert [c for c, _ in evidence] == ["api3-plaintext-creds"], evidence
    assert "DB_PASSWORD" in evidence[0][1]


def test_output_naming_is_one_rule():
    assert output_paths(Path("report.json"), ["json"]) == {"json": Path("report.json")}
    assert output_paths(Path("report"), ["json"]) == {"json": Path("report.json")}
    assert output_paths(Path("out/report.json"), ["json", "sarif"]) == {
        "json": Path("out/report.json"),
        "sarif": Path("out/report.sarif"),
    }
    assert output_paths(Path("scan.v2"), ["md"]) == {"md": Path("scan.v2.md")}
    assert infer_format(Path("r.sarif")) == "sarif" and infer_format(Path("r.bin")) is None


def test_cli_output_name_with_one_format_and_inferred_format(tmp_path):
    with ThreadedUvicorn(make("param")) as server:
        for extra, name in ((["--format", "json"], "report.json"), ([], "inferred.json")):
            out = tmp_path / name
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bastion.cli",
                    "scan",
                    server.url,
                    "--checks",
                    "api8-headers",
                    "--rate",
                    "100",
                    "--fail-on",
                    "never",
                    "--output",
                    str(out),
                    *extra,
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert r.returncode == 0, r.stdout + r.stderr
            assert json.loads(out.read_text())["schema"] == "bastion-scan/1"
            assert not list(tmp_path.glob(name + ".*"))


def lookup_app(shell: bool) -> Starlette:
    async def lookup(request: Request):
        host = request.query_params.get("host", "localhost")
        if shell:
            proc = subprocess.run(f"getent hosts {host}", shell=True, capture_output=True, text=True, timeout=5)  # noqa: S602
        else:
            proc = subprocess.run(["getent", "hosts", host], capture_output=True, text=True, timeout=5)
        return JSONResponse({"output": proc.stdout + proc.stderr, "echo": host})

    async def spec(request: Request):
        return JSONResponse(
            {
                "openapi": "3.0.3",
                "info": {"title": "t", "version": "1"},
                "paths": {
                    "/lookup": {
                        "get": {
                            "parameters": [{"name": "host", "in": "query", "schema": {"type": "string"}}],
                            "responses": {"200": {"description": "ok"}},
                        }
                    }
                },
            }
        )

    return Starlette(routes=[Route("/openapi.json", spec), Route("/lookup", lookup)])


@pytest.mark.parametrize("shell", [True, False])
def test_command_injection_needs_the_shell_to_compute_the_marker(shell):
    """The safe twin echoes the input back verbatim (`echo`): a reflection is not execution."""
    with ThreadedUvicorn(lookup_app(shell)) as server:
        result = run_sync(ScanOptions(server.url, rate=200, checks=["api8-cmdi"]))
    assert bool([f for f in result.findings if f.check == "api8-cmdi"]) is shell


def graphql_auth_app(verify: bool) -> Starlette:
    """A GraphQL-only API: login is a mutation, `me` depends on the bearer token."""
    import jwt as pyjwt
    from graphql import build_schema, graphql_sync

    key = "k" * 40
    schema = build_schema(
        "type Query { me: String, hello: String } type Mutation { login(username: String!, password: String!): String }"
    )

    async def endpoint(request: Request):
        payload = await request.json()
        auth = request.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            claims = (
                pyjwt.decode(auth, key, algorithms=["HS256"])
                if verify
                else pyjwt.decode(auth, options={"verify_signature": False})
            )
        except pyjwt.PyJWTError:
            claims = {}
        root = {
            "me": claims.get("sub"),
            "hello": "hi",
            "login": lambda info, username, password: pyjwt.encode({"sub": username}, key, algorithm="HS256"),
        }
        result = graphql_sync(schema, payload.get("query", ""), root_value=root)
        return JSONResponse(
            {"data": result.data, **({"errors": [e.formatted for e in result.errors]} if result.errors else {})}
        )

    return Starlette(routes=[Route("/graphql", endpoint, methods=["POST"])])


@pytest.mark.parametrize("verify", [False, True])
def test_forged_tokens_on_a_graphql_only_api(verify):
    login = {
        "name": "alice",
        "path": "/graphql",
        "token": "data.login",
        "json": {"query": 'mutation { login(username: "alice", password: "pw") }'},
    }
    with ThreadedUvicorn(graphql_auth_app(verify)) as server:
        result = run_sync(
            ScanOptions(server.url, graphql="/graphql", rate=200, checks=["api2-alg-none"], logins=[login])
        )
    assert bool([f for f in result.findings if f.check == "api2-alg-none"]) is not verify


def books_app(check_owner: bool) -> Starlette:
    """Everyone sees every title in the list; a book's secret is its owner's. Bearer tokens are
    the user names (enough here)."""
    books: dict[str, dict] = {"dune": {"book_title": "dune", "owner": "carol", "secret": "carol's note"}}
    spec = {
        "openapi": "3.0.3",
        "info": {"title": "books", "version": "1"},
        "components": {"securitySchemes": {"b": {"type": "http", "scheme": "bearer"}}},
        "security": [{"b": []}],
        "paths": {
            "/books": {
                "get": {"responses": {"200": {"description": "ok"}}},
                "post": {
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"book_title": {"type": "string"}, "secret": {"type": "string"}},
                                }
                            }
                        }
                    },
                    "responses": {"201": {"description": "ok"}},
                },
            },
            "/books/{book_title}": {
                "get": {
                    "parameters": [
                        {"name": "book_title", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {"200": {"description": "ok"}},
                }
            },
        },
    }

    def who(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return auth[7:] if auth.startswith("Bearer ") and auth[7:] in ("alice", "bob") else None

    async def listing(request: Request):
        if who(request) is None:
            return JSONResponse({"error": "auth"}, 401)
        if request.method == "POST":
            data = await request.json()
            books[str(data["book_title"])] = {
                "book_title": str(data["book_title"]),
                "owner": who(request),
                "secret": str(data.get("secret", "")),
            }
            return JSONResponse({"book_title": data["book_title"]}, 201)
        return JSONResponse({"books": [{"book_title": t} for t in books]})

    async def one(request: Request):
        me = who(request)
        book = books.get(request.path_params["book_title"])
        if me is None:
            return JSONResponse({"error": "auth"}, 401)
        if book is None or (check_owner and book["owner"] != me):
            return JSONResponse({"error": "not found"}, 404)
        return JSONResponse(book)

    async def openapi(request: Request):
        return JSONResponse(spec)

    return Starlette(
        routes=[
            Route("/openapi.json", openapi),
            Route("/books", listing, methods=["GET", "POST"]),
            Route("/books/{book_title}", one),
        ]
    )


@pytest.mark.parametrize("check_owner", [False, True])
def test_bola_on_objects_the_first_identity_creates(check_owner):
    from bastion.scanner.model import Identity

    with ThreadedUvicorn(books_app(check_owner)) as server:
        result = run_sync(
            ScanOptions(
                server.url,
                rate=200,
                checks=["api1-bola"],
                allow_destructive=True,
                identities=[
                    Identity("alice", {"Authorization": "Bearer alice"}),
                    Identity("bob", {"Authorization": "Bearer bob"}),
                ],
            )
        )
    bola = [f for f in result.findings if f.check == "api1-bola"]
    assert bool(bola) is not check_owner, [(f.url, f.evidence) for f in bola]


def test_swagger_2_documents_are_read_like_openapi_3():
    from bastion.scanner.discovery import operations

    spec = {
        "swagger": "2.0",
        "basePath": "/api/",
        "consumes": ["application/json"],
        "paths": {
            "/login": {
                "post": {
                    "security": [],
                    "parameters": [{"in": "body", "name": "b", "schema": {"$ref": "#/definitions/Login"}}],
                }
            },
            "/token": {
                "post": {
                    "consumes": ["application/x-www-form-urlencoded"],
                    "parameters": [
                        {"in": "formData", "name": "username", "type": "string"},
                        {"in": "formData", "name": "password", "type": "string"},
                    ],
                }
            },
            "/items/{id}": {
                "get": {
                    "security": [{"key": []}],
                    "parameters": [{"in": "path", "name": "id", "type": "integer", "required": True}],
                }
            },
        },
        "definitions": {
            "Login": {"type": "object", "properties": {"username": {"type": "string"}, "password": {"type": "string"}}}
        },
    }
    ops = {o.path: o for o in operations(spec)}
    assert set(ops) == {"/api/login", "/api/token", "/api/items/{id}"}
    assert set(ops["/api/login"].body_schema["properties"]) == {"username", "password"} and not ops["/api/login"].form
    assert ops["/api/token"].form and set(ops["/api/token"].body_schema["properties"]) == {"username", "password"}
    assert ops["/api/items/{id}"].secured and ops["/api/items/{id}"].params[0]["schema"] == {"type": "integer"}


def test_the_graphql_endpoint_is_found_without_the_option():
    with ThreadedUvicorn(graphql_auth_app(True)) as server:
        result = run_sync(ScanOptions(server.url, rate=200, checks=["graphql-introspection"]))
    assert [f.check for f in result.findings] == ["graphql-introspection"]


def accounts_app(check_owner: bool) -> Starlette:
    """Versioned user paths (/users/v1/{username}/password), JSON register and login."""
    import jwt as pyjwt

    key = "q" * 40
    users = {"alice": "alice-pw-1", "bob": "bob-pw-2"}
    body = lambda props: {
        "content": {
            "application/json": {
                "schema": {  # noqa: E731
                    "type": "object",
                    "properties": {p: {"type": "string"} for p in props},
                }
            }
        }
    }
    spec = {
        "openapi": "3.0.3",
        "info": {"title": "accounts", "version": "1"},
        "components": {"securitySchemes": {"b": {"type": "http", "scheme": "bearer"}}},
        "security": [{"b": []}],
        "paths": {
            "/users/v1/register": {
                "post": {
                    "security": [],
                    "requestBody": body(["username", "password"]),
                    "responses": {"200": {"description": "ok"}},
                }
            },
            "/users/v1/login": {
                "post": {
                    "security": [],
                    "requestBody": body(["username", "password"]),
                    "responses": {"200": {"description": "ok"}},
                }
            },
            "/users/v1/{username}/password": {
                "put": {
                    "parameters": [{"name": "username", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "requestBody": body(["password"]),
                    "responses": {"204": {"description": "ok"}},
                }
            },
        },
    }

    async def register(request: Request):
        data = await request.json()
        users[str(data["username"])] = str(data["password"])
        return JSONResponse({"status": "registered"})

    async def login(request: Request):
        data = await request.json()
        if users.get(str(data.get("username"))) != data.get("password"):
            return JSONResponse({"status": "fail"}, 401)
        return JSONResponse({"auth_token": pyjwt.encode({"sub": data["username"]}, key, algorithm="HS256")})

    async def password(request: Request):
        try:
            me = pyjwt.decode(request.headers.get("authorization", "")[7:], key, algorithms=["HS256"])["sub"]
        except pyjwt.PyJWTError:
            return JSONResponse({"status": "auth"}, 401)
        name = request.path_params["username"]
        if name not in users or (check_owner and name != me):
            return JSONResponse({"status": "not found"}, 404)
        users[name] = str((await request.json()).get("password"))
        return Response(status_code=204)

    async def openapi(request: Request):
        return JSONResponse(spec)

    return Starlette(
        routes=[
            Route("/openapi.json", openapi),
            Route("/users/v1/register", register, methods=["POST"]),
            Route("/users/v1/login", login, methods=["POST"]),
            Route("/users/v1/{username}/password", password, methods=["PUT"]),
        ]
    )


@pytest.mark.parametrize("check_owner", [False, True])
def test_another_users_password_changed_through_a_versioned_path(check_owner):
    logins = [
        {"name": n, "path": "/users/v1/login", "json": {"username": n, "password": p}, "token": "auth_token"}
        for n, p in (("alice", "alice-pw-1"), ("bob", "bob-pw-2"))
    ]
    with ThreadedUvicorn(accounts_app(check_owner)) as server:
        result = run_sync(
            ScanOptions(server.url, rate=200, checks=["api1-bola-write"], allow_destructive=True, logins=logins)
        )
    writes = [f for f in result.findings if f.check == "api1-bola-write"]
    assert bool(writes) is not check_owner, [(f.url, f.evidence) for f in writes]
    assert all("logs in with the password" in f.evidence for f in writes)
