"""A small writers' forum the way a team puts one behind a single-page app: FastAPI for the login,
graphql-core for everything else, an in-memory store. Drafts are private to their author; the
feed and the profiles show published posts (and the viewer's own drafts). Nothing in it is written
for the scanner. Never run it anywhere but 127.0.0.1.

TRUTH (written before the scanner was run on it; (check, path)):

  graphql-bola              /graphql     post(id:) returns another author's draft: the feed and
                                         User.posts hide drafts from others, the by-id field forgets to
  graphql-enumeration       /graphql     signIn says "no account with that name" vs "wrong password"
  graphql-bruteforce        /graphql     signIn(username, password) is never throttled
  graphql-path-traversal    /graphql     attachment(name:) reads <attachments dir>/<name>: ../../… reads
                                         any file the process can (added with its check, after the
                                         first run: the rest of the table predates the scan)
  graphql-code-bruteforce   /graphql     resetPassword(input: JSON): the 6-digit code is never locked
  graphql-operator-injection /graphql    resetPassword's input goes to the store's filter helper, which
                                         takes {"ne": …} operators (the admin UI's): any pending code
                                         (these two also added with their check, after the first run)
  graphql-depth             /graphql     Post.author → User.posts → Post.author …, no depth limit, and
                                         every turn multiplies the work (3 posts per author)
  graphql-introspection     /graphql     on
  graphql-suggestions       /graphql     graphql-core's "Did you mean"
  graphql-aliases           /graphql     no alias limit
  graphql-field-duplication /graphql     no limit
  api2-no-bruteforce        /auth/login  the REST login is not throttled either
  api8-headers              *            no security headers
  api4-body-size            *            no body limit

Found missing on the first run and moved out of the scored table (true, but the scanner cannot see
it here): api4-no-rate-limit — nothing is rate limited, but the check bursts a documented GET and
this API has none; the GraphQL endpoint is not burst-tested.

NOT vulnerable, and what makes the new checks' precision testable:
  signUp(username, password) creates an account: twelve sign-ups are not twelve password guesses
  (it comes before signIn in the schema, so a check that takes any call with a user name and a
  password meets it first); user(id:) is a public profile by design (the same for everyone).

`create_app(hardened=True)` is its twin with the bugs fixed in code: post(id:) hides other
authors' drafts, signIn answers one message and locks a name after 5 failures ("too many
attempts"), so does the REST login (429), resetPassword takes strings only and locks a name after
5 wrong codes, attachment(name:) stays inside its folder, queries deeper than 8 levels are refused. signUp and user(id:) are unchanged.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from graphql import (
    FieldNode,
    GraphQLArgument,
    GraphQLBoolean,
    GraphQLError,
    GraphQLField,
    GraphQLID,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLString,
    OperationDefinitionNode,
    graphql_sync,
    parse,
    value_from_ast_untyped,
)
from pydantic import BaseModel

PASSWORDS = {"alice": "alice-writes-1", "bob": "bob-writes-2"}
SCAN_LOGINS = [
    {"name": n, "username": n, "path": "/auth/login", "json": {"username": n, "password": p}, "token": "access_token"}
    for n, p in PASSWORDS.items()
]
MAX_DEPTH = 8  # the twin's limit


class Login(BaseModel):
    username: str
    password: str


def _depth(node: Any, level: int = 0) -> int:
    """Selection depth, introspection left out (as graphql-depth-limit's `ignore` is used: the
    web app's tooling reads the schema)."""
    sel = getattr(node, "selection_set", None)
    if sel is None:
        return level
    return max(
        (
            _depth(s, level + 1)
            for s in sel.selections
            if isinstance(s, FieldNode) and not s.name.value.startswith("__")
        ),
        default=level,
    )


JSON = GraphQLScalarType(
    "JSON",
    serialize=lambda v: v,
    parse_value=lambda v: v,
    parse_literal=lambda node, variables=None: value_from_ast_untyped(node, variables),
)


def matches(record: dict[str, Any], where: dict[str, Any]) -> bool:
    """The store's filter helper, written for the admin UI's search: a value, or an operator
    object ({"ne": x}, {"gt": x}, {"lt": x})."""
    for key, cond in where.items():
        value = record.get(key)
        if isinstance(cond, dict):
            for op, x in cond.items():
                if (
                    (op == "ne" and value == x)
                    or (op == "gt" and not (value is not None and value > x))
                    or (op == "lt" and not (value is not None and value < x))
                ):
                    return False
        elif value != cond:
            return False
    return True


def create_app(hardened: bool = False) -> FastAPI:
    users: dict[str, dict[str, Any]] = {}
    posts: dict[str, dict[str, Any]] = {}
    tokens: dict[str, str] = {}
    failures: dict[str, int] = {}

    def add_user(name: str, password: str) -> dict[str, Any]:
        user = {"id": str(len(users) + 1), "username": name, "password": password}
        users[user["id"]] = user
        return user

    def add_post(author: dict[str, Any], title: str, published: bool) -> None:
        pid = str(100 + len(posts))
        posts[pid] = {"id": pid, "title": title, "body": f"{title}…", "published": published, "author": author["id"]}

    alice, bob = add_user("alice", PASSWORDS["alice"]), add_user("bob", PASSWORDS["bob"])
    alice["reset_code"] = f"{secrets.randbelow(1_000_000):06d}"  # she asked for one and never used it
    for author in (alice, bob, add_user("carol", "carol-writes-3")):
        for n in range(3):
            add_post(author, f"{author['username']}'s post {n}", True)
    add_post(alice, "unfinished: my resignation letter", False)
    add_post(bob, "draft: surprise party plans", False)

    attachments = Path(tempfile.mkdtemp(prefix="forum-attachments-"))
    (attachments / "style-guide.md").write_text("# House style\nShort sentences.\n")
    (attachments / "code-of-conduct.md").write_text("# Be kind\n")

    def r_attachment(_, info, name: str) -> str:
        path = attachments / name
        if hardened and not path.resolve().is_relative_to(attachments.resolve()):
            raise GraphQLError("no such attachment")
        return path.read_text()

    def r_reset(_, info, input: Any):  # noqa: A002
        if not isinstance(input, dict) or any(k not in input for k in ("username", "code", "newPassword")):
            raise GraphQLError("resetPassword needs `username`, `code` and `newPassword`")
        name, code = input["username"], input["code"]
        if hardened:
            if not isinstance(name, str) or not isinstance(code, str):
                raise GraphQLError("username and code are strings")
            if failures.get("reset:" + name, 0) >= 5:
                raise GraphQLError("too many attempts, try again later")
        user = next(
            (
                u
                for u in users.values()
                if matches({"username": u["username"], "code": u.get("reset_code")}, {"username": name, "code": code})
            ),
            None,
        )
        if user is None:
            failures["reset:" + str(name)] = failures.get("reset:" + str(name), 0) + 1
            raise GraphQLError("that code is not valid")
        user["password"], user["reset_code"] = str(input["newPassword"]), None
        return user

    def visible(post: dict[str, Any], viewer: dict[str, Any] | None) -> bool:
        return post["published"] or (viewer is not None and viewer["id"] == post["author"])

    def viewer_of(info) -> dict[str, Any] | None:
        return info.context["viewer"]

    user_t: GraphQLObjectType
    post_t = GraphQLObjectType(
        "Post",
        lambda: {
            "id": GraphQLField(GraphQLID),
            "title": GraphQLField(GraphQLString),
            "body": GraphQLField(GraphQLString),
            "published": GraphQLField(GraphQLBoolean),
            "author": GraphQLField(user_t, resolve=lambda p, i: users.get(p["author"])),
        },
    )
    user_t = GraphQLObjectType(
        "User",
        lambda: {
            "id": GraphQLField(GraphQLID),
            "username": GraphQLField(GraphQLString),
            "posts": GraphQLField(
                GraphQLList(post_t),
                resolve=lambda u, i: [p for p in posts.values() if p["author"] == u["id"] and visible(p, viewer_of(i))],
            ),
        },
    )

    def r_post(_, info, id: str):  # noqa: A002
        post = posts.get(id)
        if post is None or (hardened and not visible(post, viewer_of(info))):
            return None
        return post

    def r_sign_up(_, info, username: str, password: str):
        if any(u["username"] == username for u in users.values()):
            raise GraphQLError("that name is taken")
        return add_user(username, password)

    def r_sign_in(_, info, username: str, password: str):
        user = next((u for u in users.values() if u["username"] == username), None)
        if hardened:
            if failures.get(username, 0) >= 5:
                raise GraphQLError("too many attempts, try again later")
            if user is None or user["password"] != password:
                failures[username] = failures.get(username, 0) + 1
                raise GraphQLError("wrong name or password")
        elif user is None:
            raise GraphQLError("no account with that name")
        elif user["password"] != password:
            raise GraphQLError("wrong password")
        token = secrets.token_urlsafe(16)
        tokens[token] = user["id"]
        return token

    schema = GraphQLSchema(
        GraphQLObjectType(
            "Query",
            {
                "me": GraphQLField(user_t, resolve=lambda _, i: viewer_of(i)),
                "feed": GraphQLField(
                    GraphQLList(post_t), resolve=lambda _, i: [p for p in posts.values() if visible(p, viewer_of(i))]
                ),
                "users": GraphQLField(GraphQLList(user_t), resolve=lambda _, i: list(users.values())),
                "user": GraphQLField(
                    user_t,
                    args={"id": GraphQLArgument(GraphQLNonNull(GraphQLID))},
                    resolve=lambda _, i, id: users.get(id),
                ),
                "post": GraphQLField(post_t, args={"id": GraphQLArgument(GraphQLNonNull(GraphQLID))}, resolve=r_post),
                "attachment": GraphQLField(
                    GraphQLString, args={"name": GraphQLArgument(GraphQLNonNull(GraphQLString))}, resolve=r_attachment
                ),
            },
        ),
        GraphQLObjectType(
            "Mutation",
            {
                "signUp": GraphQLField(
                    user_t,
                    args={
                        "username": GraphQLArgument(GraphQLNonNull(GraphQLString)),
                        "password": GraphQLArgument(GraphQLNonNull(GraphQLString)),
                    },
                    resolve=r_sign_up,
                ),
                "resetPassword": GraphQLField(user_t, args={"input": GraphQLArgument(JSON)}, resolve=r_reset),
                "signIn": GraphQLField(
                    GraphQLString,
                    args={
                        "username": GraphQLArgument(GraphQLNonNull(GraphQLString)),
                        "password": GraphQLArgument(GraphQLNonNull(GraphQLString)),
                    },
                    resolve=r_sign_in,
                ),
            },
        ),
    )

    app = FastAPI(title="Forum", version="1.2.0")

    @app.post("/auth/login")
    def login(body: Login):
        user = next((u for u in users.values() if u["username"] == body.username), None)
        if hardened and failures.get(body.username, 0) >= 5:
            raise HTTPException(429, "too many attempts, try again later")
        if user is None or user["password"] != body.password:
            failures[body.username] = failures.get(body.username, 0) + 1
            raise HTTPException(401, "wrong name or password")
        token = secrets.token_urlsafe(16)
        tokens[token] = user["id"]
        return {"access_token": token, "token_type": "bearer"}

    @app.post("/graphql")
    async def graphql_post(request: Request):
        try:
            payload = await request.json()
        except ValueError:
            return JSONResponse({"errors": [{"message": "POST body sent invalid JSON."}]}, 400)
        query = str(payload.get("query") or "") if isinstance(payload, dict) else ""
        if hardened:
            try:
                deepest = max(
                    (_depth(d) for d in parse(query).definitions if isinstance(d, OperationDefinitionNode)), default=0
                )
            except GraphQLError as exc:
                return JSONResponse({"errors": [{"message": exc.message}]}, 400)
            if deepest > MAX_DEPTH:
                return JSONResponse(
                    {"errors": [{"message": f"query is {deepest} levels deep, at most {MAX_DEPTH}"}]}, 400
                )
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        viewer = users.get(tokens.get(token, ""))
        result = graphql_sync(
            schema,
            query,
            variable_values=payload.get("variables") if isinstance(payload, dict) else None,
            context_value={"viewer": viewer},
        )
        out: dict[str, Any] = {"data": result.data}
        if result.errors:
            out["errors"] = [e.formatted for e in result.errors]
        return JSONResponse(out)

    return app
