"""API4: unrestricted resource consumption — no rate limit on a bounded burst, no maximum page
size, no body size limit."""

from __future__ import annotations

import asyncio
import re
import time

from bastion.scanner.context import sample
from bastion.scanner.model import Finding

IDS = ("api4-no-rate-limit", "api4-page-size", "api4-body-size", "api4-redos")
REGEXISH = re.compile(
    r"(mail|url|uri|website|homepage|link|phone|mobile|name|slug|zip|postal|date|host|domain|"
    r"ip|code|pattern|regex)",
    re.I,
)
# inputs that make the usual backtracking validators blow up, each ending in a character no such
# validator accepts (so nothing is stored): nested quantifiers over one class ((\w+\s?)*),
# repeated label groups in e-mail domains ((\w{2,4})+$), nested path groups in URL checks
FAMILIES = {
    "plain": lambda n: "a" * n + "!",
    "email": lambda n: "a@a." + "a" * n + "!",
    "url": lambda n: "http://a.aa/" + "a" * n + "!",
}
SIZES = (16, 20, 24, 28, 32, 36, 40, 44, 48)
SLOW = 0.8  # seconds of extra time: the series stops here (or when the next step would pass ~8 s)
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
        items = (
            doc
            if isinstance(doc, list)
            else next((v for v in (doc or {}).values() if isinstance(v, list)), None)
            if isinstance(doc, dict)
            else None
        )
        if items is not None and len(items) > 1000:
            out.append(
                Finding(
                    "api4-page-size",
                    "No maximum page size",
                    "API4",
                    770,
                    "medium",
                    "certain",
                    "GET",
                    r.url,
                    f"?{page}=100000 returned {len(items)} items",
                    "Cap page sizes (and declare maximum in the spec).",
                    "routes:\n  - {openapi: spec.yaml, upstream: api}   # maximum: 100 enforced",
                )
            )
    target = next((o for o in ctx.ops if o.method == "POST"), None)
    if target is not None:
        big = b'{"pad":"' + b"x" * (2 * 1024 * 1024) + b'"}'
        r = await ctx.send(target, a, content=big, headers={"Content-Type": "application/json"})
        if r.status and r.status != 413 and r.error is None:
            out.append(
                Finding(
                    "api4-body-size",
                    "A 2 MiB body is read without complaint",
                    "API4",
                    770,
                    "medium",
                    "firm",
                    "POST",
                    r.url,
                    f"HTTP {r.status} (not 413) for a 2 MiB JSON body",
                    "Limit request bodies to what the API needs.",
                    "policies:\n  body_limit: {max_bytes: 65536}",
                )
            )
    out += await _redos(ctx)
    burst_op = next((o for o in ctx.gets(with_params=False)), None)
    if burst_op is not None:
        rs = await asyncio.gather(*(ctx.send(burst_op, a) for _ in range(ctx.burst)))
        codes = [r.status for r in rs]
        if codes and 429 not in codes and all(0 < c < 500 for c in codes):
            out.append(
                Finding(
                    "api4-no-rate-limit",
                    f"No rate limit on a burst of {ctx.burst} requests",
                    "API4",
                    770,
                    "medium",
                    "firm",
                    "GET",
                    rs[0].url,
                    f"{len(codes)} requests, answers {sorted(set(codes))}",
                    "Rate-limit per client (and per key), with Retry-After.",
                    "policies:\n  rate_limit: {limits: [100/minute]}",
                )
            )
    return out


def _families(name: str, schema: dict) -> list[str]:
    fmt = str(schema.get("format", "")).lower()
    low = name.lower()
    if "mail" in low or fmt == "email":
        return ["email", "plain"]
    if any(w in low for w in ("url", "uri", "website", "homepage", "link")) or fmt in ("uri", "url"):
        return ["url", "plain"]
    return ["plain"]


async def _redos(ctx) -> list[Finding]:
    """Timing growth on string fields that are likely regex-validated: a short series of growing
    inputs per family; a finding when the answer time grows several-fold per step up to a slow
    answer while a benign string of the same length stays fast. Safe by construction: small
    sizes, and the series stops at the first slow answer."""
    a = ctx.a
    fields = []
    for op in ctx.ops:
        creates_account = any("pass" in k.lower() for k in ((op.body_schema or {}).get("properties") or {}))
        if (
            op.method in ("POST", "PUT", "PATCH")
            and op.body_schema
            and ((not op.path_params and not creates_account) or ctx.allow_destructive)
        ):
            for k, sch in (op.body_schema.get("properties") or {}).items():
                if (
                    isinstance(sch, dict)
                    and sch.get("type", "string") == "string"
                    and (REGEXISH.search(k) or sch.get("pattern") or sch.get("format") in ("email", "uri", "url"))
                ):
                    fields.append((op, "body", k, sch))
        elif op.method == "GET":
            for p in op.params:
                sch = p.get("schema") or {}
                if (
                    p.get("in") == "query"
                    and sch.get("type", "string") == "string"
                    and (REGEXISH.search(str(p.get("name"))) or sch.get("pattern"))
                ):
                    fields.append((op, "query", p["name"], sch))

    def likely(f) -> int:  # declared patterns and formats first, then e-mail / URL names, then the rest
        _, _, name, sch = f
        return (
            0
            if sch.get("pattern") or sch.get("format") in ("email", "uri", "url")
            else 1
            if re.search(r"(mail|url|uri|website|link)", name, re.I)
            else 2
        )

    fields.sort(key=likely)
    out: list[Finding] = []
    for op, where, name, sch in fields[:4]:

        async def timed(value: str, op=op, where=where, name=name) -> float:
            t = time.monotonic()
            if where == "query":
                await ctx.send(op, a, params={name: value})
            else:
                body = sample(op.body_schema)
                await ctx.send(op, a, json={**(body if isinstance(body, dict) else {}), name: value})
            return time.monotonic() - t

        base = min([await timed("a"), await timed("b")])
        for fam in _families(name, sch):
            times: list[tuple[int, float]] = []
            for n in SIZES:
                d = await timed(FAMILIES[fam](n)) - base
                prev = times[-1][1] if times else 0.0
                times.append((n, d))
                if d > SLOW or (d > 0.25 and d * d / max(prev, 0.005) > 8):
                    break
            n, last = times[-1]
            prev = times[-2][1] if len(times) > 1 else 0.0
            if last < 0.25 or last < 2.5 * max(prev, 0.01):
                continue
            if await timed(FAMILIES[fam](n)) - base < 0.25:  # once more: not a hiccup
                continue
            control = await timed("a" * len(FAMILIES[fam](n))) - base  # same length, nothing to backtrack on
            if control > SLOW / 4:
                continue
            series = ", ".join(f"{k}: {v * 1000:.0f} ms" for k, v in times)
            out.append(
                Finding(
                    "api4-redos",
                    "A validator backtracks catastrophically (ReDoS)",
                    "API4",
                    1333,
                    "high",
                    "firm",
                    op.method,
                    ctx.client.url(ctx.fill(op)),
                    f"{where} field {name!r}, {fam} inputs of growing length → extra time {series}; "
                    f"a plain string of the same length: {control * 1000:.0f} ms",
                    "Use a linear-time regex engine (RE2) or a non-backtracking pattern; cap input lengths.",
                    "routes:\n  - {openapi: spec.yaml, upstream: api}   # maxLength enforced before the app",
                    request_headers=ctx.auth(a),
                )
            )
            break
    return out
