"""`bastion init`: a commented starter `bastion.yaml` from an OpenAPI spec or a GraphQL endpoint.

Every value only the operator knows (a key's hash, a JWT issuer, its JWKS URL, an audience) is
written as `${TODO_…}`: the loader refuses an unset `${VAR}` naming its line, so a file with a
TODO left cannot pass `bastion check` or start. Filling one = replacing the marker with the value
(or with a real `${ENV_VAR}` for a secret).

The YAML is written as text, not dumped, because its comments are the point (PyYAML drops
comments; every value is emitted as JSON, which is valid YAML, so quoting is always right).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from bastion.openapi.routes import base_path
from bastion.openapi.spec import HTTP_METHODS, Spec, load_spec

if TYPE_CHECKING:
    from graphql import IntrospectionQuery

TODO = re.compile(r"\$\{(TODO_[A-Z0-9_]+)\}")
# operations that take credentials or mint tokens: they get the login limits
LOGIN_LIKE = re.compile(
    r"(?<![a-z])(log-?in|sign-?in|sign-?on|signup|sign-up|register|tokens?|sessions?|authenticate|"
    r"auth|password|passwd|reset|otp|mfa|2fa|verify|magic-?link)(?![a-z])",
    re.IGNORECASE,
)


def _login_like(name: str) -> bool:
    """A path or operation/field name that takes credentials (camelCase split: userLogin, signIn)."""
    return bool(LOGIN_LIKE.search(re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name)))


class InitError(ValueError):
    pass


@dataclass
class Starter:
    text: str
    todos: list[tuple[int, str, str]] = field(default_factory=list)  # (line, marker, what to put there)
    notes: list[str] = field(default_factory=list)  # things the operator must know
    extra_files: dict[Path, str] = field(default_factory=dict)  # written beside the config


def j(value: Any) -> str:
    """A value as YAML (JSON is YAML, and always quoted right)."""
    return json.dumps(value, ensure_ascii=False)


def _ident(name: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_") or "X"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.todos: list[tuple[int, str, str]] = []

    def __call__(self, line: str = "") -> None:
        self.lines.append(line)

    def todo(self, prefix: str, marker: str, what: str, suffix: str = "") -> None:
        """A line whose value is the marker `${TODO_<marker>}`; `what` goes in a comment above it."""
        indent = len(prefix) - len(prefix.lstrip())
        self.lines.append(" " * indent + f"# TODO: {what}")
        self.lines.append(f'{prefix}"${{TODO_{marker}}}"{suffix}')
        self.todos.append((len(self.lines), f"TODO_{marker}", what))

    def text(self) -> str:
        out = "\n".join(self.lines) + "\n"
        # a `${` anywhere else (a comment) would be expanded by the loader: only markers may have one
        stray = [m for m in re.finditer(r"\$\{[^}]*\}", out) if not TODO.fullmatch(m.group(0))]
        assert not stray, stray
        return out


def _header(w: _Writer, what: str, source: str) -> None:
    today = datetime.date.today().isoformat()
    w(f"# bastion.yaml: written by `bastion init` on {today} from {what}")
    w(f"#   {source}")
    w("#")
    w("# Replace every TODO_ marker below (`bastion check` names the line of the first one left;")
    w("# `bastion init` listed them all), then:  bastion check bastion.yaml  &&  bastion serve -c bastion.yaml")
    w("# Secrets belong in the environment: write them as a dollar sign and the variable's name in")
    w("# braces, e.g. client_secret: <that form of BASTION_CLIENT_SECRET>, never in this file.")
    w("# Every key: docs/config.md. Operating it (metrics, alerts, reload): docs/operations.md.")
    w()


def _listeners_admin(w: _Writer) -> None:
    w("listeners:")
    w("  - host: 127.0.0.1            # loopback. On a public address add  tls: {cert: ..., key: ...}")
    w("    port: 8080                 # (or allow_plaintext: true behind a TLS-terminating proxy)")
    w()
    w("admin:                         # /healthz, /readyz, Prometheus /metrics, /dashboard: keep it private")
    w("  host: 127.0.0.1")
    w("  port: 9901")
    w("  # token: set one (24+ characters, from the environment) to turn on the admin API (/admin/*)")
    w()
    w("trusted_proxies: []            # CIDRs of your load balancers, if they set X-Forwarded-For")
    w()


def _common_policies(w: _Writer, methods: list[str], headers: list[str]) -> None:
    w("  request_id: {}")
    w("  security_headers: {}")
    w("  body_limit: {max_bytes: 1048576}    # 1 MiB; raise it on the routes that take uploads")
    w("  audit: {output: stdout}             # one JSON line per request, secrets redacted")
    w("  cors:")
    w("    # Strict until you say otherwise: no web origin may call this API from a browser.")
    w('    # List the front ends that do, e.g. ["https://app.example.com"] (never "*" with credentials).')
    w("    allow_origins: []")
    w(f"    allow_methods: {j(methods)}")
    w(f"    allow_headers: {j(headers)}")
    w('    expose_headers: ["x-request-id"]')
    w("    allow_credentials: false")


def _operations(spec: Spec) -> list[dict[str, Any]]:
    root = spec.root
    global_security = root.get("security")
    out = []
    for template, item in (root.get("paths") or {}).items():
        item, _ = spec.deref(item, spec.path)
        if not isinstance(item, dict):
            continue
        for method in HTTP_METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            out.append(
                {
                    "method": method.upper(),
                    "path": template,
                    "id": op.get("operationId"),
                    "security": op.get("security", global_security),
                    "op": op,
                }
            )
    return out


def _scopes_by_scheme(ops: list[dict[str, Any]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for o in ops:
        for alt in o["security"] or []:
            for name, scopes in (alt or {}).items():
                found.setdefault(name, set()).update(scopes or [])
    return found


def _scheme(w: _Writer, name: str, sc: dict[str, Any], scopes: set[str], notes: list[str]) -> None:
    kind = sc.get("type")
    m = _ident(name)
    ind = "      "
    if kind == "apiKey":
        w(f"{ind}{j(name)}:             # spec: apiKey in {sc.get('in')} {sc.get('name')!r} (bastion reads it there)")
        w(f"{ind}  type: api_key")
        where = {"header": "header", "query": "query_param", "cookie": "cookie"}.get(str(sc.get("in")))
        if where and sc.get("name"):
            w(f"{ind}  {where}: {j(sc['name'])}")
        w(f"{ind}  keys:                      # by hash only. Make one:  bastion keys new")
        w(f"{ind}    - id: {j(name + '-1')}")
        w(f'{ind}      owner: "first-client"  # who holds it (the subject upstream; rate limits per key)')
        w.todo(f"{ind}      hash: ", f"{m}_HASH", "the `hash:` line printed by `bastion keys new` (sha256:...)")
        w(f"{ind}      scopes: {j(sorted(scopes))}")
        w(f"{ind}  # or keep keys in the token service's database: database: <token_service.database>")
        if sc.get("in") == "query":
            notes.append(
                f"scheme {name!r}: the API key travels in the query string (logged by proxies); prefer a header"
            )
    elif kind in ("http", "oauth2", "openIdConnect"):
        if kind == "http" and str(sc.get("scheme", "")).lower() != "bearer":
            w(f"{ind}# {j(name)}: http {sc.get('scheme')!r} is not supported at the gateway (use bearer tokens")
            w(f"{ind}#   or API keys); the operations that name it fail `bastion check` until the spec changes")
            notes.append(
                f"scheme {name!r} (http {sc.get('scheme')}) cannot be verified by bastion: change the spec "
                "to bearer tokens or API keys"
            )
            return
        what = {
            "http": f"http bearer{' (' + sc['bearerFormat'] + ')' if sc.get('bearerFormat') else ''}",
            "oauth2": "oauth2",
            "openIdConnect": "openIdConnect",
        }[kind]
        w(f"{ind}{j(name)}:             # spec: {what}")
        for flow, f in (sc.get("flows") or {}).items():
            urls = ", ".join(f"{k} {v}" for k, v in f.items() if k.endswith("Url"))
            w(f"{ind}  #   flow {flow}: {urls}")
            if flow in ("implicit", "password"):
                notes.append(
                    f"scheme {name!r}: the OAuth 2.0 {flow} flow is deprecated; use authorization code with PKCE"
                )
        if sc.get("openIdConnectUrl"):
            w(f"{ind}  #   discovery: {sc['openIdConnectUrl']} (its `issuer` and `jwks_uri` go below)")
        w(
            f"{ind}  type: jwt                  # opaque tokens instead: type: introspection, url, client_id, client_secret"
        )
        w(f"{ind}  issuers:")
        w.todo(f"{ind}    - issuer: ", f"{m}_ISSUER", "the exact `iss` of the tokens, e.g. https://id.example.com/")
        w.todo(f"{ind}      jwks_url: ", f"{m}_JWKS_URL", "the issuer's JWKS URL (jwks_uri of its discovery document)")
        w(f"{ind}      audiences:")
        w.todo(f"{ind}        - ", f"{m}_AUDIENCE", "the `aud` your tokens carry for this API (others are refused)")
        w(f'{ind}      algorithms: ["RS256"]  # what the issuer signs with (ES256, EdDSA, ...); never "none"')
        if scopes:
            w(f"{ind}      # scopes the spec asks for: {', '.join(sorted(scopes))} (read from the `scope` claim)")
    elif kind == "mutualTLS":
        w(f"{ind}{j(name)}:             # spec: mutualTLS (the listener needs tls: {{cert, key, client_ca}})")
        w(f"{ind}  type: mtls")
        w(f"{ind}  subjects: {{}}              # certificate CN -> scopes; empty: any certificate client_ca verifies")
        notes.append(f"scheme {name!r} is mutualTLS: give the listener tls with client_ca")
    else:
        w(f"{ind}# {j(name)}: unknown securityScheme type {kind!r}")
        notes.append(f"scheme {name!r} has an unknown type {kind!r}")


def openapi_starter(spec_path: Path, upstream: str, output: Path) -> Starter:
    from bastion.openapi.spec import SpecError

    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        raise InitError(str(exc)) from None
    _check_url(upstream)
    root = spec.root
    info = root.get("info") or {}
    ops = _operations(spec)
    base = base_path(spec, None)
    schemes = {
        n: spec.deref(s, spec.path)[0] for n, s in ((root.get("components") or {}).get("securitySchemes") or {}).items()
    }
    used = _scopes_by_scheme(ops)
    w = _Writer()
    notes: list[str] = []
    _header(
        w, f"the OpenAPI spec {info.get('title', spec_path.name)!r} {info.get('version', '')}".rstrip(), str(spec_path)
    )
    _listeners_admin(w)
    w("upstreams:")
    w("  api:")
    w(f"    urls: [{j(upstream)}]")
    w("    timeouts: {connect: 2, read: 30, total: 60}   # seconds; 504 after")
    w()
    found = {o["method"] for o in ops}
    methods = sorted(found | ({"HEAD"} if "GET" in found else set())) or ["GET"]
    headers = ["content-type"]
    if any(s.get("type") in ("http", "oauth2", "openIdConnect") for s in schemes.values()):
        headers.append("authorization")
    headers += sorted(
        {
            str(s["name"]).lower()
            for s in schemes.values()
            if s.get("type") == "apiKey" and s.get("in") == "header" and s.get("name")
        }
    )
    w("policies:                      # defaults for every route")
    _common_policies(w, methods, headers)
    login = [o for o in ops if o["method"] == "POST" and (_login_like(o["path"]) or _login_like(o["id"] or ""))]
    w("  rate_limit:")
    w('    limits: ["600/minute"]                # per client IP, all routes; per key: {rate: ..., key: [api_key]}')
    literal = [base + o["path"] for o in login if "{" not in o["path"]]
    if login:
        w("    # login-like operations found in the spec (credential guessing): they also get login_limits")
        for o in login:
            w(
                f"    #   {o['method']} {base}{o['path']}"
                + (f"  ({o['id']})" if o["id"] else "")
                + ("  (templated: set x-bastion-rate-limit on it in the spec)" if "{" in o["path"] else "")
            )
    if literal:
        w(f"    login_paths: {j(sorted(set(literal)))}")
    w('    login_limits: ["5/minute"]             # per client IP, on login_paths')
    w("    # store: a Redis URL shared by every gateway (the default, memory, is per process)")
    if schemes:
        w("  auth:")
        w("    schemes:                   # one per securityScheme of the spec, same names")
        for name, sc in schemes.items():
            _scheme(w, name, sc, used.get(name, set()), notes)
        w("    # which scheme each operation needs comes from the spec's `security`")
    w()
    w("routes:")
    w("  # every operation of the spec becomes a route with its security and validation; anything")
    w(f"  # else under {base or '/'} is refused (404 undocumented-endpoint, 405 with Allow).")
    public = [o for o in ops if not o["security"] or any(alt == {} for alt in o["security"])]
    if public:
        w("  #")
        w("  # Operations WITHOUT security. `security: []` ones are public; the others need a credential")
        w("  # behind bastion (fail closed) unless the route says `default_security: public`.")
        for o in public:
            why = "no security at all" if o["security"] is None else "security: [] (public on purpose)"
            w(f"  #   {o['method']:6} {base}{o['path']}" + (f"  {o['id']}" if o["id"] else "") + f"  -- {why}")
            if o["security"] is None:
                notes.append(
                    f"{o['method']} {base}{o['path']} has no security requirement: bastion asks for a "
                    "credential there (fail closed); say `security: []` in the spec, or "
                    "`default_security: public` on the route, if it is meant to be public"
                )
    rel = os.path.relpath(spec_path.resolve(), output.resolve().parent)
    w(f"  - openapi: {j(str(spec_path.resolve()) if rel.startswith('..') else rel)}")
    w("    upstream: api")
    w(f"    # base_path: {j(base or '/')}          # from the spec's first server URL")
    w("    policies:")
    w("      validation:")
    w("        responses: log        # count responses that break their schema; `remove` also drops")
    w("                              # undeclared properties (excessive data exposure, OWASP API3)")
    text = w.text()
    return Starter(text, w.todos, notes)


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InitError(f"not an http(s) URL: {url!r}")


def introspect(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """One introspection query to the GraphQL endpoint; the `data` of its answer."""
    from graphql import get_introspection_query

    from bastion.net.fetch import FetchError, fetch

    body = json.dumps({"query": get_introspection_query(descriptions=False)}).encode()

    async def go() -> tuple[int, bytes]:
        return await fetch(
            url,
            method="POST",
            body=body,
            timeout=timeout,
            max_bytes=16 * 1024 * 1024,
            headers=[(b"content-type", b"application/json"), (b"accept", b"application/json")],
        )

    try:
        status, raw = asyncio.run(go())
    except (TimeoutError, FetchError, OSError) as exc:
        raise InitError(f"introspection of {url} failed: {type(exc).__name__}: {exc}") from None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise InitError(f"introspection of {url}: HTTP {status}, not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict) or "__schema" not in doc["data"]:
        errors = doc.get("errors") if isinstance(doc, dict) else None
        raise InitError(
            f"introspection of {url}: HTTP {status}, no schema in the answer"
            + (f" ({str(errors)[:200]})" if errors else " (is introspection turned off upstream?)")
        )
    return doc["data"]


def graphql_starter(url: str, upstream: str | None, output: Path, schema_name: str | None = None) -> Starter:
    from graphql import build_client_schema, print_schema

    _check_url(url)
    parts = urlsplit(url)
    origin = upstream or f"{parts.scheme}://{parts.netloc}"
    _check_url(origin)
    path = parts.path or "/"
    data = introspect(url)
    try:
        # the introspection answer is JSON of unknown shape: build_client_schema checks it and
        # raises (caught below) when it is not an IntrospectionQuery
        schema = build_client_schema(cast("IntrospectionQuery", data))
    except Exception as exc:
        raise InitError(f"introspection of {url}: not a usable schema ({exc})") from None
    sdl = print_schema(schema)
    schema_file = schema_name or (output.stem + ".schema.graphql")
    mutation = schema.mutation_type
    mutation_name, mutation_fields = (mutation.name, mutation.fields) if mutation is not None else ("", {})
    login = sorted(f"{mutation_name}.{f}" for f in mutation_fields if _login_like(f))
    other_mutations = sorted(f"{mutation_name}.{f}" for f in mutation_fields if f"{mutation_name}.{f}" not in login)
    w = _Writer()
    notes: list[str] = []
    _header(w, "the GraphQL endpoint", f"{url} (introspected once; schema in {schema_file})")
    _listeners_admin(w)
    w("upstreams:")
    w("  graphql:")
    w(f"    urls: [{j(origin)}]")
    w("    timeouts: {connect: 2, read: 30, total: 60}")
    w()
    w("policies:")
    _common_policies(w, ["GET", "POST"], ["content-type", "authorization"])
    w("  rate_limit:")
    w('    limits: ["600/minute"]              # requests per client IP on routes without their own')
    w("  # auth: GraphQL has no security schemes to read; say how clients authenticate, e.g.")
    w(
        "  #   schemes: {bearer: {type: jwt, issuers: [{issuer: ..., jwks_url: ..., audiences: [...], algorithms: [RS256]}]}}"
    )
    w("  #   and `require: [{bearer: []}]` on the route (docs/config.md, policies.auth)")
    w()
    w("routes:")
    w(f"  - path: {j(path)}")
    w('    methods: ["GET", "POST"]')
    w("    upstream: graphql")
    w("    policies:")
    w("      graphql:")
    w("        mode: enforce                 # audit: log what would be refused, refuse nothing (to tune first)")
    w("        limits: {max_depth: 10, max_aliases: 15, max_root_fields: 10, max_cost: 1000, max_batch: 5}")
    w("        costs:")
    w(f"          schema_file: {j(schema_file)}   # list fields multiply their children's cost")
    w("          default_field_cost: 1")
    if login or other_mutations:
        w("          fields:                       # mutations cost more; credential-taking ones most")
        for f in login:
            w(f"            {j(f)}: 100                # login-like: about 10 a minute under the limit below")
        for f in other_mutations:
            w(f"            {j(f)}: 10")
    w("        introspection: false          # or introspection_scopes / introspection_ips for your tools")
    w("        require_operation_name: false # true in production: every operation named, easier to audit")
    w("        # allowlist: allowlist.json   # only registered queries run: bastion graphql register q/*.graphql")
    w("      rate_limit:")
    w("        # counts cost points, not requests: the guard leaves each operation's cost for it")
    w('        limits: [{rate: "1000/minute", key: ["ip"], name: "graphql-cost"}]')
    text = w.text()
    st = Starter(text, w.todos, notes)
    st.extra_files[output.resolve().parent / schema_file] = sdl + "\n"
    return st
