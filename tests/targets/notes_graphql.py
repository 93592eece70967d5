"""A notes / paste service the way a small team writes one: FastAPI + SQLAlchemy ORM for REST
(login, profile, notes), and a GraphQL endpoint built on graphql-core for the web app, with a
debug mode left on. Its JWT secret is the one from a popular framework tutorial. Nothing in it is
written for the scanner. Never run it anywhere but 127.0.0.1.

TRUTH (written before the scanner was run on it; (check, path template)):

  api2-weak-secret          ""                 HS256 with the FastAPI tutorial's SECRET_KEY
  api2-no-bruteforce        /auth/login        no throttling
  api3-mass-assignment      /auth/register     the input model has `is_admin` (default False); /users/me then says true
  api1-bola                 /notes/{note_id}   any user reads any note (ids from the caller's own list)
  api8-sqli                 /search            text() with an f-string, string context, generic 500
  api4-body-size            *                  no body limit
  api4-no-rate-limit        (a GET)            nothing is rate limited
  api8-headers              (a GET)            no security headers
  graphql-introspection     /graphql
  graphql-suggestions       /graphql           graphql-core's "Did you mean"
  graphql-ide               /graphql           GraphiQL served on GET with Accept: text/html
  graphql-depth             /graphql           User.pastes → Paste.owner → User … no limit
  graphql-aliases           /graphql
  graphql-batching          /graphql           a JSON array of operations is executed
  graphql-field-duplication /graphql           the same field 500 times is executed
  graphql-mutation-get      /graphql           GET runs mutations
  graphql-debug             /graphql           errors carry the exception and traceback (debug on)
  graphql-sqli              /graphql           pastes(filter:) goes into raw SQL
  graphql-ssrf              /graphql           importPaste(url:) fetches any URL
  graphql-cmdi              /graphql           diagnostics(host:) runs a shell
  graphql-xss               /graphql           createPaste stores HTML; pastes returns it as is
  graphql-bruteforce        /graphql           login(username:, password:) unthrottled, batchable

`create_app(hardened=True)` is its twin with the bugs fixed in code (random secret, no `is_admin` in
the input model, owner checks, bound parameters, no shell, an import allow-list, escaped HTML,
no debug details); `hardened_config()` puts it behind `bastion serve` with the GraphQL guard
(introspection off, depth/alias/batch limits) and rate and login limits.

NOT vulnerable: GET /users/{user_id} is a public profile by design (no security in the spec,
same answer for everyone); GET /notes is scoped to the caller; REST errors are generic 500s.
"""

from __future__ import annotations

import html
import subprocess
import time
import traceback
import urllib.request
from typing import Any

import jwt
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from graphql import (
    GraphQLArgument,
    GraphQLBoolean,
    GraphQLField,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLString,
    graphql_sync,
)
from pydantic import BaseModel
from sqlalchemy import ForeignKey, String, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.pool import StaticPool

# copied from the FastAPI "OAuth2 with Password (and hashing), Bearer with JWT tokens" tutorial
SECRET_KEY = "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7"
PASSWORDS = {"alice": "alice-notes-1", "bob": "bob-notes-2"}
SCAN_LOGINS = [
    {"name": n, "username": n, "path": "/auth/login", "json": {"username": n, "password": p}, "token": "access_token"}
    for n, p in PASSWORDS.items()
]


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(50), unique=True)
    password: Mapped[str] = mapped_column(String(200))
    bio: Mapped[str] = mapped_column(String(200), default="")
    is_admin: Mapped[bool] = mapped_column(default=False)
    notes: Mapped[list[Note]] = relationship(back_populates="owner")


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(String(5000))
    public: Mapped[bool] = mapped_column(default=False)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    owner: Mapped[User] = relationship(back_populates="notes")


class Register(BaseModel):
    username: str
    password: str
    bio: str = ""
    is_admin: bool = False  # "the admin console creates admins through the same model"


class Login(BaseModel):
    username: str
    password: str


class NoteIn(BaseModel):
    title: str
    body: str
    public: bool = False


GRAPHIQL = """<!doctype html><html><head><title>GraphiQL</title>
<link rel="stylesheet" href="https://unpkg.com/graphiql/graphiql.min.css"></head>
<body><div id="graphiql">Loading…</div><script src="https://unpkg.com/graphiql/graphiql.min.js"></script>
<script>ReactDOM.render(React.createElement(GraphiQL, {fetcher: GraphiQL.createFetcher({url: '/graphql'})}),
document.getElementById('graphiql'));</script></body></html>"""


