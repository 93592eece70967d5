"""API5: function level — admin-like operations usable by a low-privilege identity; method
switching on resources the spec declares read-only (with --allow-destructive only)."""

from __future__ import annotations

import re

from bastion.scanner.model import Finding

IDS = ("api5-admin", "api5-method-switch")
ADMINISH = re.compile(r"/(admin|administrator|internal|manage|management|staff|superuser|root)(/|$)", re.I)


async def run(ctx) -> list[Finding]:
    out: list[Finding] = []
    low = ctx.identities[-1] if ctx.identities else None  # the last identity is the least privileged
    for op in ctx.gets():
        if not ADMINISH.search(op.path) or low is None:
            continue
        r = await ctx.send(op, low)
        if r.ok:
            out.append(Finding("api5-admin", "An admin operation answers a normal user", "API5", 285, "high", "firm",
                               "GET", r.url, f"{low.name} got HTTP {r.status}: {r.text[:120]}",
                               "Check the caller's role or scope on every administrative operation.",
                               "routes:\n  - path: /admin/*\n    policies: {authorization: {claims: {role: [admin]}}}",
                               request_headers=ctx.auth(low)))
    if not ctx.allow_destructive:
        return out
    by_path: dict[str, set[str]] = {}
    for op in ctx.ops:
        by_path.setdefault(op.path, set()).add(op.method)
    a = ctx.a
    for path, methods in by_path.items():
        if methods != {"GET"} or "{" not in path:
            continue
        op = next(o for o in ctx.ops if o.path == path)
        for method in ("DELETE", "PUT"):
            r = await ctx.client.request(method, ctx.fill(op, "999999"), headers=ctx.auth(a),
                                         json={} if method == "PUT" else None)
            if r.ok:
                out.append(Finding("api5-method-switch", f"{method} accepted on a read-only resource", "API5", 650,
                                   "high", "firm", method, r.url, f"HTTP {r.status}; the spec declares only GET",
                                   "Refuse methods an operation does not declare (405).",
                                   "routes:\n  - {openapi: spec.yaml, upstream: api}   # undeclared methods: 405",
                                   request_headers=ctx.auth(a)))
                break
    return out
