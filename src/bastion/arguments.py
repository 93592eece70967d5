"""A request's API inputs as a flat list of named scalar values: path parameters, query
parameters, body values (JSON leaves, form fields) and, for GraphQL, each operation's literal
argument values and variables, never the query text.

Policies that judge inputs by value (the WAF, the SSRF guard) use this one reading, computed once
per request (cached in the Context), instead of each parsing the body and the GraphQL document
its own way.

Names are dotted: a path parameter `id`; a query parameter `q`; a JSON body leaf
`user.address.url`, array items `items.0.url` (a top-level scalar body: ``""``); a form field
its name; a GraphQL literal argument `pastes.filter`, nested input objects
`pastes.filter.title`, aliases resolved to the field's name (see `bastion.graphql.arguments`);
variables `variables.limit`, `variables.input.url`. A GraphQL request's other top-level members
(`operationName`, `extensions`, unknown keys) are body values under their own names.

GraphQL requests (`graphql=None` decides from the request): a GET or a form with a `query`
parameter, an `application/graphql` body, or a JSON object (or a batch: an array of them) with a
`query` string or an `extensions.persistedQuery`. A document the guard's parser cannot read is
not guessed at: its text is in `ApiInputs.unparsed`, for the caller to inspect as text or refuse.

Multipart bodies: their text fields (named parts without a filename) are body values by their
field names, as a form's; a GraphQL multipart request (file uploads: an `operations` field with
the JSON operation) is read as GraphQL. File parts are not read. Bodies of any other type
(`application/octet-stream`, `image/png`, ...) are read as the JSON or form they look like, as an
untyped body is: lenient servers parse JSON whatever its declared type.

Not read: XML bodies (the WAF inspects those itself; their values have no dotted names here).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson

from bastion import bodies
from bastion.graphql.arguments import document_arguments, leaves, variable_uses
from bastion.graphql.document import Document, GraphQLSyntaxError
from bastion.graphql.parser import parse
from bastion.http import Request

Source = Literal["path", "query", "body", "graphql", "variables"]
Scalar = str | int | float | bool | None
GRAPHQL_PARAMS = frozenset({"query", "variables", "operationName", "extensions"})
METHODS_WITHOUT_BODY = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_CACHE = "arguments"


@dataclass(frozen=True, slots=True)
class Argument:
    source: Source
    name: str
    value: Scalar


@dataclass(slots=True)
class ApiInputs:
    """Everything `api_arguments` learned: the arguments, whether the request was read as
    GraphQL, and the GraphQL documents (texts) that did not parse."""

    arguments: list[Argument] = field(default_factory=list)
    graphql: bool = False
    unparsed: list[str] = field(default_factory=list)
    # variables' values again, named by the argument each is bound to (`importPaste.host` for
    # `importPaste(host: $h)`): the variable's name is the client's choice, the argument's is not
    bound: list[Argument] = field(default_factory=list)


async def api_arguments(
    req: Request, ctx: Any, *, graphql: bool | None = None, max_body: int = bodies.DEFAULT_LIMIT
) -> list[Argument]:
    """The request's API inputs (see the module's doc). Raises `bodies.BodyRefused` for a body
    that cannot be read safely (ambiguous type, bad coding, over `max_body`), and what
    `Request.read_body` raises."""
    return (await api_inputs(req, ctx, graphql=graphql, max_body=max_body)).arguments


async def api_inputs(
    req: Request, ctx: Any, *, graphql: bool | None = None, max_body: int = bodies.DEFAULT_LIMIT
) -> ApiInputs:
    """`api_arguments` with what else was learned (`ApiInputs`); cached per request and per
    `graphql` choice, so two policies on one request parse once (the first call's `max_body`
    applies)."""
    cache: dict[bool | None, ApiInputs] = ctx.values.setdefault(_CACHE, {})
    found = cache.get(graphql)
    if found is not None:
        return found
    inputs = await _read(req, ctx, graphql, max_body)
    cache[graphql] = inputs
    if graphql is None:
        cache.setdefault(inputs.graphql, inputs)
    return inputs


def operation_inputs(op: dict[str, Any]) -> ApiInputs:
    """The inputs of one GraphQL operation payload (`query`, `variables`, ...) that arrived
    outside an HTTP body, such as a `subscribe` message on a WebSocket."""
    inputs = ApiInputs(graphql=True)
    _operation(op, inputs)
    return inputs


async def _read(req: Request, ctx: Any, graphql: bool | None, max_body: int) -> ApiInputs:
    inputs = ApiInputs()
    out = inputs.arguments
    out.extend(Argument("path", k, v) for k, v in req.path_params.items())
    pairs = parse_qsl(req.query.decode("latin-1"), keep_blank_values=True) if req.query else []
    body, ct = await _body(req, ctx, max_body)
    doc = _body_document(body, ct)
    # a non-JSON type whose Content-Type mentions JSON anywhere (`application/xml; x=/json`):
    # Laravel reads the body as JSON (`Request::isJson`), so its values are arguments too
    also_json = (
        _json_reading(body) if body and ct is not None and ct.kind != "json" and bodies.mentions_json(req) else None
    )
    if also_json is not None:
        out.extend(Argument("body", k, v) for k, v in leaves("", also_json))
    if graphql is None:
        graphql = _looks_graphql(pairs, doc)
    inputs.graphql = graphql
    if not graphql:
        out.extend(Argument("query", k, v) for k, v in pairs)
        if doc is not None and doc.kind == "form":
            out.extend(Argument("body", k, v) for k, v in doc.value)
        elif doc is not None:
            out.extend(Argument("body", k, v) for k, v in leaves("", doc.value))
        return inputs
    out.extend(Argument("query", k, v) for k, v in pairs if k not in GRAPHQL_PARAMS)
    operations: list[dict[str, Any]] = []
    if any(k in GRAPHQL_PARAMS for k, _ in pairs):
        operations.append(_form_operation(pairs))
    if doc is not None:
        if doc.kind == "graphql":
            operations.append({"query": doc.value})
        elif doc.kind == "form" and doc.upload:
            # the GraphQL multipart request: `operations` (an operation or a batch), `map`, files
            for k, v in doc.value:
                found = _upload_operations(v) if k == "operations" else None
                if found is not None:
                    operations.extend(found)
                elif k not in GRAPHQL_PARAMS:
                    out.append(Argument("body", k, v))
            if any(k in GRAPHQL_PARAMS for k, _ in doc.value):  # `query` as a field (multer + express-graphql)
                operations.append(_form_operation(doc.value))
        elif doc.kind == "form":
            operations.append(_form_operation(doc.value))
            out.extend(Argument("body", k, v) for k, v in doc.value if k not in GRAPHQL_PARAMS)
        else:
            for op in doc.value if isinstance(doc.value, list) else [doc.value]:
                if isinstance(op, dict):
                    operations.append(op)
                else:
                    out.extend(Argument("body", k, v) for k, v in leaves("", op))
    for op in operations:
        _operation(op, inputs)
    return inputs


@dataclass(slots=True)
class _Doc:
    kind: Literal["json", "form", "graphql"]
    value: Any  # parsed JSON; form pairs; the GraphQL text
    upload: bool = False  # form pairs from a multipart body's text fields


def _json_reading(body: bytes) -> Any:
    try:
        return _loads(body)
    except ValueError:
        return None


def _upload_operations(text: str) -> list[dict[str, Any]] | None:
    """The operations of a GraphQL multipart request's `operations` field, or None when it is
    not one (or a batch of them)."""
    try:
        value = _loads(text)
    except ValueError:
        return None
    ops = value if isinstance(value, list) else [value]
    return ops if ops and all(_is_operation(op) for op in ops) else None


async def _body(req: Request, ctx: Any, max_body: int) -> tuple[bytes, bodies.ContentType | None]:
    if not req.has_body():  # a GET with a body is forwarded with it: read it too
        return b"", None
    ct = bodies.content_type(req)
    try:
        length = req.content_length()
    except ValueError:
        raise bodies.BodyRefused(400, "bad-request", "the Content-Length header is not a number") from None
    if length is not None and length > max_body:
        raise bodies.BodyRefused(413, "body-too-large", f"bodies over {max_body} bytes cannot be inspected")
    body = await bodies.read_body(req, ctx, limit=max_body)
    if len(body) > max_body:
        raise bodies.BodyRefused(413, "body-too-large", f"bodies over {max_body} bytes cannot be inspected")
    return body, ct


def _body_document(body: bytes, ct: bodies.ContentType | None) -> _Doc | None:
    """The body as JSON, form pairs or GraphQL text; None for an empty body, another type or
    one that does not parse as its type."""
    if not body:
        return None
    kind: str = ct.kind if ct is not None else "other"
    if kind == "multipart":
        if ct is None or ct.media != "multipart/form-data":
            return None
        return _Doc("form", bodies.multipart_fields(body, ct), upload=True)
    if kind == "other":
        kind = {"json": "json", "form": "form"}.get(bodies.sniff(body), "other")
        if kind == "other" and (body.startswith(b"\xef\xbb\xbf") or bodies.wide_text(body)):
            # a byte-order mark, UTF-16 or UTF-32: Python's json.loads(bytes) (Flask's
            # get_json(force=True)) reads them as JSON, so they are tried as JSON here too
            kind = "json"
    if kind == "json":
        try:
            value = _loads(body)
        except ValueError:
            return None
        bodies.check_json_unique(body)  # a key given twice: parsers disagree on which one wins
        return _Doc("json", value)
    if kind == "form":
        return _Doc("form", parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if kind == "graphql":
        return _Doc("graphql", body.decode("utf-8", "replace"))
    return None


def _is_operation(v: Any) -> bool:
    if not isinstance(v, dict):
        return False
    if isinstance(v.get("query"), str):
        return True
    ext = v.get("extensions")
    return isinstance(ext, dict) and isinstance(ext.get("persistedQuery"), dict)


def _looks_graphql(pairs: list[tuple[str, str]], doc: _Doc | None) -> bool:
    if any(k == "query" for k, _ in pairs) and doc is None:
        return True
    if doc is None:
        return False
    if doc.kind == "graphql":
        return True
    if doc.kind == "form":
        return any(
            k == "query" or (doc.upload and k == "operations" and _upload_operations(v) is not None)
            for k, v in doc.value
        )
    v = doc.value
    if isinstance(v, list):
        return bool(v) and all(_is_operation(x) for x in v)
    return _is_operation(v)


def _form_operation(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """One operation from urlencoded parameters; `variables`/`extensions` are JSON texts (kept
    as text when they are not JSON, so they are still inspected). A GraphQL parameter given
    twice is refused (400 `ambiguous-body`): servers differ on which one they keep."""
    op: dict[str, Any] = {}
    for k, v in pairs:
        if k not in GRAPHQL_PARAMS:
            continue
        if k in op:
            raise bodies.BodyRefused(400, "ambiguous-body", f"the GraphQL parameter {k} is given twice")
        op[k] = v
        if k in ("variables", "extensions") and v:
            try:
                op[k] = _loads(v)
            except ValueError:
                pass
    return op


def _operation(op: dict[str, Any], inputs: ApiInputs) -> None:
    out = inputs.arguments
    doc = None
    uses: dict[str, list[str]] = {}
    for key, value in op.items():
        if key == "query":
            if isinstance(value, str):
                try:
                    doc = parse(value, max_tokens=50_000)
                    out.extend(Argument("graphql", n, v) for n, v in document_arguments(doc, value))
                    uses = variable_uses(doc)
                except (GraphQLSyntaxError, RecursionError):
                    inputs.unparsed.append(value)
                    for name, var in _VARIABLE_USE.findall(value[:100_000]):
                        uses.setdefault(var, []).append(name)
            elif value is not None:
                out.extend(Argument("body", n, v) for n, v in leaves("query", value))
        elif key == "variables":
            out.extend(Argument("variables", n, v) for n, v in leaves("variables", _json_text(value)))
        elif key == "extensions":
            out.extend(Argument("body", n, v) for n, v in leaves("extensions", _json_text(value)))
        else:
            out.extend(Argument("body", n, v) for n, v in leaves(key, value))
    if uses:
        _bind(doc, uses, _json_text(op.get("variables")), inputs)


# `name: $variable` in a document the parser cannot read: the argument a variable is bound to
_VARIABLE_USE = re.compile(r"([_A-Za-z][_0-9A-Za-z]*)\s*:\s*\$\s*([_A-Za-z][_0-9A-Za-z]*)")


def _bind(doc: Document | None, uses: dict[str, list[str]], variables: Any, inputs: ApiInputs) -> None:
    """`inputs.bound`: each variable's value (or its default) under the names of the arguments
    it is used for."""
    given = variables if isinstance(variables, dict) else {}
    defaults: dict[str, Any] = {}
    for operation in doc.operations if doc is not None else ():
        defaults.update(operation.variable_defaults)
    for var, names in uses.items():
        values = [given[var]] if var in given else []
        if var in defaults:
            values.append(defaults[var])
        for name in names:
            for value in values:
                inputs.bound.extend(Argument("variables", n, v) for n, v in leaves(name, value))


def _json_text(value: Any) -> Any:
    """Variables (or extensions) sent as a JSON text inside the JSON body, as many servers accept:
    the decoded value, so its escapes (`\\u0027`) are undone; other text as it is."""
    if isinstance(value, str) and value.lstrip(" \t\r\n")[:1] in ("{", "["):
        try:
            return _loads(value)
        except ValueError:
            pass
    return value


def _loads(text: str | bytes) -> Any:
    """JSON as orjson reads it, else as Python's json does (NaN, Infinity, lone surrogate
    escapes: what Flask, Django or graphene-django still accept); ValueError when neither can."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            return json.loads(text)
        except RecursionError:
            raise ValueError("nested too deeply") from None
