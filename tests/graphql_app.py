"""A real GraphQL upstream for the tests, on graphql-core.

Besides users, it has resolvers that fail the way real servers fail, with the error shapes
their frameworks produce (the guard's masked errors are tested against them): `pastes` runs
real SQL on SQLite with the filter pasted into it (graphene shape: the driver's message and a
path), `crash` raises in Python (Apollo Server in development: `extensions.exception.stacktrace`),
`javaError` (graphql-java: the Java exception in the message, `classification`), `nodeError`
(a Node TypeError with frames), `secretLeak` (a DSN and a password in the message), `notFound`
and `forbidden` (deliberate errors with a code). A GET that accepts text/html, or the paths
`/graphiql` and `/playground`, get IDE pages, as express-graphql and Apollo serve them.
"""

from __future__ import annotations

import json
import sqlite3
import traceback

from graphql import GraphQLError, build_schema, graphql
from upstream_app import read_body

SDL = """
type Query {
  users(first: Int): [User!]!
  user(id: ID!): User
  hello: String
  pastes(filter: String): [Paste!]!
  crash: String
  javaError: String
  nodeError: String
  secretLeak: String
  notFound: String
  forbidden: String
  big(size: Int!): String
}
type Paste { id: ID! title: String }
type Mutation { addUser(name: String!): User }
type User { id: ID! name: String email: String friends(first: Int): [User!]! }
"""
schema = build_schema(SDL)
USERS = [{"id": str(i), "name": f"user{i}", "email": f"u{i}@example.com"} for i in range(5)]


class Root:
    @staticmethod
    def users(info, first=None):
        return [dict(u, friends=lambda info, first=None: USERS[: first or 2]) for u in USERS[: first or len(USERS)]]

    @staticmethod
    def user(info, id):
        return next((dict(u, friends=lambda info, first=None: USERS[:2]) for u in USERS if u["id"] == id), None)

    hello = "world"

    @staticmethod
    def pastes(info, filter=None):
        db = sqlite3.connect(":memory:")
        db.execute("CREATE TABLE pastes (id INTEGER PRIMARY KEY, title TEXT)")
        db.executemany("INSERT INTO pastes (title) VALUES (?)", [("first",), ("second",)])
        sql = "SELECT id, title FROM pastes" + (f" WHERE title = '{filter}'" if filter else "")
        return [{"id": r[0], "title": r[1]} for r in db.execute(sql)]  # injectable on purpose

    @staticmethod
    def crash(info):
        return {}["missing"]  # KeyError, with a Python stack trace

    @staticmethod
    def javaError(info):
        raise GraphQLError(
            "Exception while fetching data (/javaError) : java.lang.NullPointerException: Cannot invoke "
            '"String.length()" because "name" is null',
            extensions={"classification": "DataFetchingException"},
        )

    @staticmethod
    def nodeError(info):
        raise GraphQLError(
            "Cannot read properties of undefined (reading 'id')",
            extensions={
                "code": "INTERNAL_SERVER_ERROR",
                "stacktrace": [
                    "TypeError: Cannot read properties of undefined (reading 'id')",
                    "    at Query.nodeError (/srv/app/src/resolvers.js:42:17)",
                ],
            },
        )

    @staticmethod
    def secretLeak(info):
        raise RuntimeError("could not connect to postgresql://app:s3cr3t-pw@db.internal:5432/prod password=hunter2")

    @staticmethod
    def big(info, size):
        return "x" * size

    @staticmethod
    def notFound(info):
        raise GraphQLError("Paste 42 not found", extensions={"code": "NOT_FOUND"})

    @staticmethod
    def forbidden(info):
        raise GraphQLError("You may not read this paste", extensions={"code": "FORBIDDEN", "reason": "owner"})

    @staticmethod
    def addUser(info, name):
        return {"id": "new", "name": name, "email": None}


RECEIVED: list[dict] = []

GRAPHIQL = b"""<!DOCTYPE html><html><head><title>GraphiQL</title>
<link href="https://unpkg.com/graphiql/graphiql.min.css" rel="stylesheet" /></head>
<body><div id="graphiql">Loading...</div><script src="https://unpkg.com/graphiql/graphiql.min.js"></script>
</body></html>"""
PLAYGROUND = b"""<!DOCTYPE html><html><head><meta charset=utf-8/><title>GraphQL Playground</title>
<script src="//cdn.jsdelivr.net/npm/graphql-playground-react/build/static/js/middleware.js"></script>
</head><body><div id="root"></div></body></html>"""


def _error(e: GraphQLError) -> dict:
    """As the frameworks format them: graphql-core's shape (graphene's, for the SQL error), plus
    Apollo's development-mode `exception.stacktrace` for another unexpected exception."""
    out = e.formatted
    original = e.original_error
    if original is not None and not isinstance(original, (GraphQLError, sqlite3.Error)):
        out["extensions"] = {
            "code": "INTERNAL_SERVER_ERROR",
            "exception": {"stacktrace": traceback.format_exception(original)},
        }
    return out


async def _send(send, status: int, ctype: bytes, data: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    from urllib.parse import parse_qs

    body = await read_body(receive)
    headers = dict(scope["headers"])
    if scope["path"].rstrip("/").endswith(("/graphiql", "/playground")):
        page = GRAPHIQL if scope["path"].rstrip("/").endswith("/graphiql") else PLAYGROUND
        return await _send(send, 200, b"text/html; charset=utf-8", page)
    if scope["method"] == "GET" and (
        headers.get(b"accept", b"").startswith(b"text/html") or b"x-always-ide" in headers
    ):
        return await _send(send, 200, b"text/html; charset=utf-8", GRAPHIQL)  # express-graphql's graphiql
    if headers.get(b"x-break-context"):  # Apollo: an exception while building the context
        doc = {"errors": [{"message": "Context creation failed: connect ECONNREFUSED 10.0.0.5:5432"}]}
        return await _send(send, 200, b"application/json", json.dumps(doc).encode())
    # lenient, as express-graphql and many servers are: a query in the URL wins, whatever the
    # method; a POST body may be JSON, application/graphql text or a form (by Content-Type)
    url = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    ctype = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip()
    batch = False
    if scope["method"] == "GET" or "query" in url:
        ops = [{"query": url.get("query", "")}]
    elif ctype == b"application/graphql":
        ops = [{"query": body.decode()}]
    elif ctype == b"application/x-www-form-urlencoded":
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        ops = [{"query": form.get("query", "")}]
    else:
        doc = json.loads(body)
        batch = isinstance(doc, list)
        ops = doc if batch else [doc]
    results = []
    for op in ops:
        RECEIVED.append(op)
        if "query" not in op:
            results.append({"errors": [{"message": "PersistedQueryNotSupported"}]})
            continue
        r = await graphql(
            schema,
            op["query"],
            root_value=Root,
            variable_values=op.get("variables"),
            operation_name=op.get("operationName"),
        )
        out = {"data": r.data}
        if r.errors:
            out["errors"] = [_error(e) for e in r.errors]
        results.append(out)
    await _send(send, 200, b"application/json", json.dumps(results if batch else results[0]).encode())
