"""API3: object property level — mass assignment (privileged properties accepted and reflected)
and excessive data exposure (secrets, hashes, card numbers in any response seen)."""

from __future__ import annotations

import re

import orjson

from bastion.scanner.context import sample
from bastion.scanner.model import Finding

IDS = ("api3-mass-assignment", "api3-data-exposure")
PRIVILEGED = {"role": "admin", "is_admin": True, "admin": True, "isAdmin": True}
SENSITIVE = re.compile(r"^(password|passwd|pwd|password_hash|passwordhash|hash|secret|client_secret|api_?key|"
                       r"private_key|ssn|credit_?card|card_number|cvv|access_token|refresh_token|otp_secret)$", re.I)
CARD = re.compile(r"^\d{13,19}$")


def _luhn(number: str) -> bool:
    digits = [int(c) for c in number][::-1]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0


def _walk(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"{path}/{k}", k, v
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value[:50]):
            yield from _walk(v, f"{path}/{i}")


async def run(ctx) -> list[Finding]:
    out: list[Finding] = []
    a = ctx.a
    for op in ctx.ops:
        if op.method not in ("POST", "PUT", "PATCH") or op.body_schema is None or a is None:
            continue
        if any(w in op.path.lower() for w in ("login", "token", "register", "signup")):
            continue
        if not op.path_params and not ctx.allow_destructive:
            continue  # a collection write creates shared data: only with --allow-destructive
        body = sample(op.body_schema)
        body = {**body, **PRIVILEGED} if isinstance(body, dict) else dict(PRIVILEGED)
        r = await ctx.send(op, a, json=body)
        doc = r.json() if r.ok else None
        if isinstance(doc, dict) and any(doc.get(k) == v for k, v in PRIVILEGED.items()):
            out.append(Finding("api3-mass-assignment", "Privileged properties are accepted and reflected", "API3",
                               915, "high", "firm", op.method, r.url,
                               f"sent {sorted(PRIVILEGED)}; the answer carries "
                               f"{sorted(k for k, v in PRIVILEGED.items() if doc.get(k) == v)}",
                               "Accept only the properties a client may set (allow-lists, additionalProperties: false).",
                               "routes:\n  - {openapi: spec.yaml, upstream: api}   # unknown properties refused",
                               request_headers=ctx.auth(a), request_body=orjson.dumps(body).decode()))
    reported: set[tuple[str, str]] = set()
    for resp in list(ctx.client.seen):
        doc = resp.json() if resp.ok else None
        if doc is None:
            continue
        for ptr, key, value in _walk(doc):
            hit = None
            if SENSITIVE.match(str(key)) and value not in (None, "", False):
                hit = f"property {ptr}"
            elif isinstance(value, str) and CARD.match(value.replace(" ", "").replace("-", "")) and \
                    _luhn(value.replace(" ", "").replace("-", "")):
                hit = f"a card number at {ptr}"
            if hit:
                route = resp.url.split("?")[0]
                if (route, str(key)) in reported:
                    continue
                reported.add((route, str(key)))
                out.append(Finding("api3-data-exposure", "A response exposes sensitive data", "API3", 213, "high",
                                   "firm", resp.method, route, f"{hit} = {str(value)[:40]}",
                                   "Return only the properties the caller needs; never hashes, secrets or full numbers.",
                                   "policies:\n  response_filter: {remove: [password_hash, secret]}",
                                   request_headers=resp.request_headers))
    return out
