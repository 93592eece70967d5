"""API9: improper inventory — older versions still answering, undocumented endpoints answering,
a public spec listing internal servers."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from bastion.scanner.model import Finding

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
