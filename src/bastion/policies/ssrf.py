"""Server-side request forgery guard (OWASP API7): request arguments that name a URL or a host
are checked before the request is forwarded, and refused (400 `ssrf-blocked`) when any reading
of them reaches an internal target — loopback, private, link-local, CGNAT, multicast, reserved,
cloud metadata — directly or through a name that resolves there. docs/ssrf.md has the rules.

Which arguments (`bastion.arguments`: path and query parameters, JSON and form body values,
GraphQL literal arguments and variables, all with dotted names):
- by the OpenAPI schema: `format: uri`, `uri-reference`, `iri`, `hostname`, `ipv4`, `ipv6`...
  (`spec` and `operation`, set by routes with `openapi:` when the policy is on);
- by name: the last segment of the dotted name that is not an array index, split into words
  (`avatar_url` → avatar, url; `callbackURL` → callback, url); it is a target when its last word
  is one of `names` (`url`, `uri`, `host`, `callback`, `webhook`, `endpoint`, ...);
- by GraphQL type: with `graphql_schema`, arguments, input fields and declared variables whose
  type is a URL-like scalar (`URL`, `URI`, ...);
- by configuration: `fields`, dotted names where `*` stands for one segment (`items.*.target`).
`ignore_fields` takes names out of all three.

The address logic (readings, classification, resolution) is `bastion.net.targets`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl

import orjson
from pydantic import Field, field_validator

from bastion import bodies
from bastion.arguments import Argument, api_inputs, operation_inputs
from bastion.bodies import BodyRefused
from bastion.graphql.parser import string_value
from bastion.http import BodyTimeout, BodyTooLarge, ClientDisconnected, Request, Response, body_problem, problem
from bastion.http.networks import check_networks
from bastion.net.targets import Refusal, SystemResolver, TargetPolicy
from bastion.openapi.operations import compile_operations
from bastion.openapi.spec import SpecError, load_spec
from bastion.pipeline import Context, Policy, PolicyConfig, WsMessage

log = logging.getLogger("bastion.ssrf")

NAME_WORDS = [
    "url",
    "urls",
    "uri",
    "uris",
    "href",
    "link",
    "links",
    "host",
    "hosts",
    "hostname",
    "callback",
    "callbacks",
    "webhook",
    "webhooks",
    "endpoint",
    "endpoints",
    "ip",
    "ips",
    "domain",
    "domains",
]
FORMATS = ["uri", "uri-reference", "iri", "iri-reference", "uri-template", "hostname", "idn-hostname", "ipv4", "ipv6"]
GRAPHQL_SCALARS = ["URL", "URI", "HttpURL", "Hostname", "IRI"]
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_FIELD = re.compile(r"[^.*\s]+|\*")
_INDEX = re.compile(r"(?:\[[0-9]*\])+\Z")


class SsrfConfig(PolicyConfig):
    mode: Literal["enforce", "audit"] = Field(
        "enforce", description="enforce: refuse with 400; audit: only the log line and the counter."
    )
    names: list[str] = Field(
        default_factory=lambda: list(NAME_WORDS),
        description="Words that make an argument a target when its name's last segment ends with one "
        "(`avatar_url`, `callbackUrl`, `webhook`).",
    )
    fields: list[str] = Field(
        default_factory=list,
        description="More arguments to check, as dotted names (`target.address`, `items.*.src`, "
        "GraphQL `importPaste.source`, `variables.input.src`); `*` is one segment.",
    )
    ignore_fields: list[str] = Field(
        default_factory=list, description="Arguments never checked (same syntax), for names that are no targets."
    )
    formats: list[str] = Field(
        default_factory=lambda: list(FORMATS),
        description="OpenAPI/JSON Schema `format`s whose values are targets (with `spec` and `operation`).",
    )
    spec: str | None = Field(None, description="OpenAPI document (set by routes with `openapi:`).")
    operation: str | None = Field(None, description='"METHOD /template" of the operation (set with `spec`).')
    graphql_schema: str | None = Field(
        None,
        description="GraphQL SDL file: arguments, input fields and variables whose type is one of "
        "`graphql_scalars` are targets.",
    )
    graphql_scalars: list[str] = Field(
        default_factory=lambda: list(GRAPHQL_SCALARS),
        description="GraphQL scalar type names (any case) whose values are URLs or hosts.",
    )
    schemes: list[str] = Field(
        default_factory=lambda: ["http", "https"],
        description="URL schemes a target may use; any other (gopher:, file:, dict:, ftp:...) is refused.",
    )
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Names allowed whatever they resolve to: `api.partner.com`, or `*.partner.com` for its subdomains.",
    )
    allow_networks: list[str] = Field(
        default_factory=list, description="Addresses (CIDR) allowed although internal, e.g. an internal webhook relay."
    )
    block_hosts: list[str] = Field(default_factory=list, description="More names to refuse.")
    block_networks: list[str] = Field(
        default_factory=list, description="More addresses (CIDR) to refuse, e.g. your own public ranges."
    )
    unresolvable: Literal["refuse", "allow"] = Field(
        "refuse",
        description="A URL whose host name does not resolve at the gateway (or not in time): "
        "refused by default, because the upstream's resolver may know internal names the gateway does not.",
    )
    resolve_timeout: float = Field(2.0, gt=0, le=30, description="Seconds to wait for a name to resolve.")
    cache_ttl: float = Field(30.0, ge=0, le=3600, description="Seconds a resolved name (or a failure) is kept.")
    max_targets: int = Field(
        32, ge=1, le=1000, description="Target arguments checked in one request; a request with more is refused."
    )
    max_body: int = Field(1024 * 1024, ge=0, description="Larger bodies (after decoding) are refused (413).")
    graphql: bool | None = Field(
        None, description="Read requests as GraphQL (true), never (false), or when they look like it (null)."
    )

    @field_validator("allow_networks", "block_networks")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        return check_networks(values)

    @field_validator("fields", "ignore_fields")
    @classmethod
    def _fields(cls, values: list[str]) -> list[str]:
        for v in values:
            if not v or not all(_FIELD.fullmatch(p) for p in v.split(".")):
                raise ValueError(f"{v!r} is not a dotted name (segments, or * for one segment)")
        return values

    @field_validator("schemes")
    @classmethod
    def _schemes(cls, values: list[str]) -> list[str]:
        for v in values:
            if not re.fullmatch(r"[a-z][a-z0-9+.\-]*", v):
                raise ValueError(f"{v!r} is not a lower-case URL scheme")
        return values

    def lint(self) -> list[tuple[str, str, str]]:
        out: list[tuple[str, str, str]] = []
        if self.mode == "audit":
            out.append(("warning", "mode", "audit mode only logs server-side request forgery attempts"))
        if any(s in ("file", "gopher", "dict", "ldap", "jar", "netdoc") for s in self.schemes):
            out.append(
                ("warning", "schemes", "file:, gopher:, dict:, ldap: and jar: reach local files and raw sockets")
            )
        if self.unresolvable == "allow":
            out.append(("warning", "unresolvable", "names the gateway cannot resolve may be internal at the upstream"))
        return out


class Ssrf(Policy[SsrfConfig]):
    name: ClassVar[str] = "ssrf"
    priority: ClassVar[int] = 560  # after validation (590) has normalised the body, before the WAF (500)
    Config = SsrfConfig

    def __init__(self, config: SsrfConfig, env: Any) -> None:
        super().__init__(config, env)
        self.enforce = config.mode == "enforce"
        self.words = frozenset(w.lower() for w in config.names)
        self.fields = _patterns(config.fields)
        self.ignored = _patterns(config.ignore_fields)
        self.by_schema = _patterns(_schema_fields(config, env)) if config.spec else None
        self.sdl: SdlTargets | None = SdlTargets(config, env) if config.graphql_schema else None
        self.resolver = _resolver(config.resolve_timeout, config.cache_ttl)
        self.targets = TargetPolicy(
            schemes=config.schemes,
            allow_hosts=config.allow_hosts,
            allow_networks=config.allow_networks,
            block_hosts=config.block_hosts,
            block_networks=config.block_networks,
            unresolvable=config.unresolvable,
            resolver=self.resolver,
        )
        self.ssrf_refusals: dict[str, int] = {}  # by reason, read by the metrics collector
        self._names: dict[str, bool] = {}

    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        try:
            arguments = await self._arguments(req, ctx)
        except BodyRefused as exc:
            return exc.response(req)
        except (BodyTooLarge, BodyTimeout, ClientDisconnected) as exc:
            return body_problem(exc, req) or problem(
                400, "bad-request", "the client went away", request_id=req.request_id
            )
        typed = None  # variables the operation declares with a URL scalar type (graphql_schema)
        if self.sdl is not None and any(a.source == "variables" for a in arguments):
            typed = self.sdl.variables(req)
        return await self._check(req, ctx, arguments, typed)

    async def on_ws_message(self, req: Request, ctx: Context, message: WsMessage) -> Response | None:
        """A GraphQL `subscribe`/`start` on an open socket (graphql-ws runs mutations there too):
        its arguments and variables, checked as an HTTP request's are."""
        if message.operation is None:
            return None
        inputs = operation_inputs(message.operation)
        arguments = [*inputs.arguments, *inputs.bound]
        arguments += [a for text in inputs.unparsed for a in _string_arguments(text)]
        typed = None
        query = message.operation.get("query")
        if self.sdl is not None and isinstance(query, str):
            typed = self.sdl.variables_of([query])
        return await self._check(req, ctx, arguments, typed)

    async def _check(
        self, req: Request, ctx: Context, arguments: list[Argument], typed: re.Pattern[str] | None
    ) -> Response | None:
        targets = [(a, v) for a in arguments if (v := self._target_value(a, typed)) is not None]
        if not targets:
            return None
        if len(targets) > self.config.max_targets:
            return self._refuse(req, ctx, None, Refusal("too-many-targets", str(len(targets))))
        if len(targets) == 1:  # the usual case: no tasks to create
            found = [await self.targets.check(targets[0][1], host=_host_named(targets[0][0].name))]
        else:
            checks = (self.targets.check(v, host=_host_named(a.name)) for a, v in targets)
            found = list(await asyncio.gather(*checks))
        for (arg, _), refusal in zip(targets, found, strict=True):
            if refusal is not None:
                return self._refuse(req, ctx, arg, refusal)
        return None

    async def _arguments(self, req: Request, ctx: Context) -> list[Argument]:
        # every body is read (bastion.arguments): multipart text fields by their names, and
        # binary-typed bodies as the JSON or form they look like (lenient servers parse them) —
        # except a binary upload over max_body that starts like neither (an image, an archive):
        # its path and query are checked, its body passes unread, as before
        if await self._unread_upload(req):
            pairs = parse_qsl(req.query.decode("latin-1"), keep_blank_values=True) if req.query else []
            return [
                *(Argument("path", k, v) for k, v in req.path_params.items()),
                *(Argument("query", k, v) for k, v in pairs),
            ]
        inputs = await api_inputs(req, ctx, graphql=self.config.graphql, max_body=self.config.max_body)
        # variables count under their own names and under the arguments they are bound to
        arguments, unparsed = [*inputs.arguments, *inputs.bound], inputs.unparsed
        if self.config.graphql is None and not inputs.graphql and _may_be_graphql(arguments):
            # a `query` the request was not read as GraphQL for (a URL query beside a JSON body:
            # express-graphql runs the URL's): read it both ways
            alt = await api_inputs(req, ctx, graphql=True, max_body=self.config.max_body)
            arguments, unparsed = [*arguments, *alt.arguments, *alt.bound], [*unparsed, *alt.unparsed]
        if unparsed:  # GraphQL the gateway's parser refused; the upstream's may not
            arguments = [*arguments, *(a for text in unparsed for a in _string_arguments(text))]
        return arguments

    async def _unread_upload(self, req: Request) -> bool:
        """A body of a binary type (`image/*`, `application/octet-stream`, `pdf`, `zip`, ...)
        larger than `max_body` (or of unknown length), not content-encoded, whose first bytes
        are not JSON or a form: read in full it would be refused (413), and no lenient parser
        reads it as arguments."""
        if not req.has_body():
            return False
        ct = bodies.content_type(req)
        if ct is None or not _binary(ct):
            return False
        try:
            length = req.content_length()
        except ValueError:
            return False  # refused as the body is read
        if length is not None and length <= self.config.max_body:
            return False
        if any(k == b"content-encoding" for k, _ in req.headers):
            return False  # the coded bytes say nothing of what the upstream decodes
        return not bodies.looks_structured(await bodies.peek(req, 64))

    def _target_value(self, arg: Argument, typed: re.Pattern[str] | None = None) -> str | None:
        value = arg.value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**64:
            value = int(value)  # JavaScript's String(2130706433.0) and String(2.130706433e9) are "2130706433"
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            return None
        text = str(value)
        if not text:
            return None
        name = arg.name
        if self.ignored.search(name):
            return None
        if self.fields.search(name) or self._named(name):
            return text
        if (
            self.by_schema is not None
            and arg.source in ("path", "query", "body")
            and self.by_schema.search(f"{arg.source}:{name}")
        ):
            return text
        if self.sdl is not None and arg.source in ("graphql", "variables") and self.sdl.arguments.search(name):
            return text
        if typed is not None and arg.source == "variables" and typed.search(name):
            return text
        return None

    def _named(self, name: str) -> bool:
        hit = self._names.get(name)
        if hit is None:
            if len(self._names) >= 4096:
                self._names.clear()
            hit = self._names[name] = self._name_rule(name)
        return hit

    def _name_rule(self, name: str) -> bool:
        for segment in reversed(name.split(".")):
            if segment.isdigit():
                continue
            # `url[0]`, `url[]`: an array item in qs (Express), PHP and Rails form names
            words = _WORD.findall(_INDEX.sub("", segment) or segment)
            return bool(words) and (words[-1].lower() in self.words or segment.lower() in self.words)
        return False

    def _refuse(self, req: Request, ctx: Context, arg: Argument | None, refusal: Refusal) -> Response | None:
        self.ssrf_refusals[refusal.reason] = self.ssrf_refusals.get(refusal.reason, 0) + 1
        where = None if arg is None else arg.name[:200]
        ctx.log_fields["ssrf"] = {
            "argument": where,
            "source": None if arg is None else arg.source,
            "reason": refusal.reason,
            "target": refusal.target[:200],
            "blocked": self.enforce,
        }
        if not self.enforce:
            log.warning("ssrf (audit): %s %r reaches %r (%s)", req.route_name, where, refusal.target, refusal.reason)
            return None
        if arg is None:
            detail = f"the request names more than {self.config.max_targets} URLs or hosts"
        elif refusal.reason == "scheme":
            detail = f"the argument {where!r} uses a URL scheme that is not allowed here"
        elif refusal.reason == "unresolvable":
            detail = f"the argument {where!r} names a host that does not resolve"
        else:
            detail = f"the argument {where!r} names an internal or reserved address ({refusal.reason})"
        resp = problem(
            400,
            "ssrf-blocked",
            detail,
            request_id=req.request_id,
            extra={"argument": where, "reason": refusal.reason},
        )
        resp.reason = f"ssrf {refusal.reason}"
        return resp


