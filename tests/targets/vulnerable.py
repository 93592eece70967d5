"""A deliberately vulnerable API for the scanner's tests: at least one real instance of every
check, REST and GraphQL. Never run it anywhere but 127.0.0.1.

Planted (check id → where):
  api1-bola            GET /api/v2/users/{id}/orders and /users/{id} answer any caller for anyone
  api2-no-auth         GET /api/v2/reports, /products, /search answer without credentials (declared secured)
  api2-alg-none        tokens with alg "none" are accepted
  api2-hs256-public-key  HS256 tokens keyed with the JWKS's RSA public key are accepted
  api2-weak-secret     tokens are HS256 signed with "secret"
  api2-no-exp          issued tokens carry no exp
  api2-no-bruteforce   POST /api/v2/login never throttles
  api2-enumeration     login says "no such user" vs "wrong password"
  api2-query-creds     ?access_token= is accepted
  api3-mass-assignment POST /api/v2/users/{id}/profile reflects role / is_admin
  api3-data-exposure   GET /api/v2/users/{id} and /admin/users return password_hash (and /api/v1 too)
  api4-no-rate-limit   nothing is rate limited
  api4-page-size       GET /api/v2/products?limit=100000 returns everything asked
  api4-body-size       any body size is accepted
  api5-admin           GET /api/v2/admin/users works for a normal user
  api5-method-switch   DELETE /api/v2/products/{id} is accepted though the spec says GET only
  api7-ssrf            GET /api/v2/preview?url= fetches the URL
  api8-headers         no security headers
  api8-verbose-errors  malformed JSON gets a Python traceback
  api8-cors            any Origin is reflected with credentials, no Vary
  api8-trace           TRACE echoes the request
  api8-server-version  Server: Werkzeug/2.0.1 Python/3.8.10
  api8-sqli            a quote in ?q= gives a SQL error
  api8-nosqli          {"password": {"$ne": null}} logs in
  api9-old-version     /api/v1/... still answers beside the documented /api/v2
  api9-undocumented    /api/v2/debug answers
  api9-spec-internal   the spec lists an internal server
  graphql-*            introspection, suggestions, no depth/alias/batch/duplication limits, mutation over GET,
                       debug details in errors
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.request
from typing import Any

import orjson
from upstream_app import read_body

SECRET = b"secret"
_RSA = None


def rsa_public_pem() -> bytes:
    """The server's RSA key: published in its JWKS (for tokens it never actually signs with)."""
    global _RSA
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if _RSA is None:
        _RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _RSA.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def jwks() -> dict:
    import jwt as pyjwt

    rsa_public_pem()
    jwk = pyjwt.algorithms.RSAAlgorithm.to_jwk(_RSA.public_key(), as_dict=True)
    return {"keys": [{**jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"}]}


USERS = {
    1: {
        "id": 1,
        "username": "alice",
        "email": "alice@example.com",
        "role": "user",
        "password_hash": "$2b$12$abcdefghijklmnopqrstuv",
    },
    2: {
        "id": 2,
        "username": "bob",
        "email": "bob@example.com",
        "role": "user",
        "password_hash": "$2b$12$zyxwvutsrqponmlkjihgfe",
    },
}
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-2"}
# how the scanner logs alice and bob in (scan config `login` recipes)
SCAN_LOGINS = [
    {"name": n, "username": n, "path": "/api/v2/login", "json": {"username": n, "password": p}, "token": "token"}
    for n, p in PASSWORDS.items()
]
ORDERS = {1: [{"id": 101, "item": "lamp"}], 2: [{"id": 201, "item": "desk"}]}
PRODUCTS = [{"id": i, "name": f"product {i}"} for i in range(1, 2001)]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(user_id: int) -> str:
    header = b64(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    payload = b64(orjson.dumps({"sub": str(user_id), "iat": int(time.time())}))  # no exp
    sig = b64(hmac.new(SECRET, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    return f"{header}.{payload}.{sig}"


def read_token(token: str) -> int | None:
    try:
        h, p, s = token.split(".")
        header = orjson.loads(unb64(h))
        if header.get("alg", "").lower() == "none":  # planted: alg none accepted
            return int(orjson.loads(unb64(p))["sub"])
        good = b64(hmac.new(SECRET, f"{h}.{p}".encode(), hashlib.sha256).digest())
        # planted: algorithm confusion — an HS256 token whose HMAC key is the public RSA key
        confused = b64(hmac.new(rsa_public_pem(), f"{h}.{p}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(good, s) and not hmac.compare_digest(confused, s):
            return None
        return int(orjson.loads(unb64(p))["sub"])
    except Exception:
        return None


SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "vulnerable", "version": "2"},
    "servers": [{"url": "/api/v2"}, {"url": "http://10.1.2.3:8080/api/v2", "description": "internal"}],
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/login": {
            "post": {
                "security": [],
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
                            }
                        }
                    }
                },
                "responses": {"200": {"description": "token"}},
            }
        },
        "/users/{id}": {
            "get": {
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "a user"}},
            }
        },
        "/users/{id}/orders": {
            "get": {
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "orders"}},
            }
        },
        "/users/{id}/profile": {
            "post": {
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"type": "object", "properties": {"email": {"type": "string"}}}}
                    }
                },
                "responses": {"200": {"description": "updated"}},
            }
        },
        "/products": {
            "get": {
                "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "products"}},
            }
        },
        "/products/{id}": {
            "get": {
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "a product"}},
            }
        },
        "/reports": {"get": {"responses": {"200": {"description": "reports"}}}},
        "/search": {
            "get": {
                "parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "results"}},
            }
        },
        "/preview": {
            "get": {
                "parameters": [{"name": "url", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "a preview"}},
            }
        },
        "/admin/users": {"get": {"responses": {"200": {"description": "every user"}}}},
    },
}

