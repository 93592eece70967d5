"""GraphQL operations read from an HTTP request the way GraphQL servers read them.

GET `?query=`, POST `application/json` (one operation or a batch array), POST
`application/graphql` (the body is the query) and POST `application/x-www-form-urlencoded`.
Anything that cannot be read unambiguously is refused (`GraphQLRefusal`), never passed: a GET
with a body, a POST that also names the operation in its URL, a parameter or JSON key given
twice, another media type.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson

from bastion import bodies
from bastion.http import Request

PARAMS = ("query", "operationName", "variables", "extensions")
_MEDIA = ("application/json", "application/graphql", "application/x-www-form-urlencoded")


class GraphQLRefusal(Exception):
    """A request the guard refuses: HTTP status, GraphQL error code, message for the client,
    and the protection that refused it (None for shape errors)."""

    def __init__(self, status: int, code: str, message: str, protection: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.protection = status, code, message, protection


def bad(message: str) -> GraphQLRefusal:
    return GraphQLRefusal(400, "BAD_REQUEST", message)


async def read_operations(req: Request, ctx: Any) -> tuple[list[dict[str, Any]], bool, bool]:
    """(operations, simple, batch). `simple` is True for requests a browser sends cross-site
    without a preflight (GET, forms): they may not carry mutations (CSRF)."""
    ct = bodies.content_type(req)  # ambiguous Content-Types are refused for every method
    if req.method == "GET":
        if req.has_body():
            raise bad("a GET request carries its query in the URL, not in a body")
        return [form_operation(req.query, "the URL")], True, False
    if req.method != "POST":
        raise GraphQLRefusal(405, "METHOD_NOT_ALLOWED", "GraphQL accepts GET and POST")
    in_url = url_params(req.query) & set(PARAMS)
    if in_url:
        raise bad(f"{sorted(in_url)[0]} is in the URL of a POST: send the operation in the body only")
    media = ct.media if ct is not None else ""
    if media not in _MEDIA:
        raise GraphQLRefusal(
            415, "UNSUPPORTED_MEDIA_TYPE", "send GraphQL requests as application/json (or application/graphql)"
        )
    body = await bodies.read_body(req, ctx)
    if media == "application/graphql":
        try:
            return [{"query": body.decode("utf-8")}], False, False
        except UnicodeDecodeError:
            raise bad("the query is not valid UTF-8") from None
    if media == "application/x-www-form-urlencoded":
        return [form_operation(body, "the form")], True, False
    return _json(body)


def url_params(query: bytes) -> set[str]:
    """The (decoded) parameter names of a query string."""
    return {k for k, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)}


def _json(body: bytes) -> tuple[list[dict[str, Any]], bool, bool]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad("the body is not valid JSON") from None
    bodies.check_json_unique(body)
    if isinstance(doc, list):
        if not doc or not all(isinstance(x, dict) for x in doc):
            raise bad("a batch is a non-empty array of operations")
        return doc, False, True
    if not isinstance(doc, dict):
        raise bad("the body must be a JSON object")
    return [doc], False, False


def form_operation(data: bytes, where: str) -> dict[str, Any]:
    """One operation from urlencoded parameters (a GET's query string or a form body)."""
    try:
        pairs = parse_qsl(data.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise bad(f"{where} is not valid UTF-8") from None
    params: dict[str, str] = {}
    for k, v in pairs:
        if k in params and k in PARAMS:
            raise bad(f"{k} is given twice in {where}")
        params[k] = v
    op: dict[str, Any] = {"query": params.get("query")}
    for key in ("variables", "extensions"):
        if params.get(key):
            try:
                op[key] = orjson.loads(params[key])
            except orjson.JSONDecodeError:
                raise bad(f"{key} is not valid JSON") from None
    if params.get("operationName"):
        op["operationName"] = params["operationName"]
    return op