_HOST_WORDS = frozenset({"host", "hosts", "hostname", "hostnames", "domain", "domains", "ip", "ips"})


def _host_named(name: str) -> bool:
    """An argument named as a host (`host`, `targetHost`, `server_ip`): its value is a host, not
    maybe a relative path, so a name there that does not resolve is refused (`redis`, a
    Docker or Kubernetes service name the upstream's resolver knows)."""
    for segment in reversed(name.split(".")):
        if not segment.isdigit():
            words = _WORD.findall(_INDEX.sub("", segment) or segment)
            return bool(words) and words[-1].lower() in _HOST_WORDS
    return False


_BINARY = ("image/", "audio/", "video/", "font/")
_BINARY_TYPES = frozenset(
    {"application/octet-stream", "application/pdf", "application/zip", "application/gzip", "application/x-tar"}
)


def _binary(ct: bodies.ContentType) -> bool:
    return ct.media in _BINARY_TYPES or ct.media.startswith(_BINARY)


def _may_be_graphql(arguments: list[Argument]) -> bool:
    return any(a.name == "query" and a.source in ("query", "body") and isinstance(a.value, str) for a in arguments)


_GRAPHQL_STRING = re.compile(r'([_A-Za-z][_0-9A-Za-z]*)\s*:\s*("(?:[^"\\\n]|\\.)*")')


