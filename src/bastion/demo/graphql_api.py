"""The demo's GraphQL API (graphql-core), served by the demo upstream at /graphql.

As naive as the REST side: introspection on, "Did you mean" suggestions, no depth or cost limit,
a `friends` field that nests without end. The gateway's GraphQL guard is what makes it safe."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson
from graphql import build_schema, graphql

SDL = """
type Query {
  users(first: Int): [User!]!
  user(id: ID!): User
}
type Mutation {
  placeOrder(userId: ID!, item: String!): Order
}
type User {
  id: ID!
  username: String!
  email: String
  orders: [Order!]!
  friends(first: Int): [User!]!
}
type Order {
  id: ID!
  item: String!
  total: Float!
}
"""
SCHEMA = build_schema(SDL)


def _user(u: dict[str, Any], users: dict[str, Any], orders: dict[str, list]) -> dict[str, Any]:
    return {
        **u,
        "orders": orders.get(u["id"], []),
        "friends": lambda info, first=None: [_user(f, users, orders) for f in list(users.values())[: first or 2]],
    }


async def handle(scope, body: bytes, users: dict[str, Any], orders: dict[str, list]) -> tuple[int, bytes]:
    """(status, JSON body) for one GraphQL request (GET ?query= or POST JSON)."""
    if scope["method"] == "GET":
        q = parse_qs(scope.get("query_string", b"").decode())
        doc: Any = {"query": q.get("query", [""])[0]}
    else:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 400, orjson.dumps({"errors": [{"message": "invalid JSON"}]})
    batch = isinstance(doc, list)
    out = []
    for op in doc if batch else [doc]:
        if not isinstance(op, dict) or not isinstance(op.get("query"), str):
            out.append({"errors": [{"message": "no query"}]})
            continue
        root = {
            "users": lambda info, first=None: [
                _user(u, users, orders) for u in list(users.values())[: first or len(users)]
            ],
            "user": lambda info, id: _user(users[id], users, orders) if id in users else None,
            "placeOrder": lambda info, userId, item: {"id": "o-new", "item": item, "total": 0.0},
        }
        r = await graphql(
            SCHEMA,
            op["query"],
            root_value=root,
            variable_values=op.get("variables"),
            operation_name=op.get("operationName"),
        )
        item: dict[str, Any] = {"data": r.data}
        if r.errors:
            item["errors"] = [{"message": e.message} for e in r.errors]
        out.append(item)
    return 200, orjson.dumps(out if batch else out[0])