BAD_HEADERS = [(b"server", b"Werkzeug/2.0.1 Python/3.8.10"), (b"x-powered-by", b"Flask")]


async def reply(send, status: int, doc: Any, headers=(), ctype=b"application/json", origin: bytes | None = None):
    body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    hs = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *BAD_HEADERS, *headers]
    if origin is not None:  # planted: any origin reflected, with credentials, no Vary
        hs += [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-allow-methods", b"GET, POST, PUT, DELETE, PATCH"),
            (b"access-control-allow-headers", b"authorization, content-type"),
        ]
    await send({"type": "http.response.start", "status": status, "headers": hs})
    await send({"type": "http.response.body", "body": body})


def who(scope) -> int | None:
    headers = dict(scope["headers"])
    if b"x-bastion-subject" in headers:  # behind the gateway (the hardened twin): the gateway's word
        value = headers[b"x-bastion-subject"].decode()
        return int(value) if value.isdigit() else None
    auth = headers.get(b"authorization", b"").decode()
    if auth.lower().startswith("bearer "):
        return read_token(auth[7:].strip())
    q = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
    if "access_token" in q:  # planted: credentials in the query string
        return read_token(q["access_token"])
    return None


GRAPHQL_SCHEMA = None


def graphql_schema():
    global GRAPHQL_SCHEMA
    if GRAPHQL_SCHEMA is None:
        from graphql import build_schema

        GRAPHQL_SCHEMA = build_schema("""
          type User { id: ID!, name: String!, friends: [User!]! }
          type Query { user(id: ID!): User, users: [User!]! }
          type Mutation { deleteUser(id: ID!): Boolean }
        """)
    return GRAPHQL_SCHEMA