def _string_arguments(text: str) -> list[Argument]:
    """`name: "value"` pairs of a GraphQL document that did not parse (arguments, object fields),
    so a query the gateway cannot read is not a way around the name rule."""
    out = []
    for m in _GRAPHQL_STRING.finditer(text[:100_000]):
        try:
            value = string_value(m.group(2))
        except ValueError:
            value = m.group(2)[1:-1]
        out.append(Argument("graphql", m.group(1), value))
    return out


class SdlTargets:
    """Targets by GraphQL type: `field.arg` paths (input object fields and list items below
    them) whose type is one of the URL scalars, from the SDL; and, per request, the variables
    the operation declares with such types (`variables.src` for `$src: URL!`)."""

    def __init__(self, config: SsrfConfig, env: Any) -> None:
        from graphql import GraphQLError, build_schema

        path = Path(env.config_dir) / str(config.graphql_schema)
        try:
            self.schema = build_schema(path.read_text())
        except (OSError, GraphQLError, TypeError) as exc:
            raise ValueError(f"ssrf.graphql_schema {path}: {str(exc).splitlines()[0]}") from None
        self.scalars = frozenset(n.lower() for n in config.graphql_scalars)
        found: list[str] = []
        for t in self.schema.type_map.values():
            for fname, f in (getattr(t, "fields", None) or {}).items():
                for aname, a in getattr(f, "args", {}).items():
                    found += self._paths(f"{fname}.{aname}", a.type, 0)
        self.arguments = _patterns(sorted(set(found)))

    def _paths(self, prefix: str, type_: Any, depth: int) -> list[str]:
        from graphql import GraphQLInputObjectType, GraphQLList, GraphQLNonNull, GraphQLScalarType

        while isinstance(type_, (GraphQLNonNull, GraphQLList)):
            if isinstance(type_, GraphQLList):
                prefix += ".*"
            type_ = type_.of_type
        if isinstance(type_, GraphQLScalarType):
            return [prefix] if type_.name.lower() in self.scalars else []
        if isinstance(type_, GraphQLInputObjectType) and depth < 8:
            out: list[str] = []
            for name, f in type_.fields.items():
                out += self._paths(f"{prefix}.{name}", f.type, depth + 1)
            return out
        return []

    def variables(self, req: Request) -> re.Pattern[str]:
        """`variables.…` patterns typed as URL scalars by the request's operations."""
        return self.variables_of(_query_texts(req))

    def variables_of(self, texts: list[str]) -> re.Pattern[str]:
        from graphql import GraphQLError, parse, type_from_ast

        found: list[str] = []
        for text in texts:
            try:
                doc = parse(text, no_location=True, max_tokens=20_000)
            except (GraphQLError, RecursionError):
                continue
            for definition in doc.definitions:
                for v in getattr(definition, "variable_definitions", None) or ():
                    type_ = type_from_ast(self.schema, v.type)
                    if type_ is not None:
                        found += self._paths(f"variables.{v.variable.name.value}", type_, 0)
        return _patterns(found)


