"""API8: security misconfiguration — missing security headers, verbose errors, CORS, TRACE,
server version disclosure, SQL and NoSQL injection probes."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from bastion.scanner.model import Finding

IDS = (
    "api8-headers",
    "api8-verbose-errors",
    "api8-cors",
    "api8-trace",
    "api8-server-version",
    "api8-sqli",
    "api8-nosqli",
)
STACK = re.compile(
    r"(Traceback \(most recent call last\)|at [\w.$]+\([\w]+\.java:\d+\)|\.py\", line \d+|"
    r"Exception in thread|System\.\w+Exception|node_modules/|/usr/src/app|DEBUG = True|Werkzeug Debugger)"
)
SQL = re.compile(
    r"(SQL syntax|SQLSTATE|psycopg2?\.|ORA-\d{5}|sqlite3\.|syntax error at or near|unterminated quoted "
    r"string|mysql_fetch|SqlException|You have an error in your SQL)",
    re.I,
)
CORS_FIX = 'policies:\n  cors: {allow_origins: ["https://app.example.com"], allow_credentials: true}'


async def run(ctx) -> list[Finding]:
    out: list[Finding] = []
    a = ctx.a
    ref_op = next((o for o in ctx.gets(with_params=False)), None) or (ctx.gets() or [None])[0]
    ref = await ctx.send(ref_op, a) if ref_op else await ctx.client.request("GET", "/")
    h = ref.headers
    missing = [name for name in ("x-content-type-options", "cache-control") if name not in h]
    if "content-security-policy" not in h and "x-frame-options" not in h:
        missing.append("content-security-policy (frame-ancestors) / x-frame-options")
    if ctx.base_url.startswith("https") and "strict-transport-security" not in h:
        missing.append("strict-transport-security")
    if missing:
        out.append(
            Finding(
                "api8-headers",
                "Security headers are missing",
                "API8",
                693,
                "low",
                "certain",
                "GET",
                ref.url,
                "missing: " + ", ".join(missing),
                "Send the standard security headers on every answer.",
                "policies:\n  security_headers: {}",
            )
        )
    views = await ctx.views()
    bannered = next(
        (
            r
            for r in [ref] + [v for got in views.values() for v in got.values()]
            if re.search(r"\d+\.\d+", r.headers.get("server", "") + " " + r.headers.get("x-powered-by", ""))
            or r.headers.get("x-powered-by")
        ),
        None,
    )
    if bannered is not None:
        h = bannered.headers
        out.append(
            Finding(
                "api8-server-version",
                "The server says what it runs",
                "API8",
                200,
                "low",
                "certain",
                "GET",
                bannered.url,
                f"Server: {h.get('server', '-')}; X-Powered-By: {h.get('x-powered-by', '-')}",
                "Remove version banners (Server, X-Powered-By).",
                "# bastion strips them on the way out",
            )
        )
    r = await ctx.client.request("TRACE", ref.url)
    if r.ok and "message/http" in r.headers.get("content-type", ""):
        out.append(
            Finding(
                "api8-trace",
                "TRACE is enabled",
                "API8",
                693,
                "low",
                "certain",
                "TRACE",
                r.url,
                f"HTTP {r.status}, {r.headers.get('content-type')}",
                "Disable TRACE.",
                "routes: [{path: /*, methods: [GET, POST, PUT, PATCH, DELETE], upstream: api}]",
            )
        )
    out += await _errors(ctx)
    out += await _cors(ctx, ref)
    out += await _injection(ctx)
    return out


async def _errors(ctx) -> list[Finding]:
    a = ctx.a
    for op in ctx.ops:
        if op.method not in ("POST", "PUT", "PATCH") or op.body_schema is None:
            continue
        r = await ctx.send(op, a, content=b'{"broken": ', headers={"Content-Type": "application/json"})
        if trace := STACK.search(r.text):
            return [
                Finding(
                    "api8-verbose-errors",
                    "Malformed input gets a stack trace",
                    "API8",
                    209,
                    "medium",
                    "certain",
                    op.method,
                    r.url,
                    f"HTTP {r.status}: {trace.group(0)} …",
                    "Answer errors with a short problem document; log the details server-side.",
                    "policies:\n  error_masking: {}",
                    request_body='{"broken": ',
                )
            ]
    return []


async def _cors(ctx, ref) -> list[Finding]:
    out: list[Finding] = []
    host = urlsplit(ctx.base_url).hostname or "target"
    url = ref.url
    probes = [
        ("arbitrary origin", "https://evil.example"),
        ("null origin", "null"),
        ("suffix bypass", f"https://{host}.evil.example"),
        ("prefix bypass", f"https://evil{host}"),
        ("plain-http origin", f"http://{host}"),
    ]
    for label, origin in probes:
        r = await ctx.client.request("GET", url, headers={**ctx.auth(ctx.a), "Origin": origin})
        acao = r.headers.get("access-control-allow-origin")
        if acao and (acao == origin or acao == "*"):
            creds = r.headers.get("access-control-allow-credentials", "").lower() == "true"
            if label == "plain-http origin" and ctx.base_url.startswith("http://"):
                continue  # an http target trusting its own http origin is no downgrade
            sev = "high" if creds and acao != "*" else "medium"
            out.append(
                Finding(
                    "api8-cors",
                    f"CORS trusts an {label}" if label[0] in "aeiou" else f"CORS trusts a {label}",
                    "API8",
                    942,
                    sev,
                    "certain",
                    "GET",
                    r.url,
                    f"Origin: {origin} → Access-Control-Allow-Origin: {acao}"
                    + ("; Access-Control-Allow-Credentials: true" if creds else ""),
                    "Allow exact origins only; never reflect the Origin header.",
                    CORS_FIX,
                    request_headers={"Origin": origin},
                )
            )
            if "origin" not in r.headers.get("vary", "").lower() and acao != "*":
                out.append(
                    Finding(
                        "api8-cors",
                        "CORS answers vary by Origin without Vary: Origin",
                        "API8",
                        942,
                        "low",
                        "certain",
                        "GET",
                        r.url,
                        "Access-Control-Allow-Origin reflects the request; no Vary",
                        "Send Vary: Origin with origin-dependent answers (shared caches).",
                        CORS_FIX,
                    )
                )
            break
    out += await _cors_lookalikes(ctx, url)
    pre = await ctx.client.request(
        "OPTIONS",
        url,
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "x-anything",
        },
    )
    allowed = pre.headers.get("access-control-allow-methods", "")
    if pre.headers.get("access-control-allow-origin") in ("https://evil.example", "*") and "DELETE" in allowed.upper():
        out.append(
            Finding(
                "api8-cors",
                "Preflight allows destructive methods for any origin",
                "API8",
                942,
                "medium",
                "certain",
                "OPTIONS",
                pre.url,
                f"Allow-Methods: {allowed}",
                "Allow only what pages need.",
                CORS_FIX,
            )
        )
    return out


async def _injection(ctx) -> list[Finding]:
    out: list[Finding] = []
    a = ctx.a
    for op in ctx.gets():
        strings = [
            p["name"]
            for p in op.params
            if p.get("in") == "query" and (p.get("schema") or {}).get("type", "string") == "string"
        ]
        for name in strings:
            r = await ctx.send(op, a, params={name: "scan'\""})
            if error := SQL.search(r.text):
                out.append(
                    Finding(
                        "api8-sqli",
                        "A quote in a parameter causes a SQL error",
                        "API8",
                        89,
                        "high",
                        "firm",
                        "GET",
                        r.url,
                        f"parameter {name!r}: {error.group(0)}",
                        "Use parameterised queries; validate input against the spec.",
                        "routes:\n  - {openapi: spec.yaml, upstream: api}\npolicies:\n  waf: {}",
                    )
                )
                break
    for op in ctx.ops:
        if op.method != "POST" or not op.body_schema:
            continue
        props = list(((op.body_schema or {}).get("properties") or {}).keys())
        if not props or not any(w in op.path.lower() for w in ("login", "signin", "auth", "session")):
            continue
        base = {k: "scanner-" + k for k in props}
        normal = await ctx.client.request("POST", ctx.fill(op), json=base)
        injected = {k: {"$ne": None} for k in props if "user" not in k and "name" not in k and "email" not in k}
        known = next((i.username for i in ctx.identities if i.username), None)
        probe = {**base, **injected}
        for k in props:
            if known and ("user" in k or "name" in k or "email" in k):
                probe[k] = known
        r = await ctx.client.request("POST", ctx.fill(op), json=probe)
        if r.ok and not normal.ok:
            out.append(
                Finding(
                    "api8-nosqli",
                    "A query operator in JSON bypasses the login",
                    "API8",
                    943,
                    "high",
                    "certain",
                    "POST",
                    r.url,
                    f'{{"$ne": null}} in {sorted(injected)} → HTTP {r.status} (HTTP {normal.status} without it)',
                    "Type-check input (a password is a string) before it reaches the database.",
                    "routes:\n  - {openapi: spec.yaml, upstream: api}   # type: string enforced",
                )
            )
    return out


async def _cors_lookalikes(ctx, url: str) -> list[Finding]:
    """With the origins the API is meant to trust (scan option `origins`, bastion's pattern
    syntax: `https://*.example.com`): the look-alikes `bastion cors-audit` builds for each
    (suffix, prefix, sibling, dot, downgrade; those the list itself allows are dropped). A
    look-alike the server trusts is an origin-matching bug (an unescaped dot in a regex, a
    missing anchor). Nothing to build them from without the list: an API does not say which
    front-ends it serves."""
    if not ctx.origins:
        return []
    from bastion.cors_audit.origins import AllowList, probe_origins

    allowed = AllowList(ctx.origins)
    out: list[Finding] = []
    target_host = urlsplit(url).hostname or ""
    for p in probe_origins(url, allowed):
        if not p.lookalike or target_host in p.imitates:
            continue  # look-alikes of the target's own host are the checks above
        r = await ctx.client.request("GET", url, headers={**ctx.auth(ctx.a), "Origin": p.origin})
        if r.headers.get("access-control-allow-origin") != p.origin:
            continue
        creds = r.headers.get("access-control-allow-credentials", "").lower() == "true"
        out.append(
            Finding(
                "api8-cors",
                f"CORS trusts a {p.kind} look-alike of a trusted origin",
                "API8",
                942,
                "high" if creds else "medium",
                "certain",
                "GET",
                r.url,
                f"Origin: {p.origin} (a {p.kind} look-alike of {p.imitates}) → Access-Control-Allow-Origin: "
                f"{p.origin}" + ("; Access-Control-Allow-Credentials: true" if creds else ""),
                "Match origins exactly (a set of strings), or anchor and escape every regex (re.escape the host).",
                CORS_FIX,
                request_headers={"Origin": p.origin},
            )
        )
        break  # one is enough: the same matcher answers for all
    return out
