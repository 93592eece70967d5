"""API4: unrestricted resource consumption — no rate limit on a bounded burst, no maximum page
size, no body size limit."""

from __future__ import annotations

import asyncio

from bastion.scanner.model import Finding

IDS = ("api4-no-rate-limit", "api4-page-size", "api4-body-size")
PAGE_PARAMS = ("limit", "per_page", "page_size", "pagesize", "size", "count", "max")


async def run(ctx) -> list[Finding]:
    out: list[Finding] = []
    a = ctx.a
    for op in ctx.gets():
        names = [p.get("name") for p in op.params if p.get("in") == "query"]
        page = next((n for n in names if str(n).lower() in PAGE_PARAMS), None)
        if page is None:
            continue
        r = await ctx.send(op, a, params={page: 100000})
        doc = r.json() if r.ok else None
        items = doc if isinstance(doc, list) else next((v for v in (doc or {}).values() if isinstance(v, list)), None) \
            if isinstance(doc, dict) else None
        if items is not None and len(items) > 1000:
            out.append(Finding("api4-page-size", "No maximum page size", "API4", 770, "medium", "certain", "GET", r.url,
                               f"?{page}=100000 returned {len(items)} items",
                               "Cap page sizes (and declare maximum in the spec).",
                               "routes:\n  - {openapi: spec.yaml, upstream: api}   # maximum: 100 enforced"))
    target = next((o for o in ctx.ops if o.method == "POST"), None)
    if target is not None:
        big = b'{"pad":"' + b"x" * (2 * 1024 * 1024) + b'"}'
        r = await ctx.send(target, a, content=big, headers={"Content-Type": "application/json"})
        if r.status and r.status != 413 and r.error is None:
            out.append(Finding("api4-body-size", "A 2 MiB body is read without complaint", "API4", 770, "medium",
                               "firm", "POST", r.url, f"HTTP {r.status} (not 413) for a 2 MiB JSON body",
                               "Limit request bodies to what the API needs.",
                               "policies:\n  body_limit: {max_bytes: 65536}"))
    burst_op = next((o for o in ctx.gets(with_params=False)), None)
    if burst_op is not None:
        rs = await asyncio.gather(*(ctx.send(burst_op, a) for _ in range(ctx.burst)))
        codes = [r.status for r in rs]
        if codes and 429 not in codes and all(0 < c < 500 for c in codes):
            out.append(Finding("api4-no-rate-limit", f"No rate limit on a burst of {ctx.burst} requests", "API4", 770,
                               "medium", "firm", "GET", rs[0].url, f"{len(codes)} requests, answers {sorted(set(codes))}",
                               "Rate-limit per client (and per key), with Retry-After.",
                               "policies:\n  rate_limit: {limits: [100/minute]}"))
    return out