def graphql_run(query: str) -> dict[str, Any]:
    from graphql import graphql_sync

    def person(pid: str, name: str) -> dict:
        # friends resolve lazily, to any depth: nothing stops a deep query (planted)
        return {"id": pid, "name": name, "friends": lambda info: [person("2", "bob")]}

    root = {
        "user": lambda info, id: person(id, "alice"),
        "users": lambda info: [person("1", "alice")],
        "deleteUser": lambda info, id: True,
    }
    result = graphql_sync(graphql_schema(), query, root_value=root)
    out: dict[str, Any] = {"data": result.data}
    if result.errors:
        out["errors"] = [
            {
                "message": e.message,
                "extensions": {
                    "exception": {
                        "stacktrace": [
                            "Traceback (most recent call last):",
                            '  File "/srv/app/graphql.py", line 88, in resolve',
                        ]
                    }
                },
            }
            for e in result.errors
        ]  # planted: debug details
    return out


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    method, path = scope["method"], scope["path"]
    headers = dict(scope["headers"])
    origin = headers.get(b"origin")
    if method == "TRACE":  # planted: TRACE echoes the request
        lines = [f"TRACE {path} HTTP/1.1"] + [f"{k.decode()}: {v.decode()}" for k, v in scope["headers"]]
        return await reply(send, 200, "\r\n".join(lines).encode(), ctype=b"message/http")
    if method == "OPTIONS":
        return await reply(send, 204, b"", origin=origin or b"*")
    body = await read_body(receive)  # planted: no size limit
    user = who(scope)
    q = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
    for prefix in ("/api/v2", "/api/v1"):  # planted: v1 still answers
        if path.startswith(prefix + "/") or path == prefix:
            path = path[len(prefix) :] or "/"
            break
    else:
        if path in ("/openapi.json",):
            return await reply(send, 200, SPEC, origin=origin)
        if path == "/.well-known/jwks.json":
            return await reply(send, 200, jwks(), origin=origin)
        if path == "/graphql":
            if method == "GET":
                query = urllib.parse.unquote_plus(q.get("query", ""))  # planted: mutations over GET
                return await reply(send, 200, graphql_run(query), origin=origin)
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                return await reply(send, 400, {"errors": [{"message": "bad json"}]})
            if isinstance(doc, list):  # planted: unlimited batching
                return await reply(send, 200, [graphql_run(d.get("query", "")) for d in doc], origin=origin)
            return await reply(send, 200, graphql_run(doc.get("query", "")), origin=origin)
        return await reply(send, 404, {"error": "not found"}, origin=origin)
    parts = [p for p in path.split("/") if p]
    if parts == ["login"] and method == "POST":
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            trace = f'Traceback (most recent call last):\n  File "/srv/app/views.py", line 42, in login\n{exc!r}'
            return await reply(send, 500, trace.encode(), ctype=b"text/plain")  # planted: verbose errors
        name, password = doc.get("username"), doc.get("password")
        match = next((u for u in USERS.values() if u["username"] == name), None)
        if match is None:
            return await reply(send, 404, {"error": "no such user"}, origin=origin)  # planted: enumeration
        if isinstance(password, dict) and "$ne" in password:  # planted: NoSQL operator injection
            return await reply(send, 200, {"token": make_token(match["id"])}, origin=origin)
        if password != PASSWORDS[name]:
            return await reply(send, 401, {"error": "wrong password"}, origin=origin)
        return await reply(send, 200, {"token": make_token(match["id"])}, origin=origin)
    if parts == ["debug"]:
        return await reply(send, 200, {"env": {"DEBUG": True}, "version": "2.3.1"}, origin=origin)
    if parts == ["reports"] and method == "GET":  # planted: no auth at all
        return await reply(send, 200, [{"id": 1, "title": "Q3 revenue"}], origin=origin)
    if parts == ["products"] and method == "GET":
        limit = int(q.get("limit", "20")) if q.get("limit", "20").isdigit() else 20
        return await reply(send, 200, PRODUCTS[:limit], origin=origin)  # planted: no max page size
    if parts == ["search"] and method == "GET":
        term = urllib.parse.unquote_plus(q.get("q", ""))
        if "'" in term:  # planted: SQL error
            return await reply(
                send,
                500,
                {
                    "error": "psycopg2.errors.SyntaxError: unterminated quoted string at or "
                    "near \"'\" LINE 1: SELECT * FROM products WHERE name = '" + term
                },
                origin=origin,
            )
        return await reply(send, 200, [p for p in PRODUCTS[:5] if term in p["name"]], origin=origin)
    if parts == ["preview"] and method == "GET":  # planted: SSRF
        url = urllib.parse.unquote_plus(q.get("url", ""))
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (planted)
                return await reply(send, 200, {"status": r.status, "length": len(r.read())}, origin=origin)
        except Exception as exc:
            return await reply(send, 502, {"error": str(exc)[:100]}, origin=origin)
    if user is None:
        return await reply(send, 401, {"error": "unauthorized"}, origin=origin)
    if parts == ["admin", "users"]:  # planted: no role check
        return await reply(send, 200, list(USERS.values()), origin=origin)
    if len(parts) == 2 and parts[0] == "products":
        if method in ("GET", "DELETE", "PUT"):  # planted: method switching
            return await reply(send, 200, {"id": parts[1], "deleted": method == "DELETE"}, origin=origin)
    if len(parts) >= 2 and parts[0] == "users" and parts[1].isdigit():
        uid = int(parts[1])
        if uid not in USERS:
            return await reply(send, 404, {"error": "no such user"}, origin=origin)
        if len(parts) == 2:
            return await reply(send, 200, USERS[uid], origin=origin)  # planted: password_hash exposed
        if parts[2] == "orders":
            return await reply(send, 200, ORDERS[uid], origin=origin)  # planted: BOLA (no owner check)
        if parts[2] == "profile" and method == "POST":
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                return await reply(send, 400, {"error": "bad json"}, origin=origin)
            updated = {**USERS[uid], **doc}  # planted: mass assignment, reflected
            return await reply(send, 200, {k: v for k, v in updated.items() if k != "password_hash"}, origin=origin)
    return await reply(send, 404, {"error": "not found"}, origin=origin)


import urllib.parse  # noqa: E402  (used above)