class SafeRegister(BaseModel):
    username: str
    password: str
    bio: str = ""


def hardened_config(upstream_url: str) -> dict:
    return {
        "upstreams": {"notes": {"urls": [upstream_url]}},
        "policies": {
            "body_limit": {"max_bytes": 65536},
            "rate_limit": {
                "max_keys": 100_003,  # its own memory store: one per max_keys per process
                "limits": ["30/second"],
                "login_paths": ["/auth/login"],
                "login_limits": ["5/minute"],
            },
        },
        "routes": [
            {
                "path": "/graphql",
                "methods": ["POST"],
                "upstream": "notes",
                "policies": {
                    "graphql": {"introspection": False, "limits": {"max_depth": 6, "max_aliases": 10, "max_batch": 1}},
                    "rate_limit": {"limits": ["5/second"]},
                },
            },
            {"path": "/*", "upstream": "notes"},
        ],
    }


def create_app(hardened: bool = False) -> FastAPI:
    import secrets as _secrets

    secret = _secrets.token_urlsafe(32) if hardened else SECRET_KEY
    engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        alice = User(username="alice", password=PASSWORDS["alice"], bio="hi, alice here")
        bob = User(username="bob", password=PASSWORDS["bob"])
        s.add_all([alice, bob, User(username="root", password="r00t-notes", is_admin=True)])
        s.flush()
        s.add_all(
            [
                Note(title="groceries", body="milk, eggs", owner_id=alice.id),
                Note(title="bank pin", body="4711", owner_id=alice.id),
                Note(title="todo", body="call mum", owner_id=bob.id),
                Note(title="welcome", body="<b>hello</b> world", public=True, owner_id=bob.id),
            ]
        )
        s.commit()

    app = FastAPI(title="Notes", version="0.9.0")

    def db():
        with Session(engine) as s:
            yield s

    def me(request: Request, s: Session = Depends(db)) -> User:
        auth = request.headers.get("authorization", "")
        try:
            claims = jwt.decode(auth.removeprefix("Bearer "), secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            raise HTTPException(401, "Could not validate credentials")
        user = s.scalar(select(User).where(User.username == claims.get("sub")))
        if user is None:
            raise HTTPException(401, "Could not validate credentials")
        return user

    def issue(user: User) -> str:
        now = int(time.time())
        return jwt.encode({"sub": user.username, "exp": now + 1800}, secret, algorithm="HS256")

    def _register(body: BaseModel, s: Session):
        if s.scalar(select(User).where(User.username == body.username)):
            raise HTTPException(409, "username taken")
        user = User(**body.model_dump())
        s.add(user)
        s.commit()
        return {"id": user.id, "username": user.username}

    if hardened:

        @app.post("/auth/register", status_code=201)
        def register_safe(body: SafeRegister, s: Session = Depends(db)):
            return _register(body, s)
    else:

        @app.post("/auth/register", status_code=201)
        def register(body: Register, s: Session = Depends(db)):
            return _register(body, s)

    @app.post("/auth/login")
    def login(body: Login, s: Session = Depends(db)):
        user = s.scalar(select(User).where(User.username == body.username))
        if user is None or user.password != body.password:
            raise HTTPException(401, "Incorrect username or password")
        return {"access_token": issue(user), "token_type": "bearer"}

    @app.get("/users/me", openapi_extra={"security": [{"bearer": []}]})
    def users_me(user: User = Depends(me)):
        return {"id": user.id, "username": user.username, "bio": user.bio, "is_admin": user.is_admin}

    @app.get("/users/{user_id}")
    def public_profile(user_id: int, s: Session = Depends(db)):
        user = s.get(User, user_id)
        if user is None:
            raise HTTPException(404, "not found")
        return {"id": user.id, "username": user.username, "bio": user.bio}

    @app.get("/notes", openapi_extra={"security": [{"bearer": []}]})
    def my_notes(user: User = Depends(me), s: Session = Depends(db)):
        return [{"id": n.id, "title": n.title} for n in s.scalars(select(Note).where(Note.owner_id == user.id))]

    @app.post("/notes", status_code=201, openapi_extra={"security": [{"bearer": []}]})
    def new_note(body: NoteIn, user: User = Depends(me), s: Session = Depends(db)):
        note = Note(**body.model_dump(), owner_id=user.id)
        s.add(note)
        s.commit()
        return {"id": note.id, "title": note.title}

    @app.get("/notes/{note_id}", openapi_extra={"security": [{"bearer": []}]})
    def read_note(note_id: int, user: User = Depends(me), s: Session = Depends(db)):
        note = s.get(Note, note_id)
        if note is None or (hardened and note.owner_id != user.id and not note.public):
            raise HTTPException(404, "not found")
        return {"id": note.id, "title": note.title, "body": note.body, "owner": note.owner.username}

    @app.get("/search", openapi_extra={"security": [{"bearer": []}]})
    def search(q: str, user: User = Depends(me), s: Session = Depends(db)):
        if hardened:
            rows = s.execute(
                text("SELECT id, title FROM notes WHERE public = 1 AND title LIKE :q"), {"q": f"%{q}%"}
            ).all()
        else:
            rows = s.execute(text(f"SELECT id, title FROM notes WHERE public = 1 AND title LIKE '%{q}%'")).all()
        return [{"id": r[0], "title": r[1]} for r in rows]

    schema = _schema(engine, secret, hardened)

    @app.get("/graphql")
    async def graphql_get(request: Request, query: str | None = None, variables: str | None = None):
        if query is None:
            if "text/html" in request.headers.get("accept", "") and not hardened:
                return HTMLResponse(GRAPHIQL)
            return JSONResponse({"errors": [{"message": "Must provide query string."}]}, 400)
        if hardened:
            return JSONResponse({"errors": [{"message": "use POST"}]}, 405)
        return JSONResponse(_run(schema, {"query": query}, request, secret, hardened))

    @app.post("/graphql")
    async def graphql_post(request: Request):
        try:
            payload = await request.json()
        except Exception:
            return JSONResponse({"errors": [{"message": "POST body sent invalid JSON."}]}, 400)
        if isinstance(payload, list):  # batching for the web app's data loader
            return JSONResponse(
                [_run(schema, p, request, secret, hardened) for p in payload[:100] if isinstance(p, dict)]
            )
        return JSONResponse(_run(schema, payload if isinstance(payload, dict) else {}, request, secret, hardened))

    return app


def _run(
    schema: GraphQLSchema, payload: dict, request: Request, secret: str = SECRET_KEY, hardened: bool = False
) -> dict:
    auth = request.headers.get("authorization", "")
    try:
        viewer = jwt.decode(auth.removeprefix("Bearer "), secret, algorithms=["HS256"]).get("sub")
    except jwt.PyJWTError:
        viewer = None
    result = graphql_sync(
        schema,
        str(payload.get("query") or ""),
        variable_values=payload.get("variables"),
        context_value={"viewer": viewer},
    )
    out: dict[str, Any] = {"data": result.data}
    if result.errors:
        errs = []
        for e in result.errors:
            item = e.formatted
            if e.original_error is not None and not hardened:  # DEBUG = True in settings.py
                item["extensions"] = {
                    "exception": {
                        "type": type(e.original_error).__name__,
                        "stacktrace": traceback.format_exception(e.original_error),
                    }
                }
            errs.append(item)
        out["errors"] = errs
    return out


def _schema(engine, secret: str = SECRET_KEY, hardened: bool = False) -> GraphQLSchema:
    def rows(sql: str, *args: Any) -> list[dict]:
        with engine.connect() as c:
            return [dict(r._mapping) for r in c.exec_driver_sql(sql, args).all()]

    def owner_of(paste, info):
        found = rows("SELECT id, username, bio FROM users WHERE id = ?", paste["owner_id"])
        return found[0] if found else None

    def pastes_of(user, info):
        return rows("SELECT id, title, body, public, owner_id FROM notes WHERE owner_id = ?", user["id"])

    user_t: GraphQLObjectType
    paste_t = GraphQLObjectType(
        "Paste",
        lambda: {
            "id": GraphQLField(GraphQLInt),
            "title": GraphQLField(GraphQLString),
            "content": GraphQLField(GraphQLString, resolve=lambda p, i: p["body"]),
            "public": GraphQLField(GraphQLBoolean),
            "owner": GraphQLField(user_t, resolve=owner_of),
        },
    )
    user_t = GraphQLObjectType(
        "User",
        lambda: {
            "id": GraphQLField(GraphQLInt),
            "username": GraphQLField(GraphQLString),
            "bio": GraphQLField(GraphQLString),
            "pastes": GraphQLField(GraphQLList(paste_t), resolve=pastes_of),
        },
    )

    def r_pastes(_, info, filter: str | None = None, limit: int = 50):  # noqa: A002
        if hardened:
            return rows(
                "SELECT id, title, body, public, owner_id FROM notes WHERE public = 1 AND title LIKE ? "
                "ORDER BY id DESC LIMIT ?",
                f"%{filter or ''}%",
                int(limit),
            )
        where = "public = 1" + (f" AND title LIKE '%{filter}%'" if filter else "")
        return rows(
            f"SELECT id, title, body, public, owner_id FROM notes WHERE {where} ORDER BY id DESC LIMIT {int(limit)}"
        )

    def r_paste(_, info, id: int):  # noqa: A002
        found = rows("SELECT id, title, body, public, owner_id FROM notes WHERE id = ?", id)
        return found[0] if found else None

    def r_diagnostics(_, info, host: str):
        if hardened:
            proc = subprocess.run(["getent", "hosts", host], capture_output=True, text=True, timeout=8)
        else:
            proc = subprocess.run(f"getent hosts {host}", shell=True, capture_output=True, text=True, timeout=8)  # noqa: S602
        return (proc.stdout + proc.stderr).strip() or "no answer"

    def r_create(_, info, title: str, content: str, public: bool = True):
        owner = rows("SELECT id FROM users WHERE username = ?", info.context["viewer"] or "bob")
        with engine.begin() as c:
            c.exec_driver_sql(
                "INSERT INTO notes (title, body, public, owner_id) VALUES (?, ?, ?, ?)",
                (
                    html.escape(title) if hardened else title,
                    html.escape(content) if hardened else content,
                    public,
                    owner[0]["id"] if owner else 1,
                ),
            )
        return rows("SELECT id, title, body, public, owner_id FROM notes ORDER BY id DESC LIMIT 1")[0]

    def r_import(_, info, url: str):
        if hardened and not url.startswith("https://pastes.example.com/"):
            raise ValueError("imports only from pastes.example.com")
        with urllib.request.urlopen(url, timeout=3) as r:  # noqa: S310
            content = r.read(100_000).decode("utf-8", "replace")
        return r_create(_, info, title="imported", content=content, public=False)

    def r_login(_, info, username: str, password: str):
        found = rows("SELECT id, username, password FROM users WHERE username = ?", username)
        if not found or found[0]["password"] != password:
            raise ValueError("invalid credentials")
        now = int(time.time())
        return jwt.encode({"sub": username, "exp": now + 1800}, secret, algorithm="HS256")

    def r_about(_, info):
        return html.escape("Notes 0.9")

    query = GraphQLObjectType(
        "Query",
        {
            "pastes": GraphQLField(
                GraphQLList(paste_t),
                args={"filter": GraphQLArgument(GraphQLString), "limit": GraphQLArgument(GraphQLInt)},
                resolve=r_pastes,
            ),
            "paste": GraphQLField(paste_t, args={"id": GraphQLArgument(GraphQLNonNull(GraphQLInt))}, resolve=r_paste),
            "users": GraphQLField(
                GraphQLList(user_t), resolve=lambda _, i: rows("SELECT id, username, bio FROM users")
            ),
            "about": GraphQLField(GraphQLString, resolve=r_about),
        },
    )
    mutation = GraphQLObjectType(
        "Mutation",
        {
            "createPaste": GraphQLField(
                paste_t,
                args={
                    "title": GraphQLArgument(GraphQLNonNull(GraphQLString)),
                    "content": GraphQLArgument(GraphQLNonNull(GraphQLString)),
                    "public": GraphQLArgument(GraphQLBoolean),
                },
                resolve=r_create,
            ),
            "importPaste": GraphQLField(
                paste_t, args={"url": GraphQLArgument(GraphQLNonNull(GraphQLString))}, resolve=r_import
            ),
            "diagnostics": GraphQLField(
                GraphQLString, args={"host": GraphQLArgument(GraphQLNonNull(GraphQLString))}, resolve=r_diagnostics
            ),
            "login": GraphQLField(
                GraphQLString,
                args={
                    "username": GraphQLArgument(GraphQLNonNull(GraphQLString)),
                    "password": GraphQLArgument(GraphQLNonNull(GraphQLString)),
                },
                resolve=r_login,
            ),
        },
    )
    return GraphQLSchema(query, mutation)
