"""A small web-shop API written the way many are: Starlette, raw sqlite3 with f-string SQL, a
hand-written OpenAPI document, HS256 tokens with a guessable secret. Nothing in it is written for
the scanner: its bugs are the ones code review finds in real shops. Never run it anywhere but
127.0.0.1.

TRUTH (written before the scanner was run on it; `tests/integration/scanner/test_real_targets.py`
scores every finding against this table — (check, path template)):

  api2-weak-secret        ""                                  JWT secret "sunshine2024" (dictionary word + year)
  api2-no-bruteforce      /api/auth/login                     no throttling, no lockout
  api3-mass-assignment    /api/auth/register                  INSERT takes `role` from the body; login then says admin
  api3-plaintext-creds    /api/users                          passwords stored and listed in clear
  api3-plaintext-creds    /api/debug/config                   documented "diagnostics" endpoint returns the DB password
  api3-plaintext-creds    /api/users/{username}               a user's own record carries the clear password
  api1-bola               /api/users/{username}               any user reads any user (names from /api/users)
  api1-bola               /api/orders/{order_id}              any user reads any order (ids from the caller's list)
  api1-bola-write         /api/orders/{order_id}              any user deletes any order
  api1-bola-write         /api/users/{username}/email         any user changes any user's email
  api1-bola-write         /api/users/{username}/password      any user changes any user's password
  api8-sqli               /api/products                       ?q= in a LIKE '%…%' (string context), generic 500
  api8-sqli               /api/products/{product_id}          numeric context, generic 500
  api4-redos              /api/newsletter                     catastrophic e-mail regex
  api7-ssrf               /api/users/me/avatar                fetches image_url
  api8-headers            /api/products                       no security headers at all
  api4-no-rate-limit      /api/products                       nothing is rate limited
  api4-body-size          *                                   no body limit (any POST)
  api5-admin              /api/admin/stats                    role never checked

`create_app(hardened=True)` is its twin with every bug above fixed in the code (parameterised SQL,
owner and role checks, the role set server-side, no credentials in answers, a random 32-byte
secret, a linear e-mail check, an image-host allow-list); `hardened_config()` puts it behind
`bastion serve` for what a gateway does (security headers, rate limits with login limits, body
limit). A scan of the twin must find nothing high or critical.

NOT vulnerable (a finding here is a false positive): /api/products/{product_id} is public by spec
(`security: []`), so reading it as another user is not BOLA; GET /api/orders is scoped to the
caller; login answers the same for unknown users and wrong passwords; errors are a generic 500
without SQL text; no CORS headers at all; tokens carry exp.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import urllib.request
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

JWT_SECRET = "sunshine2024"
USERS = [
    ("admin", "admin@shop.test", "Adm1n!2019", "admin"),
    ("alice", "alice@shop.test", "alice-pass-1", "user"),
    ("bob", "bob@shop.test", "bob-pass-2", "user"),
    ("carol", "carol@shop.test", "carol-pass-3", "user"),
]
SCAN_LOGINS = [
    {
        "name": n,
        "username": n,
        "path": "/api/auth/login",
        "json": {"username": n, "password": p},
        "token": "access_token",
    }
    for n, _, p, _ in USERS[1:3]
]
# the e-mail check from a 2012 blog post, still copied: exponential backtracking on long local parts
EMAIL = re.compile(r"^([a-zA-Z0-9_\.\-])+\@(([a-zA-Z0-9\-])+\.)+([a-zA-Z0-9]{2,4})+$")

_S = {"type": "string"}
_I = {"type": "integer"}
_PUBLIC: list = []


def _body(props: dict, required: list[str] | None = None) -> dict:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": props, **({"required": required} if required else {})}
            }
        },
    }


def _p(name: str, where: str = "path", schema: dict | None = None) -> dict:
    return {"name": name, "in": where, "required": where == "path", "schema": schema or _S}


SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Shop API", "version": "1.4.0"},
    "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    "security": [{"bearerAuth": []}],
    "paths": {
        "/api/auth/register": {
            "post": {
                "security": _PUBLIC,
                "summary": "Create an account",
                "requestBody": _body(
                    {"username": _S, "email": {"type": "string", "format": "email"}, "password": _S},
                    ["username", "email", "password"],
                ),
                "responses": {"201": {"description": "created"}},
            }
        },
        "/api/auth/login": {
            "post": {
                "security": _PUBLIC,
                "requestBody": _body({"username": _S, "password": _S}),
                "responses": {"200": {"description": "a token"}},
            }
        },
        "/api/users": {"get": {"summary": "List users", "responses": {"200": {"description": "users"}}}},
        "/api/users/{username}": {
            "get": {"parameters": [_p("username")], "responses": {"200": {"description": "a user"}}}
        },
        "/api/users/{username}/email": {
            "put": {
                "parameters": [_p("username")],
                "requestBody": _body({"email": _S}),
                "responses": {"200": {"description": "changed"}},
            }
        },
        "/api/users/{username}/password": {
            "put": {
                "parameters": [_p("username")],
                "requestBody": _body({"password": _S}),
                "responses": {"200": {"description": "changed"}},
            }
        },
        "/api/users/me/avatar": {
            "post": {
                "requestBody": _body({"image_url": {"type": "string", "format": "uri"}}),
                "responses": {"200": {"description": "stored"}},
            }
        },
        "/api/products": {
            "get": {
                "security": _PUBLIC,
                "parameters": [_p("q", "query")],
                "responses": {"200": {"description": "products"}},
            }
        },
        "/api/products/{product_id}": {
            "get": {
                "security": _PUBLIC,
                "parameters": [_p("product_id", schema=_I)],
                "responses": {"200": {"description": "a product"}},
            }
        },
        "/api/orders": {
            "get": {"responses": {"200": {"description": "my orders"}}},
            "post": {
                "requestBody": _body({"product_id": _I, "quantity": _I, "note": _S}, ["product_id", "quantity"]),
                "responses": {"201": {"description": "created"}},
            },
        },
        "/api/orders/{order_id}": {
            "get": {"parameters": [_p("order_id", schema=_I)], "responses": {"200": {"description": "an order"}}},
            "delete": {"parameters": [_p("order_id", schema=_I)], "responses": {"204": {"description": "deleted"}}},
        },
        "/api/newsletter": {
            "post": {
                "security": _PUBLIC,
                "requestBody": _body({"email": _S}, ["email"]),
                "responses": {"200": {"description": "subscribed"}},
            }
        },
        "/api/debug/config": {
            "get": {"summary": "Diagnostics for support", "responses": {"200": {"description": "config"}}}
        },
        "/api/admin/stats": {
            "get": {"summary": "Admin only: sales figures", "responses": {"200": {"description": "stats"}}}
        },
    },
}


class DB:
    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.lock = threading.Lock()
        c = self.conn
        c.executescript("""
            CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT UNIQUE, email TEXT, password TEXT,
                                role TEXT DEFAULT 'user', avatar TEXT);
            CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, price REAL, stock INTEGER);
            CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, product_id INTEGER, quantity INTEGER,
                                 note TEXT, created REAL);
            CREATE TABLE subscribers (email TEXT);
        """)
        c.executemany("INSERT INTO users (username, email, password, role) VALUES (?,?,?,?)", USERS)
        names = [
            "kettle",
            "toaster",
            "lamp",
            "desk",
            "chair",
            "mug",
            "teapot",
            "rug",
            "shelf",
            "clock",
            "radio",
            "fan",
            "pillow",
            "blanket",
            "vase",
        ]
        c.executemany(
            "INSERT INTO products (name, price, stock) VALUES (?,?,?)",
            [(n, 5.0 + i, 10 + i) for i, n in enumerate(names)],
        )
        c.executemany(
            "INSERT INTO orders (user_id, product_id, quantity, note, created) VALUES (?,?,?,?,?)",
            [(2, 3, 1, "gift wrap please", time.time()), (3, 5, 2, "", time.time()), (4, 1, 1, "", time.time())],
        )
        c.commit()

    def q(self, sql: str, args: tuple = ()) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self.conn.execute(sql, args).fetchall()]

    def x(self, sql: str, args: tuple = ()) -> int:
        with self.lock:
            cur = self.conn.execute(sql, args)
            self.conn.commit()
            return cur.lastrowid


SAFE_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


def hardened_config(upstream_url: str) -> dict:
    return {
        "upstreams": {"shop": {"urls": [upstream_url]}},
        "policies": {
            "body_limit": {"max_bytes": 65536},
            "rate_limit": {
                "max_keys": 100_001,  # its own memory store: one per max_keys per process
                "limits": ["30/second"],
                "login_paths": ["/api/auth/login"],
                "login_limits": ["5/minute"],
            },
        },
        "routes": [{"path": "/*", "upstream": "shop"}],
    }


def create_app(hardened: bool = False) -> Starlette:
    import secrets as _secrets

    db = DB()
    secret = _secrets.token_urlsafe(32) if hardened else JWT_SECRET
    user_cols = "id, username, email, role" if hardened else "id, username, email, password, role"

    def current_user(request: Request) -> dict | None:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return None
        try:
            claims = jwt.decode(auth[7:], secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            return None
        rows = db.q("SELECT * FROM users WHERE username = ?", (claims.get("sub"),))
        return rows[0] if rows else None

    def need_user(handler):
        async def wrapper(request: Request):
            user = current_user(request)
            if user is None:
                return JSONResponse({"error": "authentication required"}, 401)
            return await handler(request, user)

        return wrapper

    async def json_body(request: Request) -> dict:
        try:
            data = await request.json()
        except Exception:
            data = None
        return data if isinstance(data, dict) else {}

    async def register(request: Request):
        data = await json_body(request)
        if not data.get("username") or not data.get("password"):
            return JSONResponse({"error": "username and password are required"}, 400)
        if db.q("SELECT id FROM users WHERE username = ?", (data["username"],)):
            return JSONResponse({"error": "username taken"}, 409)
        # "role" defaults to user... unless the client sends one
        uid = db.x(
            "INSERT INTO users (username, email, password, role) VALUES (?,?,?,?)",
            (
                data["username"],
                data.get("email", ""),
                data["password"],
                "user" if hardened else data.get("role", "user"),
            ),
        )
        return JSONResponse({"id": uid, "username": data["username"]}, 201)

    async def login(request: Request):
        data = await json_body(request)
        rows = db.q(
            "SELECT * FROM users WHERE username = ? AND password = ?",
            (str(data.get("username")), str(data.get("password"))),
        )
        if not rows:
            return JSONResponse({"error": "invalid username or password"}, 401)
        u = rows[0]
        now = int(time.time())
        tok = jwt.encode(
            {"sub": u["username"], "role": u["role"], "iat": now, "exp": now + 3600}, secret, algorithm="HS256"
        )
        return JSONResponse({"access_token": tok, "token_type": "bearer", "role": u["role"]})

    async def users(request: Request, user: dict):
        if hardened and user["role"] != "admin":
            return JSONResponse({"error": "forbidden"}, 403)
        return JSONResponse(db.q(f"SELECT {user_cols} FROM users"))

    async def user_detail(request: Request, user: dict):
        if hardened and request.path_params["username"] != user["username"]:
            return JSONResponse({"error": "not found"}, 404)
        rows = db.q(f"SELECT {user_cols}, avatar FROM users WHERE username = ?", (request.path_params["username"],))
        return JSONResponse(rows[0]) if rows else JSONResponse({"error": "not found"}, 404)

    async def user_email(request: Request, user: dict):
        data = await json_body(request)
        name = request.path_params["username"]
        if not db.q("SELECT id FROM users WHERE username = ?", (name,)) or (hardened and name != user["username"]):
            return JSONResponse({"error": "not found"}, 404)
        db.x("UPDATE users SET email = ? WHERE username = ?", (str(data.get("email", "")), name))
        return JSONResponse({"username": name, "email": data.get("email")})

    async def user_password(request: Request, user: dict):
        data = await json_body(request)
        name = request.path_params["username"]
        if (
            not data.get("password")
            or not db.q("SELECT id FROM users WHERE username = ?", (name,))
            or (hardened and name != user["username"])
        ):
            return JSONResponse({"error": "not found"}, 404)
        db.x("UPDATE users SET password = ? WHERE username = ?", (str(data["password"]), name))
        return JSONResponse({"status": "password changed"})

    async def avatar(request: Request, user: dict):
        data = await json_body(request)
        url = str(data.get("image_url", ""))
        if not url.startswith(("http://", "https://")) or (
            hardened and not url.startswith("https://images.shop.test/")
        ):
            return JSONResponse({"error": "image_url must be http(s)"}, 400)
        try:
            with urllib.request.urlopen(url, timeout=3) as r:  # noqa: S310
                size = len(r.read(1_000_000))
        except Exception:
            return JSONResponse({"error": "could not fetch image"}, 400)
        db.x("UPDATE users SET avatar = ? WHERE id = ?", (url, user["id"]))
        return JSONResponse({"avatar": url, "bytes": size})

    async def products(request: Request):
        q = request.query_params.get("q", "")
        try:
            rows = (
                db.q("SELECT id, name, price FROM products WHERE name LIKE ? ORDER BY id", (f"%{q}%",))
                if hardened
                else db.q(f"SELECT id, name, price FROM products WHERE name LIKE '%{q}%' ORDER BY id")
            )
        except sqlite3.Error:
            return JSONResponse({"error": "internal server error"}, 500)
        return JSONResponse({"items": rows, "count": len(rows)})

    async def product(request: Request):
        pid = request.path_params["product_id"]
        try:
            rows = (
                db.q("SELECT id, name, price, stock FROM products WHERE id = ?", (int(pid),))
                if hardened
                else db.q(f"SELECT id, name, price, stock FROM products WHERE id = {pid}")
            )
        except ValueError:
            return JSONResponse({"error": "not found"}, 404)
        except sqlite3.Error:
            return JSONResponse({"error": "internal server error"}, 500)
        return JSONResponse(rows[0]) if rows else JSONResponse({"error": "not found"}, 404)

    async def orders(request: Request, user: dict):
        if request.method == "POST":
            data = await json_body(request)
            try:
                pid, qty = int(data["product_id"]), int(data["quantity"])
            except (KeyError, TypeError, ValueError):
                return JSONResponse({"error": "product_id and quantity are required"}, 400)
            oid = db.x(
                "INSERT INTO orders (user_id, product_id, quantity, note, created) VALUES (?,?,?,?,?)",
                (user["id"], pid, qty, str(data.get("note", "")), time.time()),
            )
            return JSONResponse({"id": oid, "product_id": pid, "quantity": qty, "status": "placed"}, 201)
        return JSONResponse(db.q("SELECT id, product_id, quantity, note FROM orders WHERE user_id = ?", (user["id"],)))

    async def order(request: Request, user: dict):
        try:
            oid = int(request.path_params["order_id"])
        except ValueError:
            return JSONResponse({"error": "bad id"}, 400)
        rows = db.q(
            "SELECT o.id, o.product_id, o.quantity, o.note, u.username AS customer, u.email FROM orders o "
            "JOIN users u ON u.id = o.user_id WHERE o.id = ?",
            (oid,),
        )
        if not rows or (hardened and rows[0]["customer"] != user["username"]):
            return JSONResponse({"error": "not found"}, 404)
        if request.method == "DELETE":
            db.x("DELETE FROM orders WHERE id = ?", (oid,))
            return Response(status_code=204)
        return JSONResponse(rows[0])

    async def newsletter(request: Request):
        data = await json_body(request)
        email = str(data.get("email", ""))
        if not (SAFE_EMAIL if hardened else EMAIL).match(email):
            return JSONResponse({"error": "invalid email"}, 400)
        db.x("INSERT INTO subscribers (email) VALUES (?)", (email,))
        return JSONResponse({"subscribed": email})

    async def debug_config(request: Request, user: dict):
        if hardened:
            return JSONResponse({"version": "1.4.0", "debug": False})
        return JSONResponse(
            {
                "version": "1.4.0",
                "debug": True,
                "database": {"engine": "sqlite", "host": "db.internal", "user": "shop", "password": "Sh0pDB-pr0d!"},
                "mail": {"smtp_host": "smtp.shop.test", "smtp_user": "noreply", "smtp_password": "m4il-s3nd"},
            }
        )

    async def admin_stats(request: Request, user: dict):
        if hardened and user["role"] != "admin":
            return JSONResponse({"error": "forbidden"}, 403)
        rows = db.q("SELECT COUNT(*) AS orders, COALESCE(SUM(quantity), 0) AS items FROM orders")
        return JSONResponse({**rows[0], "revenue": 1234.5})

    async def openapi(request: Request):
        return JSONResponse(SPEC)

    return Starlette(
        routes=[
            Route("/openapi.json", openapi),
            Route("/api/auth/register", register, methods=["POST"]),
            Route("/api/auth/login", login, methods=["POST"]),
            Route("/api/users", need_user(users)),
            Route("/api/users/me/avatar", need_user(avatar), methods=["POST"]),
            Route("/api/users/{username}", need_user(user_detail)),
            Route("/api/users/{username}/email", need_user(user_email), methods=["PUT"]),
            Route("/api/users/{username}/password", need_user(user_password), methods=["PUT"]),
            Route("/api/products", products),
            Route("/api/products/{product_id}", product),
            Route("/api/orders", need_user(orders), methods=["GET", "POST"]),
            Route("/api/orders/{order_id}", need_user(order), methods=["GET", "DELETE"]),
            Route("/api/newsletter", newsletter, methods=["POST"]),
            Route("/api/debug/config", need_user(debug_config)),
            Route("/api/admin/stats", need_user(admin_stats)),
        ]
    )
