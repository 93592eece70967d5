"""A real GraphQL upstream for the tests, on graphql-core."""

from __future__ import annotations

import json

from graphql import build_schema, graphql
from upstream_app import read_body

SDL = """
type Query {
  users(first: Int): [User!]!
  user(id: ID!): User
  hello: String
}
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
    def addUser(info, name):
        return {"id": "new", "name": name, "email": None}


RECEIVED: list[dict] = []


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    from urllib.parse import parse_qs

    body = await read_body(receive)
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
            out["errors"] = [{"message": e.message} for e in r.errors]
        results.append(out)
    data = json.dumps(results if batch else results[0]).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})
