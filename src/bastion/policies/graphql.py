"""GraphQL guard: depth, aliases, directives, tokens, size, root fields, cost, batching,
introspection, field suggestions, persisted queries, GET-only-for-queries, operation names.

Each rejection is a GraphQL-shaped error (`{"errors": [{"message", "extensions": {"code"}}]}`)
with a matching HTTP status, and the audit line carries the measured depth and cost. The
computed cost is left in the context, where a `rate_limit` of the same route charges it.
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion import bodies
from bastion.bodies import BodyRefused
from bastion.graphql import AnalysisError, CostModel, GraphQLSyntaxError, TokenLimit, analyze, parse
from bastion.graphql.persisted import MemoryQueryStore, RedisQueryStore, load_allowlist, sha256
from bastion.http import (
    BodyTimeout,
    BodyTooLarge,
    ClientDisconnected,
    NetworkSet,
    Request,
    Response,
    check_networks,
)
from bastion.pipeline import Context, Policy, PolicyConfig, WsMessage
from bastion.response_body import BodyInfo, Buffered, Unfilterable

Mode = Literal["off", "audit", "enforce"]
_SUGGESTION = re.compile(r"\s*Did you mean[^?]*\?", re.IGNORECASE)
_PARAMS = ("query", "operationName", "variables", "extensions")
_REFUSAL_CODES = {413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_depth: int | None = Field(10, ge=1, description="Deepest field nesting (fragments followed).")
    max_aliases: int | None = Field(15, ge=0, description="Aliased fields in the operation.")
    max_directives: int | None = Field(10, ge=0, description="Directives in the document.")
    max_tokens: int | None = Field(2000, ge=10, description="Lexical tokens in the document.")
    max_chars: int | None = Field(10_000, ge=10, description="Characters in the query text.")
    max_root_fields: int | None = Field(10, ge=1, description="Fields at the top of the operation.")
    max_cost: float | None = Field(1000, gt=0, description="Computed cost (see `costs`).")
    max_batch: int | None = Field(5, ge=1, description="Operations in one batched (array) request.")


class Costs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default_field_cost: float = Field(1.0, ge=0)
    fields: dict[str, float] = Field(default_factory=dict, description="`Type.field` or `field` → cost.")
    list_size_args: list[str] = Field(default_factory=lambda: ["first", "last", "limit"])
    default_list_size: int = Field(10, ge=1, description="Multiplier for a list field without a size argument.")
    max_list_size: int = Field(1000, ge=1)
    schema_file: str | None = Field(None, description="SDL schema: list fields and field types are read from it.")


class GraphQLGuardConfig(PolicyConfig):
    mode: Mode = Field("enforce", description="off, audit (log only) or enforce.")
    modes: dict[str, Mode] = Field(
        default_factory=dict,
        description="Per protection (depth, aliases, directives, tokens, chars, "
        "root_fields, cost, batch, introspection): overrides `mode`.",
    )
    limits: Limits = Field(default_factory=Limits)
    costs: Costs = Field(default_factory=Costs)
    introspection: bool = Field(False, description="Allow __schema / __type for everyone.")
    introspection_scopes: list[str] = Field(default_factory=list, description="Scopes that may introspect.")
    introspection_ips: list[str] = Field(default_factory=list, description="Networks that may introspect.")

    @field_validator("introspection_ips")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        return check_networks(values)

    strip_suggestions: bool = Field(True, description="Remove 'Did you mean …?' from upstream error messages.")
    persisted_queries: bool = Field(True, description="Speak Apollo's automatic persisted queries (APQ).")
    persisted_store: str = Field("memory", description="'memory' or a Redis URL for APQ hashes.")
    allowlist: str | None = Field(None, description="JSON file from `bastion graphql register`: only these run.")
    require_operation_name: bool = Field(False, description="Refuse operations without a name (production).")
    allow_get_mutations: bool = Field(False, description="Never turn this on: mutations over GET enable CSRF.")
    cache_entries: int = Field(10_000, ge=0, description="Analyses kept for repeated queries.")


class _Reject(Exception):
    def __init__(self, status: int, code: str, message: str, protection: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.protection = status, code, message, protection


def graphql_error(status: int, code: str, message: str, request_id: str, stopped_by: str = "graphql") -> Response:
    body = orjson.dumps({"errors": [{"message": message, "extensions": {"code": code, "request_id": request_id}}]})
    return Response(
        status,
        [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        body,
        stopped_by=stopped_by,
        reason=code,
    )


def _schema_costs(path: str) -> tuple[frozenset[str], dict[str, str], dict[str, str]]:
    from graphql import GraphQLList, GraphQLNonNull, build_schema, get_named_type

    with open(path, encoding="utf-8") as f:
        schema = build_schema(f.read())
    lists, types = set(), {}
    for tname, t in schema.type_map.items():
        if tname.startswith("__") or not hasattr(t, "fields"):
            continue
        for fname, fdef in t.fields.items():
            ftype = fdef.type
            if isinstance(ftype, GraphQLNonNull):
                ftype = ftype.of_type
            if isinstance(ftype, GraphQLList):
                lists.add(f"{tname}.{fname}")
            types[f"{tname}.{fname}"] = get_named_type(fdef.type).name
    roots = {
        k: v.name
        for k, v in (
            ("query", schema.query_type),
            ("mutation", schema.mutation_type),
            ("subscription", schema.subscription_type),
        )
        if v is not None
    }
    return frozenset(lists), types, roots


class GraphQLGuard(Policy[GraphQLGuardConfig]):
    name: ClassVar[str] = "graphql"
    priority: ClassVar[int] = 620  # after auth (scopes for introspection), before rate_limit (cost)
    Config = GraphQLGuardConfig

    def __init__(self, config: GraphQLGuardConfig, env) -> None:
        super().__init__(config, env)
        self.c = config
        c = config.costs
        lists: frozenset[str] = frozenset()
        types: dict[str, Any] = {}
        roots: Any = None
        if c.schema_file:
            path = c.schema_file if os.path.isabs(c.schema_file) else os.path.join(env.config_dir, c.schema_file)
            lists, types, roots = _schema_costs(path)
        model = CostModel(
            c.default_field_cost,
            dict(c.fields),
            tuple(c.list_size_args),
            c.default_list_size,
            c.max_list_size,
            lists,
            types,
        )
        if roots:
            model = CostModel(
                model.default_field_cost,
                model.field_costs,
                model.list_size_args,
                model.default_list_size,
                model.max_list_size,
                lists,
                types,
                roots,
            )
        self.costs = model
        self.intro_ips = NetworkSet(config.introspection_ips)
        self.intro_scopes = frozenset(config.introspection_scopes)
        self.allowlist = None
        if config.allowlist:
            path = (
                config.allowlist if os.path.isabs(config.allowlist) else os.path.join(env.config_dir, config.allowlist)
            )
            self.allowlist = load_allowlist(path)
        self._store = None
        self.cache: dict[Any, Any] = {}
        self.max_tokens = config.limits.max_tokens or 100_000

    def mode(self, protection: str) -> Mode:
        return self.c.modes.get(protection, self.c.mode)

    def store(self):
        if self._store is None:
            url = self.c.persisted_store
            self._store = MemoryQueryStore() if url == "memory" else RedisQueryStore(url)
        return self._store

    # -- request ------------------------------------------------------------------------------
    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        if self.c.mode == "off" and not self.c.persisted_queries and self.allowlist is None:
            return None
        if req.websocket:  # a WebSocket handshake carries no operation: each is checked in on_ws_message
            return None
        try:
            operations, is_get, is_batch = await self._operations(req, ctx)
            if is_batch and self.c.limits.max_batch is not None and len(operations) > self.c.limits.max_batch:
                self._limit("batch", f"batch of {len(operations)} operations (max {self.c.limits.max_batch})", ctx)
            total_cost, rewritten = 0.0, False
            measured = []
            for op in operations:
                query, changed = await self._resolve_query(op)
                rewritten |= changed
                a = self._analyze(query, op.get("operationName"), op.get("variables"))
                measured.append({"depth": a.depth, "cost": a.cost, "aliases": a.aliases})
                self._check(a, req, ctx, is_get)
                digest = op.pop("_register", None)
                if digest is not None:  # APQ registration, only for a query that passed
                    try:
                        await self.store().put(digest, query)
                    except Exception:  # a store outage costs the cache, not the request
                        pass
                total_cost += a.cost
            ctx.log_fields["graphql"] = measured[0] if len(measured) == 1 else measured
            ctx.values["cost"] = max(1, int(total_cost))
            ctx.values["graphql.cost"] = total_cost
            if rewritten and not is_get:  # APQ hit: the upstream gets the full query
                req.body = orjson.dumps(operations if is_batch else operations[0])
        except _Reject as exc:
            ctx.log_fields.setdefault("graphql", {})
            return graphql_error(exc.status, exc.code, exc.message, req.request_id)
        except BodyRefused as exc:
            return graphql_error(exc.status, _REFUSAL_CODES.get(exc.status, "BAD_REQUEST"), exc.detail, req.request_id)
        except BodyTooLarge:
            return graphql_error(413, "REQUEST_TOO_LARGE", "the request body is too large", req.request_id)
        except (BodyTimeout, ClientDisconnected):
            return graphql_error(408, "REQUEST_TIMEOUT", "the request body did not arrive", req.request_id)
        if self.c.strip_suggestions:
            ctx.drop_request_headers.add(b"accept-encoding")  # so the answer can be rewritten
            ctx.response_rewriters.append(self)
        return None

    async def _operations(self, req: Request, ctx: Context) -> tuple[list[dict[str, Any]], bool, bool]:
        """The operations of a request, read the way the upstream reads them: a GET's query
        string, or a POST body as JSON, `application/graphql` text or an urlencoded form (these
        two are analysed exactly like JSON). Anything the guard cannot read unambiguously is
        refused, never passed: a GET with a body, a POST that also names the query in its URL, a
        parameter or JSON key given twice, another media type. The returned flag `simple` is
        True for requests a browser sends cross-site without a preflight (GET, forms): they may
        not carry mutations (CSRF)."""
        ct = bodies.content_type(req)  # ambiguous Content-Types are refused for every method
        if req.method == "GET":
            if req.has_body():
                raise _Reject(400, "BAD_REQUEST", "a GET request carries its query in the URL, not in a body")
            return [self._form_operation(req.query, "the URL")], True, False
        if req.method != "POST":
            raise _Reject(405, "METHOD_NOT_ALLOWED", "GraphQL accepts GET and POST")
        in_url = {k for k, _ in parse_qsl(req.query.decode("latin-1"), keep_blank_values=True)} & set(_PARAMS)
        if in_url:
            raise _Reject(
                400, "BAD_REQUEST", f"{sorted(in_url)[0]} is in the URL of a POST: send the operation in the body only"
            )
        media = ct.media if ct is not None else ""
        if media not in ("application/json", "application/graphql", "application/x-www-form-urlencoded"):
            raise _Reject(
                415, "UNSUPPORTED_MEDIA_TYPE", "send GraphQL requests as application/json (or application/graphql)"
            )
        body = await bodies.read_body(req, ctx)
        if media == "application/graphql":
            try:
                return [{"query": body.decode("utf-8")}], False, False
            except UnicodeDecodeError:
                raise _Reject(400, "BAD_REQUEST", "the query is not valid UTF-8") from None
        if media == "application/x-www-form-urlencoded":
            return [self._form_operation(body, "the form")], True, False
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _Reject(400, "BAD_REQUEST", "the body is not valid JSON") from None
        bodies.check_json_unique(body)
        if isinstance(doc, list):
            if not doc or not all(isinstance(x, dict) for x in doc):
                raise _Reject(400, "BAD_REQUEST", "a batch is a non-empty array of operations")
            return doc, False, True
        if not isinstance(doc, dict):
            raise _Reject(400, "BAD_REQUEST", "the body must be a JSON object")
        return [doc], False, False

    @staticmethod
    def _form_operation(data: bytes, where: str) -> dict[str, Any]:
        """One operation from urlencoded parameters (a GET's query string or a form body)."""
        try:
            pairs = parse_qsl(data.decode("utf-8"), keep_blank_values=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise _Reject(400, "BAD_REQUEST", f"{where} is not valid UTF-8") from None
        params: dict[str, str] = {}
        for k, v in pairs:
            if k in params and k in _PARAMS:
                raise _Reject(400, "BAD_REQUEST", f"{k} is given twice in {where}")
            params[k] = v
        op: dict[str, Any] = {"query": params.get("query")}
        for key in ("variables", "extensions"):
            if params.get(key):
                try:
                    op[key] = orjson.loads(params[key])
                except orjson.JSONDecodeError:
                    raise _Reject(400, "BAD_REQUEST", f"{key} is not valid JSON") from None
        if params.get("operationName"):
            op["operationName"] = params["operationName"]
        return op

    async def _resolve_query(self, op: dict[str, Any]) -> tuple[str, bool]:
        query = op.get("query")
        ext: dict[str, Any] = op["extensions"] if isinstance(op.get("extensions"), dict) else {}
        pq = ext.get("persistedQuery") if isinstance(ext.get("persistedQuery"), dict) else None
        if query is not None and not isinstance(query, str):
            raise _Reject(400, "BAD_REQUEST", "query must be a string")
        if self.allowlist is not None:
            digest = pq.get("sha256Hash") if pq else (sha256(query) if query else None)
            if not isinstance(digest, str) or digest not in self.allowlist:
                raise _Reject(403, "PERSISTED_QUERY_NOT_ALLOWED", "only registered queries may run here")
            if query is not None and sha256(query) != digest:
                raise _Reject(400, "PERSISTED_QUERY_HASH_MISMATCH", "the query does not match its hash")
            full = self.allowlist[digest]
            changed = query is None
            op["query"] = full
            return full, changed
        if pq is not None and self.c.persisted_queries:
            digest = pq.get("sha256Hash")
            if pq.get("version", 1) != 1 or not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise _Reject(400, "PERSISTED_QUERY_INVALID", "unsupported persisted query")
            if query is None:
                try:
                    stored = await self.store().get(digest)
                except Exception:  # the store is down: the client sends the full query next
                    stored = None
                if stored is None:
                    raise _Reject(200, "PERSISTED_QUERY_NOT_FOUND", "PersistedQueryNotFound")
                op["query"] = stored
                return stored, True
            if sha256(query) != digest:
                raise _Reject(400, "PERSISTED_QUERY_HASH_MISMATCH", "provided sha does not match query")
            # analysed below before it is stored: an over-limit query is never registered
            op["_register"] = digest
        if not query:
            raise _Reject(400, "BAD_REQUEST", "no query")
        return query, False

    def _analyze(self, query: str, op_name: Any, variables: Any):
        if self.c.limits.max_chars is not None and len(query) > self.c.limits.max_chars:
            if self.mode("chars") == "enforce":
                raise _Reject(400, "QUERY_TOO_LARGE", f"query longer than {self.c.limits.max_chars} characters")
        if op_name is not None and not isinstance(op_name, str):
            raise _Reject(400, "BAD_REQUEST", "operationName must be a string")
        if variables is not None and not isinstance(variables, dict):
            raise _Reject(400, "BAD_REQUEST", "variables must be an object")
        key = (query, op_name)
        cached = self.cache.get(key)
        if cached is not None:
            doc, fixed = cached
            if fixed is not None:
                return fixed
        else:
            try:
                doc = parse(query, max_tokens=self.max_tokens)
            except TokenLimit:
                raise _Reject(400, "TOO_MANY_TOKENS", f"the query has more than {self.max_tokens} tokens") from None
            except GraphQLSyntaxError as exc:
                raise _Reject(400, "GRAPHQL_PARSE_FAILED", f"Syntax Error: {exc}") from None
        try:
            a = analyze(doc, op_name, variables, self.costs)
        except AnalysisError as exc:
            raise _Reject(400, "GRAPHQL_VALIDATION_FAILED", str(exc)) from None
        if self.c.cache_entries:
            if len(self.cache) >= self.c.cache_entries:
                self.cache.clear()
            self.cache[key] = (doc, None if a.uses_variables else a)
        return a

    def _limit(
        self, protection: str, message: str, ctx: Context, status: int = 400, code: str = "QUERY_LIMIT_EXCEEDED"
    ) -> None:
        mode = self.mode(protection)
        if mode == "enforce":
            raise _Reject(status, code, message, protection)
        if mode == "audit":
            ctx.log_fields.setdefault("graphql_audit", []).append(message)

    def _check(self, a, req: Request, ctx: Context, is_get: bool) -> None:
        L = self.c.limits
        if a.operation_type != "query" and is_get and not self.c.allow_get_mutations:
            raise _Reject(
                405, "METHOD_NOT_ALLOWED", f"{a.operation_type} operations are not allowed over GET or in a form post"
            )
        if self.c.require_operation_name and not a.operation_name:
            raise _Reject(400, "OPERATION_NAME_REQUIRED", "operations must be named")
        if a.introspection and not self._may_introspect(req, ctx):
            self._limit("introspection", "introspection is disabled", ctx, 403, "INTROSPECTION_DISABLED")
        for protection, value, limit, what in (
            ("depth", a.depth, L.max_depth, "depth"),
            ("aliases", a.aliases, L.max_aliases, "aliases"),
            ("directives", a.directives, L.max_directives, "directives"),
            ("tokens", a.tokens, L.max_tokens, "tokens"),
            ("root_fields", a.root_fields, L.max_root_fields, "root fields"),
            ("cost", a.cost, L.max_cost, "cost"),
        ):
            if limit is not None and value > limit:
                self._limit(protection, f"query {what} {value:g} exceeds the limit of {limit:g}", ctx)

    @staticmethod
    def wants(resp: Response, json: bool) -> bool:
        return json

    def transform(self, req: Request, resp: Response, ctx: Context, info: BodyInfo) -> Buffered:
        # a large answer (data) passes as long as no part of it carries a suggestion
        return Buffered(
            lambda body: _strip_suggestions(body, info.sniffed), info.rules.max_buffered_bytes, needs=_has_suggestion
        )

    def _may_introspect(self, req: Request, ctx: Context) -> bool:
        if self.c.introspection:
            return True
        if self.intro_ips and req.client_ip in self.intro_ips:
            return True
        return ctx.principal is not None and bool(self.intro_scopes & ctx.principal.scopes)

    # -- GraphQL over WebSocket (gateway/websocket.py) ------------------------------------------
    async def on_ws_message(self, req: Request, ctx: Context, message: WsMessage) -> Response | None:
        """A `subscribe` (graphql-transport-ws) or `start` (graphql-ws) gets the checks of an HTTP
        operation (depth, cost, aliases, introspection, allowlist); a refusal is answered with the
        protocol's `error` for that id by the gateway, the socket stays open. (Through `_analyze`
        and `_check`: a shared `check_operation` entry point is another branch's work.)"""
        if message.operation is None:
            return None
        if self.c.mode == "off" and not self.c.persisted_queries and self.allowlist is None:
            return None
        op = dict(message.operation)
        try:
            query, _ = await self._resolve_query(op)
            a = self._analyze(query, op.get("operationName"), op.get("variables"))
            self._check(a, req, ctx, False)
        except _Reject as exc:
            return graphql_error(exc.status, exc.code, exc.message, req.request_id)
        return None


_SUGGESTION_B = re.compile(rb"did you mean", re.IGNORECASE)


def _has_suggestion(data: bytes) -> bool:
    return _SUGGESTION_B.search(data) is not None


def _strip_suggestions(body: bytes, sniffed: bool = False) -> bytes:
    if not _has_suggestion(body):
        return body
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        if sniffed:
            return body
        raise Unfilterable("malformed", "the JSON body is malformed") from None
    docs = doc if isinstance(doc, list) else [doc]
    for d in docs:
        for err in (d.get("errors") or []) if isinstance(d, dict) else []:
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                err["message"] = _SUGGESTION.sub("", err["message"])
    return orjson.dumps(doc)
