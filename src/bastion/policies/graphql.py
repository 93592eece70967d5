"""GraphQL guard: depth, aliases, duplicate fields, directives, tokens, size, root fields,
cost (config and SDL `@cost`/`@listSize`), batching, introspection, IDE pages, masked upstream
errors, field suggestions, persisted queries, GET-only-for-queries, operation names.

Each rejection is a GraphQL-shaped error (`{"errors": [{"message", "extensions": {"code"}}]}`)
with a matching HTTP status, and the audit line carries the measured depth and cost. The
computed cost is left in the context, where a `rate_limit` of the same route charges it.

The library does the work (`bastion.graphql`: transport, parser, analyzer, schema, errors, ide);
this module holds the configuration and the order of the checks.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.bodies import BodyRefused
from bastion.graphql import Analysis, AnalysisError, CostModel, GraphQLSyntaxError, TokenLimit, analyze, ide, parse
from bastion.graphql import errors as gql_errors
from bastion.graphql.answers import AnswerRewriter, ide_refusal
from bastion.graphql.persisted import QueryResolver, load_allowlist
from bastion.graphql.schema import read_schema
from bastion.graphql.transport import PARAMS, GraphQLRefusal, read_operations, url_params
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

Mode = Literal["off", "audit", "enforce"]
_REFUSAL_CODES = {413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}
_Reject = GraphQLRefusal  # the name other code (gateway/websocket.py) catches


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_depth: int | None = Field(10, ge=1, description="Deepest field nesting (fragments followed).")
    max_aliases: int | None = Field(15, ge=0, description="Aliased fields in the operation.")
    max_duplicate_fields: int | None = Field(
        20,
        ge=1,
        description="Times one response key (alias or name) may be asked in one selection set, "
        "counted after fragments are merged in (`{ title title }` is 2; a fragment holding `title` "
        "spread 3 times is 3). 20 leaves room for Relay-style fragments that each ask `id`.",
    )
    max_directives: int | None = Field(10, ge=0, description="Directives in the document.")
    max_tokens: int | None = Field(2000, ge=10, description="Lexical tokens in the document.")
    max_chars: int | None = Field(10_000, ge=10, description="Characters in the query text.")
    max_root_fields: int | None = Field(10, ge=1, description="Fields at the top of the operation.")
    max_cost: float | None = Field(1000, gt=0, description="Computed cost (see `costs`).")
    max_batch: int | None = Field(5, ge=1, description="Operations in one batched (array) request.")


class Costs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default_field_cost: float = Field(1.0, ge=0)
    fields: dict[str, float] = Field(
        default_factory=dict, description="`Type.field` or `field` → cost; wins over the schema's `@cost`."
    )
    list_size_args: list[str] = Field(default_factory=lambda: ["first", "last", "limit"])
    default_list_size: int = Field(10, ge=1, description="Multiplier for a list field without a size argument.")
    max_list_size: int = Field(1000, ge=1)
    schema_file: str | None = Field(
        None,
        description="SDL schema: list fields, field types, `@cost(weight:)` and "
        "`@listSize(assumedSize:, slicingArguments:)` are read from it.",
    )


class Errors(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mask: bool = Field(
        True,
        description="Replace upstream errors that may carry internal details (execution errors, "
        "or any message that looks like SQL, a path or a stack trace) by `message`, with the "
        "request id; the original is logged, secrets redacted. Syntax and validation errors stay.",
    )
    message: str = Field("Unexpected error.", description="What a masked error says.")
    safe_codes: list[str] = Field(
        default_factory=lambda: list(gql_errors.DEFAULT_SAFE_CODES),
        description="`extensions.code` values whose errors are shown even from resolvers "
        "(still masked when the message looks internal).",
    )
    safe_extensions: list[str] = Field(
        default_factory=lambda: ["code", "classification"],
        description="`extensions` keys kept on errors that are shown; every other key is dropped.",
    )
    log_bytes: int = Field(2048, ge=0, le=65536, description="How much of each masked error to log.")


class GraphQLGuardConfig(PolicyConfig):
    mode: Mode = Field("enforce", description="off, audit (log only) or enforce.")
    modes: dict[str, Mode] = Field(
        default_factory=dict,
        description="Per protection (depth, aliases, duplicate_fields, directives, tokens, chars, "
        "root_fields, cost, batch, introspection; `answers`: masked errors and stripped suggestions; "
        "`ide`: IDE pages refused): overrides `mode`. Off or audit, answers go out as the upstream "
        "sent them (audit notes what enforcing would change).",
    )
    limits: Limits = Field(default_factory=Limits)
    costs: Costs = Field(default_factory=Costs)
    errors: Errors = Field(default_factory=Errors)
    introspection: bool = Field(False, description="Allow __schema / __type for everyone.")
    introspection_scopes: list[str] = Field(default_factory=list, description="Scopes that may introspect.")
    introspection_ips: list[str] = Field(default_factory=list, description="Networks that may introspect.")

    @field_validator("introspection_ips")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        return check_networks(values)

    ide: bool = Field(
        False,
        description="Let IDE pages (GraphiQL, Playground, Altair, Voyager, Apollo Sandbox) through: "
        "a browser's GET (Accept: text/html), their usual paths, and HTML answers naming them. "
        "Off: 404. Turn on per route or per environment (development), never in production.",
    )
    strip_suggestions: bool = Field(True, description="Remove 'Did you mean …?' from upstream error messages.")
    persisted_queries: bool = Field(True, description="Speak Apollo's automatic persisted queries (APQ).")
    persisted_store: str = Field("memory", description="'memory' or a Redis URL for APQ hashes.")
    allowlist: str | None = Field(None, description="JSON file from `bastion graphql register`: only these run.")
    require_operation_name: bool = Field(False, description="Refuse operations without a name (production).")
    allow_get_mutations: bool = Field(False, description="Never turn this on: mutations over GET enable CSRF.")
    cache_entries: int = Field(10_000, ge=0, description="Analyses kept for repeated queries.")

    def lint(self) -> list[tuple[str, str, str]]:
        out = []
        if self.ide:
            out.append(("warning", "ide", "true: GraphQL IDE pages are served; keep it to development environments"))
        if not self.errors.mask:
            out.append(
                (
                    "warning",
                    "errors.mask",
                    "false: upstream GraphQL errors reach clients unmasked (SQL, paths, stack traces)",
                )
            )
        return out


def graphql_error(status: int, code: str, message: str, request_id: str, stopped_by: str = "graphql") -> Response:
    body = orjson.dumps({"errors": [{"message": message, "extensions": {"code": code, "request_id": request_id}}]})
    return Response(
        status,
        [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        body,
        stopped_by=stopped_by,
        reason=code,
    )


def _path(env, name: str) -> str:
    return name if os.path.isabs(name) else os.path.join(env.config_dir, name)


def cost_model(c: Costs, env) -> CostModel:
    """Config costs over the schema's: a config key (`Type.field` or bare `field`) wins."""
    if not c.schema_file:
        return CostModel(
            c.default_field_cost, dict(c.fields), tuple(c.list_size_args), c.default_list_size, c.max_list_size
        )
    with open(_path(env, c.schema_file), encoding="utf-8") as f:
        sc = read_schema(f.read())
    costs = {k: w for k, w in sc.field_costs.items() if k not in c.fields and k.split(".", 1)[1] not in c.fields}
    costs.update(c.fields)
    return CostModel(
        c.default_field_cost,
        costs,
        tuple(c.list_size_args),
        c.default_list_size,
        c.max_list_size,
        sc.list_fields,
        sc.field_types,
        sc.root_types or CostModel().root_types,
        sc.list_sizes,
        sc.type_costs,
    )