def _query_texts(req: Request) -> list[str]:
    """The GraphQL documents of a request: `?query=`, an application/graphql body, a JSON
    body's `query` (or a batch's)."""
    texts = [v for k, v in parse_qsl(req.query.decode("latin-1"), keep_blank_values=True) if k == "query"]
    if req.body and (req.header_str(b"content-type") or "").lower().startswith("application/graphql"):
        texts.append(req.body.decode("utf-8", "replace"))
    elif req.body:
        try:
            doc = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            doc = None
        for op in doc if isinstance(doc, list) else [doc]:
            if isinstance(op, dict) and isinstance(op.get("query"), str):
                texts.append(op["query"])
    return texts


_RESOLVERS: dict[tuple[float, float], SystemResolver] = {}


def _resolver(timeout: float, ttl: float) -> SystemResolver:
    """One resolver (and answer cache) per setting, shared by the routes' policy objects (a spec
    route builds one per operation)."""
    found = _RESOLVERS.get((timeout, ttl))
    if found is None:
        found = _RESOLVERS[(timeout, ttl)] = SystemResolver(timeout=timeout, ttl=ttl)
    return found


def _patterns(names: list[str]) -> re.Pattern[str]:
    """One regex for dotted-name patterns (`*` one segment); never matches when empty."""
    if not names:
        return re.compile(r"(?!)")
    alts = [r"\.".join(r"[^.]+" if p == "*" else re.escape(p) for p in n.split(".")) for n in names]
    return re.compile(r"\A(?:" + "|".join(alts) + r")\Z")


