"""WAF rules: the OWASP Core Rule Set run by ModSecurity v3 (libmodsecurity), on the normalised
path, the query, the headers and the body. Detect-only or block; a paranoia level; per route.

The rules judge API inputs, not syntax (issue 17): a GraphQL request is shown to them as its
argument values and variables (`bastion.arguments`), never its query text, which CRS reads as
shell code; REST path parameters are shown as arguments too. docs/waf.md has the tables.

A real engine with a maintained rule set rather than hand-written regexes: CRS's anomaly
scoring and transformations catch encodings and evasions that a regex list would not, and its
false positives are known and tunable (`exclude_rules`). Measured cost: docs/waf.md.

Request bodies cannot step around the rules by their Content-Type (docs/waf.md has the table):
the body processor is chosen here, in one place, from the type (`bastion.bodies` parses it and
refuses ambiguous ones), by sniffing when there is no type or no processor for it, and the body
is inspected after its content coding is undone. A body ModSecurity cannot parse as its declared
type is refused (400), as ModSecurity's recommended configuration does with its rules
200002-200007 (modsecurity.conf-recommended in owasp-modsecurity/ModSecurity, v3/master), which
CRS alone does not add; they are loaded here with the same ids and meaning.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, quote, unquote_plus

import orjson
from graphql import GraphQLError
from graphql import parse as graphql_parse
from graphql.language import Node, StringValueNode
from pydantic import Field, field_validator

from bastion import bodies
from bastion.arguments import (
    GRAPHQL_PARAMS,
    METHODS_WITHOUT_BODY,
    ApiInputs,
    Argument,
    api_inputs,
    operation_inputs,
)
from bastion.bodies import BodyRefused
from bastion.http import (
    BodyTimeout,
    BodyTooLarge,
    ClientDisconnected,
    Request,
    Response,
    body_problem,
    ip_text,
    problem,
)
from bastion.pipeline import Context, Policy, PolicyConfig, WsMessage

CRS_RULES = "/usr/share/modsecurity-crs/rules"
# Files that need what this build lacks (GeoIP) or target one application's quirks.
_SKIP = ("REQUEST-910-IP-REPUTATION", "-EXCLUSION-RULES.conf")
# CRS 3.3.4's default allowed request content types (its rule 901162 / crs-setup 900220), plus
# application/graphql, whose body the gateway inspects as the query it is.
CRS_CONTENT_TYPES = [
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/related",
    "text/xml",
    "application/xml",
    "application/soap+xml",
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "application/graphql",
]
# The header that carries the body processor chosen in Python to ModSecurity (never forwarded:
# x-bastion-* headers are the gateway's; a client's own copy is not passed to the rules).
_PROCESSOR = "X-Bastion-Body-Processor"
_PROCESSOR_LOWER = _PROCESSOR.lower().encode()
# The recommended configuration's body-integrity rules: their ids answer 400, not 403.
_INTEGRITY = {
    200002: "the request body cannot be parsed as its Content-Type says",
    200003: "the multipart body failed strict validation",
    200004: "the multipart body has a boundary that does not match its Content-Type",
    200005: "the request could not be inspected completely",
    200007: "the request body has more arguments than can be inspected",
}
_RULE_ID = re.compile(r'\[id "(\d+)"\]')
# CRS's paranoia-level section openers, and the data files its operators read (relative names)
_LEVEL_SKIP = re.compile(
    r'^SecRule TX:EXECUTING_PARANOIA_LEVEL "@lt (\d)" "id:\d+,phase:[12],pass,nolog,skipAfter:([\w-]+)"$'
)
_DATA_FILE = re.compile(r'(@(?:pmFromFile|pmf|ipMatchFromFile|ipMatchF) )(?!/)([^"\s]+)')
# CRS's own defaults for its setup variables: REQUEST-901-INITIALIZATION.conf sets each one that
# crs-setup.conf left unset, with a rule `SecRule &TX:<name> "@eq 0" ... setvar:'tx.<name>=<value>'`
_CRS_DEFAULT = re.compile(r'SecRule &TX:(\w+) "@eq 0"[^"]*"id:901\d+,[^"]*?setvar:\'tx\.\1=([^\']*)\'', re.I)


class WafConfig(PolicyConfig):
    mode: Literal["detect", "block"] = Field("block", description="block: 403; detect: only the audit line.")
    paranoia_level: int = Field(
        1, ge=1, le=4, description="CRS paranoia level (higher: more rules, more false positives)."
    )
    anomaly_threshold: int = Field(5, ge=1, description="CRS inbound anomaly score that blocks.")
    rules_dir: str = Field(CRS_RULES, description="Directory of the CRS rule files (Debian: modsecurity-crs).")
    exclude_rules: list[int] = Field(default_factory=list, description="Rule ids to turn off (false positives).")
    inspect_body: bool = Field(True, description="Inspect request bodies (they are then read before forwarding).")
    max_body: int = Field(
        128 * 1024,
        ge=0,
        description="Larger bodies (after decoding) are refused (413) in block "
        "mode and pass uninspected in detect mode.",
    )
    untyped_bodies: Literal["sniff", "refuse"] = Field(
        "sniff",
        description="A body without Content-Type, or of a type ModSecurity has no parser for: 'sniff' "
        "inspects it as the JSON, XML or form it looks like (other text as one whole value); 'refuse' answers 415.",
    )
    uninspected_types: list[str] = Field(
        default_factory=list,
        description="Media types whose bodies are passed without body inspection "
        "(binary uploads: image/png, application/octet-stream); headers and query are still inspected.",
    )
    content_types: list[str] = Field(
        default_factory=lambda: list(CRS_CONTENT_TYPES),
        description="Media types CRS allows (its rule 920420 scores any other).",
    )
    inspect_files: bool = Field(
        False,
        description="Also inspect the content of multipart file parts that are "
        "text (CRS at paranoia 1 inspects only their names); binary files are skipped.",
    )
    xml_max_depth: int = Field(64, ge=1, le=1024, description="Deepest element nesting accepted in an XML body.")
    allowed_methods: list[str] = Field(
        default_factory=lambda: ["GET", "HEAD", "POST", "OPTIONS", "PUT", "PATCH", "DELETE"],
        description="Methods CRS allows (its rule 911100 scores any other); CRS's own default omits PUT, "
        "PATCH and DELETE, which APIs use.",
    )
    max_arguments: int = Field(
        1000,
        ge=10,
        description="Arguments (form fields, JSON leaves, XML nodes) "
        "ModSecurity inspects; a body with more is refused (400).",
    )

    graphql: Literal["auto", "on", "off"] = Field(
        "auto",
        description="GraphQL requests (a query in the URL, a form or JSON body, application/graphql) are "
        "inspected by their argument values and variables, never the query text. 'auto': on routes "
        "whose name (by default their path pattern) contains 'graphql'; 'on': on this route whatever its name; "
        "'off': the query text is inspected as any other value (CRS refuses most queries at paranoia 1).",
    )

    @field_validator("allowed_methods")
    @classmethod
    def _methods(cls, values: list[str]) -> list[str]:
        for v in values:
            if not re.fullmatch(r"[A-Z]+", v):
                raise ValueError(f"{v!r} is not an upper-case HTTP method")
        return values

    @field_validator("uninspected_types", "content_types")
    @classmethod
    def _media_types(cls, values: list[str]) -> list[str]:
        for v in values:
            if not re.fullmatch(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+*-]+", v):
                raise ValueError(f"{v!r} is not a lower-case media type (type/subtype)")
        return values


def _engine(config: WafConfig) -> tuple[Any, Any]:
    try:
        import libmodsecurity
    except ImportError:
        raise ValueError("the waf policy needs the libmodsecurity package (pip install libmodsecurity)") from None
    files = sorted(
        f for f in glob.glob(os.path.join(config.rules_dir, "REQUEST-*.conf")) if not any(s in f for s in _SKIP)
    )
    if not files:
        raise ValueError(f"no OWASP CRS rules in {config.rules_dir} (Debian: apt-get install modsecurity-crs)")
    engine = libmodsecurity.ModSecurity()
    rules = libmodsecurity.RulesSet()
    types = " ".join(f"|{t}|" for t in config.content_types)
    base = f"""
SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit {8 * max(config.max_body, 1) + 1024}
SecRequestBodyNoFilesLimit {8 * max(config.max_body, 1) + 1024}
SecRequestBodyLimitAction Reject
SecArgumentsLimit {config.max_arguments}
SecRequestBodyJsonDepthLimit 512
SecXmlExternalEntity Off
SecRule REQUEST_HEADERS:{_PROCESSOR} "@streq JSON" "id:200010,phase:1,t:none,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:{_PROCESSOR} "@streq URLENCODED" "id:200011,phase:1,t:none,pass,nolog,ctl:requestBodyProcessor=URLENCODED"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body',logdata:'%{{reqbody_error_msg}}'"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:200003,phase:2,t:none,log,deny,status:400,msg:'Multipart request body failed strict validation'"
SecRule MULTIPART_UNMATCHED_BOUNDARY "@eq 1" "id:200004,phase:2,t:none,log,deny,status:400,msg:'Multipart parser detected a possible unmatched boundary'"
SecRule TX:/^MSC_/ "!@streq 0" "id:200005,phase:2,t:none,log,deny,status:400,msg:'ModSecurity internal error flagged: %{{MATCHED_VAR_NAME}}'"
SecRule &ARGS "@ge {config.max_arguments}" "id:200007,phase:2,t:none,log,deny,status:400,msg:'Failed to fully parse request body due to large argument count'"
SecAction "id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level={config.paranoia_level}"
SecAction "id:900110,phase:1,nolog,pass,t:none,setvar:tx.inbound_anomaly_score_threshold={config.anomaly_threshold},setvar:tx.outbound_anomaly_score_threshold=4"
SecAction "id:900200,phase:1,nolog,pass,t:none,setvar:'tx.allowed_methods={" ".join(config.allowed_methods)}'"
SecAction "id:900220,phase:1,nolog,pass,t:none,setvar:'tx.allowed_request_content_type={types}'"
SecAction "id:900990,phase:1,nolog,pass,t:none,setvar:tx.crs_setup_version=334"
"""
    defaults = _crs_defaults(config.rules_dir, set(re.findall(r"setvar:'?tx\.(\w+)=", base)))
    if defaults:
        # crs-setup.conf's role: every setup variable set before CRS looks, with CRS's own default
        # values (read from its 901 file, so they cannot drift from the rules loaded). The rules
        # are the same; 901's "default if unset" rules then match nothing, and each match costs
        # ModSecurity a formatted match message (measured: docs/waf.md, "Cost").
        setvars = ",".join(f"setvar:'tx.{name}={value}'" for name, value in defaults)
        base += f'SecAction "id:900980,phase:1,nolog,pass,t:none,{setvars}"\n'
    if rules.load(base) < 0:
        raise ValueError(f"ModSecurity setup failed: {rules.get_parser_error()}")
    for f in files:
        text = _above_level_removed(f, config.paranoia_level)
        if (rules.load(text) if text is not None else rules.load_from_uri(f)) < 0:
            raise ValueError(f"ModSecurity could not load {f}: {rules.get_parser_error()}")
    if config.exclude_rules:
        ids = " ".join(str(i) for i in config.exclude_rules)
        if rules.load(f"SecRuleRemoveById {ids}") < 0:
            raise ValueError(f"bad exclude_rules: {rules.get_parser_error()}")
    return engine, rules


def _above_level_removed(path: str, level: int) -> str | None:
    """A CRS file's text without its sections above paranoia `level`; None: load it as it is.

    CRS puts each file's rules in paranoia-level sections, each opened by a pair of rules
    `SecRule TX:EXECUTING_PARANOIA_LEVEL "@lt N" "...,phase:1|2,...,skipAfter:END-<file>"` that
    skip everything from there to the file's end marker when the level is below N. At paranoia
    `level` the `@lt level+1` pair always matches, so that text never runs: it is removed here
    and the end marker kept. The same rules run (tests compare the rule ids executed); what goes
    is the two skip rules per file that matched on every request, each paying ModSecurity's
    match-message formatting (docs/waf.md, "Cost"). ModSecurity's own `SecRuleRemoveByTag` is no
    substitute: it is checked per rule per transaction and made requests slower. A file whose
    layout differs (no such pair, another marker or another phase in the removed text) is loaded
    whole. Data files named by a relative path (`@pmFromFile x.data`) are made absolute, as
    ModSecurity resolves them against the file it loads, and text has no file."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    opener = next(
        ((i, m) for i, m in enumerate(map(_LEVEL_SKIP.match, lines)) if m and int(m.group(1)) == level + 1), None
    )
    if opener is None:
        return None
    start, m = opener
    try:
        end = lines.index(f'SecMarker "{m.group(2)}"', start)
    except ValueError:
        return None
    removed = "\n".join(lines[start:end])
    if "SecMarker" in removed or re.search(r"phase:(?![12][,\"'\s])", removed):
        return None
    folder = os.path.dirname(os.path.abspath(path))
    return "\n".join(
        _DATA_FILE.sub(lambda d: d.group(1) + os.path.join(folder, d.group(2)), line)
        for line in lines[:start] + lines[end:]
    )


