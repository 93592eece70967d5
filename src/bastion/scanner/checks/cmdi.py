"""OS command injection in REST parameters: query parameters (and, with --allow-destructive, JSON
body strings) whose names suggest they reach a command line (host, ip, cmd, file, path, args,
parameters, …) get shell separators followed by `echo bs$((N+N))x`. Only a shell computes the
sum, so the answer carrying bs<2N>x proves execution (a reflected input carries the literal
`$((N+N))`, never the result). Harmless by construction: the only command is echo. Tried as A,
then as the other identities and an account api5 raised when A is refused."""

from __future__ import annotations

import re
import secrets

from bastion.scanner.context import sample
from bastion.scanner.model import Finding

IDS = ("api8-cmdi",)
CMDISH = re.compile(
    r"(host|ip|addr|domain|cmd|command|exec|run|ping|target|file|path|dir|arg|option|param|"
    r"flags|filter|query)",
    re.I,
)
SEPARATORS = (";", "&&", "|", "$(", "`")


def _payload(sep: str, expr: str) -> str:
    if sep == "$(":
        return f"$(echo {expr})"
    if sep == "`":
        return f"`echo {expr}`"
    return f" {sep} echo {expr}"


async def run(ctx) -> list[Finding]:
    out: list[Finding] = []
    targets = []
    for op in ctx.ops:
        if op.method == "GET":
            for p in op.params:
                if (
                    p.get("in") == "query"
                    and (p.get("schema") or {}).get("type", "string") == "string"
                    and CMDISH.search(str(p.get("name")))
                ):
                    targets.append((op, "query", p["name"]))
        elif op.method in ("POST", "PUT", "PATCH") and op.body_schema and ctx.allow_destructive:
            for k, sch in (op.body_schema.get("properties") or {}).items():
                if isinstance(sch, dict) and sch.get("type", "string") == "string" and CMDISH.search(k):
                    targets.append((op, "body", k))
    who_all = [w for w in [*ctx.identities, getattr(ctx, "elevated", None)] if w is not None]
    for op, where, name in targets[:8]:
        who = ctx.a
        for candidate in who_all or [None]:
            probe = await _send(ctx, op, where, name, "", candidate)
            if probe.status not in (401, 403):
                who = candidate
                break
        for sep in SEPARATORS:
            n = secrets.randbelow(900) + 100
            value = _payload(sep, f"bs$(({n}+{n}))x")
            r = await _send(ctx, op, where, name, value, who)
            if f"bs{2 * n}x" in r.text:
                out.append(
                    Finding(
                        "api8-cmdi",
                        "OS command injection",
                        "API8",
                        78,
                        "critical",
                        "certain",
                        op.method,
                        r.url.split("?")[0],
                        f"{where} parameter {name!r} = {value!r}: the answer carries "
                        f"bs{2 * n}x, computed by a shell" + (f" (as {who.name})" if who else ""),
                        "Never build shell command lines from input: pass argument lists (no shell), "
                        "and allow-list the values.",
                        "routes:\n  - {openapi: spec.yaml, upstream: api}   # pattern enforced\npolicies:\n  waf: {}",
                        request_headers=ctx.auth(who),
                    )
                )
                break
    return out


async def _send(ctx, op, where, name, value, who):
    if where == "query":
        return await ctx.send(op, who, params={name: value})
    body = sample(op.body_schema)
    return await ctx.send(op, who, json={**(body if isinstance(body, dict) else {}), name: value})
