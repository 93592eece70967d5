"""API9: improper inventory — older versions still answering, undocumented endpoints answering,
a public spec listing internal servers."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from bastion.scanner.model import Finding

AUDIENCES = ("internal", "partner", "partners", "private", "admin", "export", "integration", "legacy")
STOP = {"created", "updated", "deleted", "string", "number", "value", "items"}

IDS = ("api9-old-version", "api9-undocumented", "api9-spec-internal")
EXTRA = (
    "/debug",
    "/admin",
    "/actuator",
    "/actuator/env",
    "/internal",
    "/.env",
    "/console",
    "/server-status",
    "/metrics",
    "/graphiql",
    "/swagger-ui.html",
    "/phpinfo.php",
    "/test",
)
FIX = "routes:\n  - {openapi: spec.yaml, upstream: api}   # what the spec does not declare: 404"


def _internal(host: str | None) -> bool:
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host)
        return ip.is_private or ip.is_loopback or ip.is_link_local
    except ValueError:
        return host == "localhost" or host.endswith((".internal", ".local", ".corp", ".lan"))


async def run(ctx) -> list[Finding]:
    out: list[Finding] = []
    a = ctx.a
    documented = {o.path for o in ctx.ops}
    for op in ctx.gets():
        m = re.search(r"/v(\d+)(/|$)", op.path)
        if not m or int(m.group(1)) < 2:
            continue
        older = op.path.replace(f"/v{m.group(1)}", f"/v{int(m.group(1)) - 1}", 1)
        if older in documented:
            continue
        current = await ctx.send(op, a)
        r = await ctx.client.request(
            "GET", ctx.fill(op).replace(f"/v{m.group(1)}", f"/v{int(m.group(1)) - 1}", 1), headers=ctx.auth(a)
        )
        if r.ok and current.ok:
            out.append(
                Finding(
                    "api9-old-version",
                    "An older API version still answers",
                    "API9",
                    1059,
                    "medium",
                    "firm",
                    "GET",
                    r.url,
                    f"HTTP {r.status} on v{int(m.group(1)) - 1} beside the documented v{m.group(1)}",
                    "Retire old versions (410 with a pointer to the new one).",
                    "policies:\n  versioning: {versions: {v1: {retired: true, successor: v2}}}",
                )
            )
            break
    bases = {""}
    if ctx.ops:
        first = ctx.ops[0].path
        m = re.match(r"(/[^{]*?/v\d+)", first)
        if m:
            bases.add(m.group(1))
    for base in sorted(bases):
        for extra in EXTRA:
            path = base + extra
            if path in documented:
                continue
            r = await ctx.client.request("GET", path, headers=ctx.auth(a), record=False)
            if r.ok and r.body and "text/html" not in r.headers.get("content-type", ""):
                ctx.client.seen.append(r)  # what it answers is read by the data-exposure checks too
                out.append(
                    Finding(
                        "api9-undocumented",
                        "An undocumented endpoint answers",
                        "API9",
                        1059,
                        "medium",
                        "firm",
                        "GET",
                        r.url,
                        f"HTTP {r.status}, {len(r.body)} bytes: {r.text[:100]}",
                        "Remove it, or document and protect it.",
                        FIX,
                    )
                )
    out += await _audience_variants(ctx, documented)
    if ctx.spec and ctx.spec_url and ctx.spec_url.startswith("http"):
        for server in ctx.spec.get("servers") or []:
            url = str((server or {}).get("url", ""))
            if _internal(urlsplit(url).hostname):
                out.append(
                    Finding(
                        "api9-spec-internal",
                        "The public spec lists an internal server",
                        "API9",
                        200,
                        "low",
                        "certain",
                        "GET",
                        ctx.spec_url,
                        f"servers: {url}",
                        "Publish a spec without internal hosts.",
                        "# serve a filtered spec",
                    )
                )
    return out


def _words(schema, spec, depth: int = 0) -> list[str]:
    """The words of the property names in a (response) schema, in order: shipping_address →
    shipping, address; imageUrl → image (words under 5 letters and a few generic ones left out)."""
    from bastion.scanner.discovery import deref

    schema = deref(spec, schema)
    if not isinstance(schema, dict) or depth > 3:
        return []
    out: list[str] = []
    if isinstance(schema.get("items"), dict):
        out += _words(schema["items"], spec, depth + 1)
    for name, sub in (schema.get("properties") or {}).items():
        for w in re.split(r"[_\-]|(?<=[a-z])(?=[A-Z])", str(name)):
            w = w.lower()
            if len(w) >= 5 and w.isalpha() and w not in STOP:
                out.append(w)
        out += _words(sub, spec, depth + 1)
    return list(dict.fromkeys(out))


def _response_schema(ctx, op):
    from bastion.scanner.discovery import base_path

    base = base_path(ctx.spec)
    item = (ctx.spec.get("paths") or {}).get(op.path[len(base) :] if base and op.path.startswith(base) else op.path)
    responses = ((item or {}).get("get") or {}).get("responses") or {}
    ok = responses.get("200") or responses.get(200) or {}
    content = (ok.get("content") or {}).get("application/json") or {}
    return content.get("schema") or ok.get("schema")  # OpenAPI 3 / Swagger 2.0


async def _audience_variants(ctx, documented: set[str]) -> list[Finding]:
    """Undocumented twins of documented collections, made for another audience (a partner, an
    internal job, an export) and left out of the public spec: /{word}{collection} for the usual
    audience words and for the words of the collection's own response schema (an order with a
    shipping_address is likely also served at /shipping/orders). A twin that answers JSON where a
    made-up prefix does not is reported — without credentials, when the collection is secured,
    as a missing authentication."""
    if not ctx.spec:
        return []
    import secrets

    out: list[Finding] = []
    for op in ctx.gets(with_params=False)[:10]:
        schema = _response_schema(ctx, op)
        if not isinstance(schema, (dict,)):
            continue
        from bastion.scanner.discovery import deref

        if (deref(ctx.spec, schema) or {}).get("type") != "array":
            continue  # collections only
        control = await ctx.client.request("GET", f"/{secrets.token_hex(4)}{op.path}", record=False)
        if control.ok:
            continue  # a catch-all answers anything
        words = list(dict.fromkeys([*AUDIENCES, *_words(schema, ctx.spec)[:10]]))
        for word in words:
            path = f"/{word}{op.path}"
            if path in documented:
                continue
            r = await ctx.client.request("GET", path, record=False)
            anonymous = r.ok
            if not r.ok and ctx.a is not None and r.status in (401, 403):
                r = await ctx.client.request("GET", path, headers=ctx.auth(ctx.a), record=False)
            if not r.ok or not r.body or "json" not in r.headers.get("content-type", ""):
                continue
            ctx.client.seen.append(r)  # its answer is read by the data-exposure checks too
            open_twin = anonymous and op.secured
            out.append(
                Finding(
                    "api9-undocumented",
                    "An undocumented twin of a secured collection answers without credentials"
                    if open_twin
                    else "An undocumented endpoint answers",
                    "API9",
                    306 if open_twin else 1059,
                    "high" if open_twin else "medium",
                    "firm",
                    "GET",
                    r.url,
                    f"GET {path} (not in the spec, beside the documented {op.path}"
                    + (", which requires credentials" if op.secured else "")
                    + f") → HTTP {r.status} "
                    + ("without credentials" if anonymous else f"as {ctx.a.name if ctx.a else '?'}")
                    + f", {len(r.body)} bytes: {r.text[:100]}; a made-up prefix → HTTP {control.status}",
                    "Remove it, or document it and give it the same authentication as the public one.",
                    FIX,
                )
            )
            break
    return out