def _crs_defaults(rules_dir: str, already: set[str]) -> list[tuple[str, str]]:
    """(name, value) of the setup variables CRS's 901 file gives a default, minus `already` set.
    Values written as macros (`%{TX.PARANOIA_LEVEL}`) stay macros, evaluated as CRS would."""
    try:
        with open(os.path.join(rules_dir, "REQUEST-901-INITIALIZATION.conf"), encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return []  # no 901 file: CRS's own defaults cannot apply either
    seen = {name.lower() for name in already}
    out = []
    for name, value in _CRS_DEFAULT.findall(text):
        if name.lower() not in seen:
            seen.add(name.lower())
            out.append((name.lower(), value))
    return out


class Waf(Policy[WafConfig]):
    name: ClassVar[str] = "waf"
    priority: ClassVar[int] = 500  # last in the request phase: it sees what everything else let through
    Config = WafConfig

    def __init__(self, config: WafConfig, env) -> None:
        super().__init__(config, env)
        self.engine, self.rules = _engine(config)
        from libmodsecurity import Transaction  # _engine has checked it is installed

        self.transaction = Transaction
        # the rules that matched in the transaction running now: one callback for the engine's
        # life (a transaction runs to its verdict without an await, so no two share the list)
        # (the callback holds only this box, not the policy: the binding keeps it until close())
        box: list[list[tuple[int, str]]] = [[]]
        self._matched = box
        self.engine.set_rule_message_callback(lambda m: box[0].append((m.rule_id, m.message)))
        # an id for each transaction: without one ModSecurity makes its own (a clock read and a
        # std::random_device per transaction), for an audit log this policy does not use
        self._serial = itertools.count(1)
        self.block = config.mode == "block"
        self.inspect_body = config.inspect_body
        self.max_body = config.max_body
        self.uninspected = frozenset(config.uninspected_types)
        self.blocked = 0
        self.refused = 0

    async def close(self) -> None:
        self.engine.set_rule_message_callback(None)  # the binding's registry entry goes with it

    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        try:
            inputs = await self._graphql(req, ctx)
        except BodyRefused as exc:
            ctx.log_fields["waf"] = {"refused": exc.type, "blocked": self.block}
            if self.block:
                self.refused += 1
                return exc.response(req)
            inputs = None
        except (BodyTooLarge, BodyTimeout, ClientDisconnected) as exc:
            return body_problem(exc, req) or problem(
                400, "bad-request", "the client went away", request_id=req.request_id
            )
        if inputs is not None:
            # one transaction: the headers, the path (its parameters as query arguments), the
            # URL's other parameters, and every argument value and variable as a member of a JSON
            # body (ARGS, named as bastion.arguments names them); never the query text. A JSON
            # body rather than query arguments: ModSecurity v3 URL-decodes REQUEST_URI before
            # CRS 920220 validates its encoding, so "50% off" in a URL argument is refused.
            values = [a for a in inputs.arguments if a.source not in ("query", "path")]
            paths = [a for a in inputs.arguments if a.source == "path"]
            ctx.log_fields["waf_graphql_arguments"] = len(values)
            view = _arguments_json(values) if values else b""
            uri = self._uri(req, paths, drop_graphql=True)
            return self._inspect(req, ctx, view, "JSON" if view else None, None, uri, json_view=bool(view))
        uri = self._uri(req, [Argument("path", k, v) for k, v in req.path_params.items()], drop_graphql=False)
        passes: list[tuple[bytes, str | None]] = []
        ct = None
        if self.inspect_body and req.has_body():
            try:
                passes, ct = await self._body(req, ctx)
            except BodyRefused as exc:
                ctx.log_fields["waf"] = {"refused": exc.type, "blocked": self.block}
                if self.block:
                    self.refused += 1
                    return exc.response(req)
                passes = []
            except (BodyTooLarge, BodyTimeout, ClientDisconnected) as exc:
                return body_problem(exc, req) or problem(
                    400, "bad-request", "the client went away", request_id=req.request_id
                )
        strings = _graphql_escaped_strings(req, ct)
        if strings:  # the decoded string arguments of a GraphQL query that uses escapes
            passes = [*(passes or [(b"", None)]), (orjson.dumps({"graphql": strings}), "JSON")]
        # one ModSecurity transaction per view of the body (usually one; the headers, path and
        # query alone when there is no body); the first that blocks answers
        for body, processor in passes or [(b"", None)]:
            resp = self._inspect(req, ctx, body, processor, ct, uri)
            if resp is not None:
                return resp
        return None

    async def _graphql(self, req: Request, ctx: Context) -> ApiInputs | None:
        """The request's API inputs when it is a GraphQL request this route reads as one
        (`graphql` setting) and every document in it parses; None otherwise: the request is then
        inspected as any other, a document the parser cannot read as text (docs/waf.md)."""
        mode = self.config.graphql
        # auto: by the route's name (its path pattern unless named), which the operator wrote;
        # never by the request's path, where a client could write "graphql" into a parameter
        if mode == "off" or (mode == "auto" and "graphql" not in req.route_name.lower()):
            return None
        if req.has_body():
            if not self.inspect_body or req.method in METHODS_WITHOUT_BODY:
                return None
            ct = bodies.content_type(req)
            if ct is not None and (ct.kind not in ("json", "form", "graphql") or ct.media in self.uninspected):
                return None  # not a GraphQL body (an upload, XML, ...): inspected as any other body
        inputs = await api_inputs(req, ctx, graphql=None, max_body=self.max_body)
        if not inputs.graphql or inputs.unparsed:
            return None
        return inputs

    @staticmethod
    def _uri(req: Request, extra: list[Argument], drop_graphql: bool) -> str:
        """The URI ModSecurity is shown: the path, the query as sent (without its GraphQL
        parameters when `drop_graphql`), then `extra` as `name=value` query arguments, so CRS
        inspects them as ARGS like any query parameter."""
        query = req.query.decode("latin-1")
        if drop_graphql and query:
            query = "&".join(p for p in query.split("&") if unquote_plus(p.split("=", 1)[0]) not in GRAPHQL_PARAMS)
        added = "&".join(f"{quote(a.name, safe='')}={quote(_text(a.value), safe='')}" for a in extra)
        q = f"{query}&{added}" if query and added else query or added
        return req.path + ("?" + q if q else "")

    async def _body(
        self, req: Request, ctx: Context
    ) -> tuple[list[tuple[bytes, str | None]], bodies.ContentType | None]:
        """The views of the body ModSecurity inspects, each with the processor that parses it
        (None: ModSecurity's own choice from the Content-Type, i.e. multipart/form-data)."""
        try:
            length = req.content_length()
        except ValueError:
            raise BodyRefused(400, "bad-request", "the Content-Length header is not a number") from None
        if length is not None and length > self.max_body and self.block:
            raise BodyRefused(413, "body-too-large", f"bodies over {self.max_body} bytes cannot be inspected")
        ct = bodies.content_type(req)
        if ct is not None and ct.media in self.uninspected and not bodies.mentions_json(req):
            return [], ct  # (a type that mentions JSON anywhere is read as JSON by Laravel: inspected)
        body = await bodies.read_body(req, ctx, limit=self.max_body if self.block else None)
        if len(body) > self.max_body:
            if self.block:
                raise BodyRefused(413, "body-too-large", f"bodies over {self.max_body} bytes cannot be inspected")
            return [], ct  # detect mode: passes uninspected, as documented
        if not body:
            return [], ct
        return self._views(body, ct, ctx), ct

    def _views(self, body: bytes, ct: bodies.ContentType | None, ctx: Context) -> list[tuple[bytes, str | None]]:
        """The views of a read, non-empty body: by its type, or by sniffing an untyped one."""
        kind: str = ct.kind if ct is not None else "other"
        if kind == "multipart":
            if ct is not None and ct.media != "multipart/form-data":
                raise BodyRefused(
                    415, "uninspectable-body", f"{ct.media} bodies cannot be inspected (only multipart/form-data)"
                )
            passes: list[tuple[bytes, str | None]] = [(body, None)]
            if self.config.inspect_files and ct is not None:
                files = bodies.multipart_files(body, ct)
                if files:  # the file contents, each one whole value
                    passes.append((orjson.dumps({"files": files}), "JSON"))
            return passes
        if bodies.wide_text(body):
            if kind == "other" and ct is not None:
                raise BodyRefused(
                    415,
                    "uninspectable-body",
                    f"{ct.media} bodies look binary or UTF-16/32: the "
                    "route must list the type in waf.uninspected_types to pass them",
                )
            raise BodyRefused(
                415,
                "unsupported-charset",
                "bodies are inspected as UTF-8 or an ASCII-compatible charset, not UTF-16/32",
            )
        sniffed = bodies.sniff(body)
        if kind == "other":
            if self.config.untyped_bodies == "refuse":
                what = f"{ct.media} bodies" if ct is not None else "bodies without a Content-Type"
                raise BodyRefused(415, "uninspectable-body", f"{what} cannot be inspected here")
            ctx.log_fields["waf_body_sniffed"] = sniffed
            kind = {"json": "json", "xml": "xml", "form": "form"}.get(sniffed, "text")
        # a body that is JSON is also inspected as JSON whatever it was declared as: a lenient
        # upstream may parse it as JSON, which decodes escapes (\u0075nion) the other views keep
        also_json = [(body, "JSON")] if sniffed == "json" and kind in ("form", "graphql", "text") else []
        if kind == "json":
            return [(body, "JSON")]
        if kind == "form":
            return [(body, "URLENCODED"), *also_json]
        if kind == "xml":
            # every string of the parsed document as a JSON array: ModSecurity's own XML processor
            # shows CRS only text nodes (XML:/*), so attribute values would pass uninspected, and
            # libxml2 never sees a client's XML (no DTD reaches any parser: docs/waf.md)
            strings = bodies.parse_xml(body, max_depth=self.config.xml_max_depth)
            return [(orjson.dumps({"xml": strings}), "JSON")]
        # application/graphql is inspected exactly as the same query sent in JSON; other text as
        # one whole value (a JSON string, so no splitting at & or = can hide a part of it)
        text = body.decode("utf-8", errors="replace")
        wrapped = orjson.dumps({"query": text} if kind == "graphql" else {"body": text})
        return [(wrapped, "JSON"), *also_json]

    def _inspect(
        self,
        req: Request,
        ctx: Context,
        body: bytes,
        processor: str | None,
        ct: bodies.ContentType | None,
        uri: str,
        json_view: bool = False,
    ) -> Response | None:
        """One ModSecurity transaction, then its verdict. `json_view`: `body` is the gateway's JSON
        view of the request's values (not the client's bytes), shown as application/json."""
        matched, it = self._transaction(req, ctx, body, processor, ct, uri, json_view)
        return self._verdict(req, ctx, matched, it, processor)

    def _transaction(
        self,
        req: Request,
        ctx: Context,
        body: bytes,
        processor: str | None,
        ct: bodies.ContentType | None,
        uri: str,
        json_view: bool,
    ) -> tuple[list[tuple[int, str]], Any]:
        """Run phases 1 and 2 over the request as shown; the rules that matched and the
        intervention (None when nothing disruptive happened)."""
        matched: list[tuple[int, str]] = []
        self._matched[0] = matched
        decoded = ctx.log_fields.get("body_decoded") is not None
        # phases 1 and 2 only: no response phases, and no logging phase (ModSecurity's own audit
        # log is not used: the gateway's audit line carries the verdict)
        t = self.transaction(self.engine, self.rules, req.request_id or f"waf-{next(self._serial)}")
        t.process_connection(ip_text(req.client_ip) if req.client_ip else "0.0.0.0", 0, "127.0.0.1", 0)
        t.process_uri(uri, req.method, "1.1")
        for k, v in req.headers:
            if k == _PROCESSOR_LOWER or (decoded and k == b"content-encoding"):
                continue
            if k == b"content-length" and body:
                v = str(len(body)).encode()
            elif k == b"content-type" and json_view:
                v = b"application/json"  # the client's type (json, form, graphql) was checked by bodies
            elif k == b"content-type" and ct is not None and ct.kind == "multipart":
                v = _canonical_multipart(ct, v)
            t.add_request_header(k.decode("latin-1"), v.decode("latin-1"))
        if processor is not None:
            t.add_request_header(_PROCESSOR, processor)
        t.process_request_headers()
        if body:
            t.append_request_body(body)
        t.process_request_body()
        return matched, t.intervention()

    def _verdict(
        self, req: Request, ctx: Context, matched: list[tuple[int, str]], it: Any, processor: str | None
    ) -> Response | None:
        """The transaction's outcome: logged, and answered 400 (body integrity) or 403 (attack
        rules) in block mode."""
        integrity = 0
        if it is not None and it.status == 400:
            m = _RULE_ID.search(it.log or "")
            integrity = int(m.group(1)) if m else 200002
        # the attack rules that matched, not CRS's bookkeeping (anomaly evaluation 949xxx, setup 9000xx)
        rules = sorted({rid for rid, _ in matched if 910000 <= rid < 949000})
        disruptive = it is not None and it.disruptive
        if not matched and not integrity:
            return None
        ctx.log_fields.setdefault("waf", {}).update(
            {
                "rules": rules or [integrity],
                "blocked": (disruptive or bool(integrity)) and self.block,
                "messages": [msg for rid, msg in matched if rid in rules][:5],
            }
        )
        if processor is not None:
            ctx.log_fields["waf"]["processor"] = processor
        if integrity and self.block:
            self.refused += 1
            resp = problem(
                400,
                "unparsable-body",
                _INTEGRITY.get(integrity, _INTEGRITY[200002]),
                request_id=req.request_id,
                extra={"rules": [integrity]},
            )
            resp.reason = f"waf rule {integrity}"
            return resp
        if disruptive and self.block:
            self.blocked += 1
            resp = problem(
                403,
                "waf-blocked",
                "the request was refused by the web application firewall",
                request_id=req.request_id,
                extra={"rules": rules},
            )
            resp.reason = "waf rules " + ",".join(str(r) for r in rules)
            return resp
        return None

    # -- GraphQL over WebSocket (gateway/websocket.py) ------------------------------------------
    async def on_ws_message(self, req: Request, ctx: Context, message: WsMessage) -> Response | None:
        """A GraphQL `subscribe`/`start` on an open socket: its arguments — the variables and the
        string values written in the query, as its server decodes them — are inspected as one
        JSON body (the query's syntax itself is the GraphQL guard's). A block becomes the
        protocol's `error` for that id; the socket stays open."""
        if message.operation is None:
            return None
        inputs = operation_inputs(message.operation)
        uri = self._uri(req, [], drop_graphql=True)
        for text in inputs.unparsed:  # unparsable: the guard refuses it; inspected whole meanwhile
            resp = self._inspect(req, ctx, orjson.dumps({"query": text}), "JSON", None, uri, json_view=True)
            if resp is not None:
                return resp
        body = _arguments_json(inputs.arguments)
        return self._inspect(req, ctx, body, "JSON", None, uri, json_view=True)


def _arguments_json(values: list[Argument]) -> bytes:
    """Arguments as one JSON object, name -> value (a list when a name repeats: two operations
    of a batch, a field asked twice with other arguments)."""
    grouped: dict[str, list[Any]] = {}
    for a in values:
        grouped.setdefault(a.name, []).append(a.value)
    try:
        return orjson.dumps({k: v[0] if len(v) == 1 else v for k, v in grouped.items()})
    except TypeError:  # a lone surrogate (`"\ud800"` in a GraphQL string or a JSON variable)
        return orjson.dumps({_utf8(k): [_utf8(x) for x in v] for k, v in grouped.items()})


def _utf8(value: Any) -> Any:
    return value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else value


def _text(value: str | int | float | bool | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _canonical_multipart(ct: bodies.ContentType, original: bytes) -> bytes:
    """The multipart Content-Type as ModSecurity should read it: a quoted boundary made of
    characters that need no quotes is given unquoted (both mean the same, RFC 2046, but
    ModSecurity counts the quotes as a strict-validation error, and clients such as .NET's
    HttpClient always quote). Any other boundary is passed as sent."""
    boundary = ct.params.get("boundary", "")
    if re.fullmatch(r"[0-9A-Za-z'+_\-.]+", boundary):
        return f"{ct.media}; boundary={boundary}".encode()
    return original


def _graphql_escaped_strings(req: Request, ct: bodies.ContentType | None) -> list[str]:
    """String values of a GraphQL query as its server will see them, when the query writes them
    with escapes (`"1 \\u0075nion select"`): the rules would otherwise see only the escaped text.
    Queries come from `?query=`, an application/graphql body, a JSON body's `query` (one operation
    or a batch) or a form's `query`. A query that does not parse is left to the GraphQL guard."""
    texts: list[str] = []
    if req.query and b"query=" in req.query:
        texts += [v for k, v in parse_qsl(req.query.decode("latin-1"), keep_blank_values=True) if k == "query"]
    body = req.body
    if body and (b"\\" in body or b"%5c" in body or b"%5C" in body):  # a backslash, maybe form-encoded
        kind = ct.kind if ct is not None else bodies.sniff(body)
        if kind == "graphql":
            texts.append(body.decode("utf-8", "replace"))
        elif kind == "json":
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                doc = None
            for op in doc if isinstance(doc, list) else [doc]:
                if isinstance(op, dict) and isinstance(op.get("query"), str):
                    texts.append(op["query"])
        elif kind == "form":
            texts += [v for k, v in parse_qsl(body.decode("latin-1"), keep_blank_values=True) if k == "query"]
    out: list[str] = []
    for text in texts:
        if "\\" not in text:
            continue
        try:
            document = graphql_parse(text, no_location=True, max_tokens=20_000)
        except (GraphQLError, RecursionError):
            continue
        out += [node.value for node in _string_values(document)]
    return out


def _string_values(node: Any) -> list[Any]:
    found: list[Any] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, StringValueNode):
            found.append(n)
            continue
        for key in getattr(n, "keys", ()):
            value = getattr(n, key, None)
            if isinstance(value, Node):
                stack.append(value)
            elif isinstance(value, (list, tuple)):
                stack.extend(v for v in value if isinstance(v, Node))
    return found