class GraphQLGuard(Policy[GraphQLGuardConfig]):
    name: ClassVar[str] = "graphql"
    priority: ClassVar[int] = 620  # after auth (scopes for introspection), before rate_limit (cost)
    Config = GraphQLGuardConfig

    def __init__(self, config: GraphQLGuardConfig, env) -> None:
        super().__init__(config, env)
        self.c = config
        self.costs = cost_model(config.costs, env)
        self.intro_ips = NetworkSet(config.introspection_ips)
        self.intro_scopes = frozenset(config.introspection_scopes)
        self.allowlist = load_allowlist(_path(env, config.allowlist)) if config.allowlist else None
        self.queries = QueryResolver(self.allowlist, config.persisted_queries, config.persisted_store)
        e = config.errors
        mask = gql_errors.MaskRules(e.message, frozenset(e.safe_codes), frozenset(e.safe_extensions))
        # answers (masking, suggestions) and IDE pages follow `mode` unless `modes` names them:
        # off leaves the answer untouched, audit too (noting what enforce would change)
        answers, ide_mode = self.mode("answers"), self.mode("ide")
        self.ide_mode = "off" if config.ide else ide_mode
        self.answers = AnswerRewriter(
            mask if e.mask and answers != "off" else None,
            config.strip_suggestions and answers != "off",
            self.ide_mode == "off",
            e.log_bytes,
            audit=answers == "audit",
            audit_ide=self.ide_mode == "audit",
        )
        self.cache: dict[Any, Any] = {}
        self.max_tokens = config.limits.max_tokens or 100_000
        L = config.limits
        self.limits = tuple(
            (protection, attr, limit, what)
            for protection, attr, limit, what in (
                ("depth", "depth", L.max_depth, "depth"),
                ("aliases", "aliases", L.max_aliases, "aliases"),
                ("duplicate_fields", "duplicate_fields", L.max_duplicate_fields, "duplicate fields"),
                ("directives", "directives", L.max_directives, "directives"),
                ("tokens", "tokens", L.max_tokens, "tokens"),
                ("root_fields", "root_fields", L.max_root_fields, "root fields"),
                ("cost", "cost", L.max_cost, "cost"),
            )
            if limit is not None and self.mode(protection) != "off"
        )

    def mode(self, protection: str) -> Mode:
        return self.c.modes.get(protection, self.c.mode)

    # -- request ------------------------------------------------------------------------------
    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        if req.websocket:  # a WebSocket handshake carries no operation: each is checked in on_ws_message
            return None
        if self.answers.active:
            ctx.drop_request_headers.add(b"accept-encoding")  # so the answer can be rewritten
            ctx.response_rewriters.append(self.answers)
        if self.c.mode == "off" and not self.c.persisted_queries and self.allowlist is None:
            return None
        if req.method == "GET" and self._ide_request(req):
            if self.ide_mode == "enforce":
                return ide_refusal(req)
            if self.ide_mode == "audit":
                ctx.log_fields.setdefault("graphql_audit", []).append("IDE page request (would be refused)")
            if not url_params(req.query) & set(PARAMS):  # the page itself: nothing to analyse
                return None
        try:
            await self._request(req, ctx)
        except GraphQLRefusal as exc:
            ctx.log_fields.setdefault("graphql", {})
            return graphql_error(exc.status, exc.code, exc.message, req.request_id)
        except BodyRefused as exc:
            return graphql_error(exc.status, _REFUSAL_CODES.get(exc.status, "BAD_REQUEST"), exc.detail, req.request_id)
        except BodyTooLarge:
            return graphql_error(413, "REQUEST_TOO_LARGE", "the request body is too large", req.request_id)
        except (BodyTimeout, ClientDisconnected):
            return graphql_error(408, "REQUEST_TIMEOUT", "the request body did not arrive", req.request_id)
        return None

    @staticmethod
    def _ide_request(req: Request) -> bool:
        """A browser asking for a page, or one of the IDEs' usual paths."""
        return ide.is_ide_path(req.path) or ide.wants_html(req.header(b"accept"))

    async def _request(self, req: Request, ctx: Context) -> None:
        operations, simple, is_batch = await read_operations(req, ctx)
        max_batch = self.c.limits.max_batch
        if is_batch and max_batch is not None and len(operations) > max_batch:
            self._limit("batch", f"batch of {len(operations)} operations (max {max_batch})", ctx)
        total_cost, rewritten = 0.0, False
        measured = []
        for op in operations:
            query, changed = await self._resolve_query(op)
            rewritten |= changed
            a = self._analyze(query, op.get("operationName"), op.get("variables"))
            measured.append({"depth": a.depth, "cost": a.cost, "aliases": a.aliases})
            self._check(a, req, ctx, simple)
            await self._register(op, query)
            total_cost += a.cost
        ctx.log_fields["graphql"] = measured[0] if len(measured) == 1 else measured
        ctx.values["cost"] = max(1, int(total_cost))
        ctx.values["graphql.cost"] = total_cost
        if rewritten and not simple:  # APQ hit: the upstream gets the full query
            req.body = orjson.dumps(operations if is_batch else operations[0])

    async def check_operation(
        self,
        query: Any,
        variables: Any,
        operation_name: Any,
        ctx: Context,
        *,
        req: Request | None = None,
        extensions: Any = None,
    ) -> Response | None:
        """Every check of one operation (allowlist, APQ, limits, introspection, operation name)
        outside an HTTP request body — e.g. a GraphQL-over-WebSocket `subscribe`. Returns the
        GraphQL-shaped refusal (status, `extensions.code`, `reason`) or None. `req` gives the
        request id and the client address (introspection_ips); APQ registration is not done."""
        op: dict[str, Any] = {"query": query, "variables": variables, "operationName": operation_name}
        if extensions is not None:
            op["extensions"] = extensions
        request_id = req.request_id if req is not None else ""
        try:
            resolved, _ = await self._resolve_query(op)
            a = self._analyze(resolved, operation_name, variables)
            self._check(a, req, ctx, False)
        except GraphQLRefusal as exc:
            return graphql_error(exc.status, exc.code, exc.message, request_id)
        return None

    async def _register(self, op: dict[str, Any], query: str) -> None:
        await self.queries.register(op, query)

    async def _resolve_query(self, op: dict[str, Any]) -> tuple[str, bool]:
        """See `QueryResolver.resolve` (kept here: gateway/websocket.py calls it)."""
        return await self.queries.resolve(op)

    def _analyze(self, query: str, op_name: Any, variables: Any) -> Analysis:
        """Parse (or find in the cache) and measure. An analysis that does not depend on the
        variables is cached whole; otherwise only the parsed document is."""
        max_chars = self.c.limits.max_chars
        if max_chars is not None and len(query) > max_chars and self.mode("chars") == "enforce":
            raise GraphQLRefusal(400, "QUERY_TOO_LARGE", f"query longer than {max_chars} characters")
        if op_name is not None and not isinstance(op_name, str):
            raise GraphQLRefusal(400, "BAD_REQUEST", "operationName must be a string")
        if variables is not None and not isinstance(variables, dict):
            raise GraphQLRefusal(400, "BAD_REQUEST", "variables must be an object")
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
                raise GraphQLRefusal(
                    400, "TOO_MANY_TOKENS", f"the query has more than {self.max_tokens} tokens"
                ) from None
            except GraphQLSyntaxError as exc:
                raise GraphQLRefusal(400, "GRAPHQL_PARSE_FAILED", f"Syntax Error: {exc}") from None
        try:
            a = analyze(doc, op_name, variables, self.costs)
        except AnalysisError as exc:
            raise GraphQLRefusal(400, "GRAPHQL_VALIDATION_FAILED", str(exc)) from None
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
            raise GraphQLRefusal(status, code, message, protection)
        if mode == "audit":
            ctx.log_fields.setdefault("graphql_audit", []).append(message)

    def _check(self, a: Analysis, req: Request | None, ctx: Context, simple: bool) -> None:
        if a.operation_type != "query" and simple and not self.c.allow_get_mutations:
            raise GraphQLRefusal(
                405, "METHOD_NOT_ALLOWED", f"{a.operation_type} operations are not allowed over GET or in a form post"
            )
        if self.c.require_operation_name and not a.operation_name:
            raise GraphQLRefusal(400, "OPERATION_NAME_REQUIRED", "operations must be named")
        if a.introspection and not self._may_introspect(req, ctx):
            self._limit("introspection", "introspection is disabled", ctx, 403, "INTROSPECTION_DISABLED")
        for protection, attr, limit, what in self.limits:
            value = getattr(a, attr)
            if value > limit:
                self._limit(protection, f"query {what} {value:g} exceeds the limit of {limit:g}", ctx)

    def _may_introspect(self, req: Request | None, ctx: Context) -> bool:
        if self.c.introspection:
            return True
        if self.intro_ips and req is not None and req.client_ip in self.intro_ips:
            return True
        return ctx.principal is not None and bool(self.intro_scopes & ctx.principal.scopes)

    # -- GraphQL over WebSocket (gateway/websocket.py) ------------------------------------------
    async def on_ws_message(self, req: Request, ctx: Context, message: WsMessage) -> Response | None:
        """A `subscribe` (graphql-transport-ws) or `start` (graphql-ws) gets the checks of an HTTP
        operation (depth, cost, aliases, duplicates, introspection, allowlist); a refusal is
        answered with the protocol's `error` for that id by the gateway, the socket stays open."""
        if message.operation is None:
            return None
        if self.c.mode == "off" and not self.c.persisted_queries and self.allowlist is None:
            return None
        op = message.operation
        return await self.check_operation(
            op.get("query"), op.get("variables"), op.get("operationName"), ctx, req=req, extensions=op.get("extensions")
        )