def _schema_fields(config: SsrfConfig, env: Any) -> list[str]:
    """`source:dotted.name` patterns of the operation's parameters and JSON/form body fields
    whose schema has one of `config.formats`."""
    if config.operation is None or config.spec is None:
        raise ValueError("ssrf.spec needs ssrf.operation ('METHOD /template')")
    try:
        spec = load_spec(Path(env.config_dir) / config.spec)
        op = compile_operations(spec).get(config.operation)
    except SpecError as exc:
        raise ValueError(str(exc)) from None
    if op is None:
        raise ValueError(f"the spec has no operation {config.operation!r}")
    formats = frozenset(config.formats)
    out: list[str] = []
    for p in op.params:
        if p.location in ("path", "query") and p.validator is not None:
            for path in _format_paths(p.validator.schema, formats, top_items=True):
                if not path:  # the parameter itself (or each item of an array parameter)
                    out.append(f"{p.location}:{p.name}")
    for body in op.bodies:
        if body.kind in ("json", "form") and body.validator is not None:
            out += [
                "body:" + ".".join(path) if path else "body:"
                for path in _format_paths(body.validator.schema, formats, top_items=False)
            ]
    return sorted(set(out))


def _format_paths(schema: Any, formats: frozenset[str], *, top_items: bool) -> set[tuple[str, ...]]:
    """Dotted paths (array items as `*`, the top-level items of an array parameter as the
    parameter itself) of the (converted, `$defs`-referencing) schema's nodes with a format."""
    found: set[tuple[str, ...]] = set()
    defs = schema.get("$defs", {}) if isinstance(schema, dict) else {}

    def walk(s: Any, path: tuple[str, ...], depth: int, top_items: bool) -> None:
        if not isinstance(s, dict) or depth > 24:
            return
        if isinstance(s.get("$ref"), str):
            walk(defs.get(s["$ref"].rsplit("/", 1)[-1]), path, depth + 1, top_items)
        if s.get("format") in formats:
            found.add(path)
        for k, sub in (s.get("properties") or {}).items():
            walk(sub, (*path, k), depth + 1, False)
        if isinstance(s.get("items"), dict):
            walk(s["items"], path if top_items else (*path, "*"), depth + 1, False)
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in s.get(key, []) or []:
                walk(sub, path, depth + 1, top_items)

    walk(schema, (), 0, top_items)
    return found
