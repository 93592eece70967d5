"""API5: function level — admin-like operations usable by a low-privilege identity; method
switching on resources the spec declares read-only (with --allow-destructive only)."""

from __future__ import annotations

import re

import orjson

from bastion.scanner.checks.api3 import _privileged, _reads, _snake
from bastion.scanner.context import register_account, sample
from bastion.scanner.model import Finding

IDS = ("api5-admin", "api5-method-switch", "api5-privilege-escalation", "api5-bfla-write")
ROLEISH = re.compile(
    r"^(role|roles|is_?admin|admin|is_?superuser|is_?staff|permissions?|privileges?|user_?type|"
    r"account_?type|access_?level|group|groups)$",
    re.I,
)
USERISH = re.compile(r"^(username|user_?name|user|login|email|user_?id|userid|account)$", re.I)
ACCOUNTISH = re.compile(r"(user|profile|account|member|me|role|permission)", re.I)
SKIP = re.compile(r"(register|signup|sign-up|login|signin|token|session|reset|forgot)", re.I)
ADMINISH = re.compile(r"/(admin|administrator|internal|manage|management|staff|superuser|root)(/|$)", re.I)


ROLE_WORDS = ("admin", "administrator", "employee", "staff", "manager", "moderator", "superuser", "owner")


def _candidates(schema: dict, current) -> list:
    """Values to try for a role-like property: its enum values, else the usual privileged values
    of its type, written like the account's current value (Customer → Admin, Employee, …)."""
    if schema.get("enum"):
        return list(schema["enum"])[:5]
    t = schema.get("type")
    if t == "boolean" or isinstance(current, bool):
        return [True]
    if t == "array" or isinstance(current, list):
        return [["admin"]]
    words = list(ROLE_WORDS[:6])
    if isinstance(current, str) and current[:1].isupper():
        words = [w.capitalize() for w in words]
    elif isinstance(current, str) and current.isupper():
        words = [w.upper() for w in words]
    return words


async def _escalation(ctx) -> list[Finding]:
    """A throwaway account the scan registers sends, with its own token, each account-related
    write whose body has a role-like property, set to a more privileged value; a later read of
    the account (login, token claims, "me" answers) that shows the new value is privilege
    escalation. Only that account is ever changed. A confirmed escalation leaves the elevated
    account to the following checks (ctx.elevated)."""
    out: list[Finding] = []
    ops = []
    for op in ctx.ops:
        props = (op.body_schema or {}).get("properties") or {}
        roles = [k for k in props if ROLEISH.match(k)]
        if (
            op.method in ("PUT", "PATCH", "POST")
            and roles
            and not SKIP.search(op.path)
            and (any(USERISH.match(k) for k in props) or ACCOUNTISH.search(op.path))
        ):
            ops.append((op, roles, props))
    if not ops:
        return out
    acct = await register_account(ctx)
    if acct is None or acct.identity is None:
        return out
    for op, roles, props in ops[:3]:
        before = await _reads(ctx, acct)
        for role_key in roles[:2]:
            current = before.get(_snake(role_key))
            for value in _candidates(props[role_key] if isinstance(props[role_key], dict) else {}, current):
                if value == current:
                    continue
                body = sample(op.body_schema)
                body = body if isinstance(body, dict) else {}
                for k in props:
                    if USERISH.match(k):
                        body[k] = acct.email if "mail" in k.lower() else acct.username
                body[role_key] = value
                r = await ctx.send(op, acct.identity, json=body, value=acct.username)
                if not r.ok:
                    continue
                # a role change may take effect at the next login: read again with a fresh token
                from bastion.scanner.context import login_account

                acct.identity = await login_account(ctx, acct) or acct.identity
                after = await _reads(ctx, acct)
                now = after.get(_snake(role_key))
                if now is not None and now != current and (now == value or _privileged(now)):
                    ctx.elevated = acct.identity
                    out.append(
                        Finding(
                            "api5-privilege-escalation",
                            "A user can raise their own role",
                            "API5",
                            269,
                            "critical",
                            "certain",
                            op.method,
                            r.url,
                            f"a throwaway account sent {role_key}={value!r} "
                            f"(it had {current!r}); its later reads say {role_key}={now!r}",
                            "Role changes are an administrative function: check the caller's role, never trust the body.",
                            "routes:\n  - path: /users/*\n    policies: {authorization: {claims: {role: [admin]}}}",
                            request_headers=ctx.auth(acct.identity),
                            request_body=orjson.dumps(body).decode(),
                        )
                    )
                    return out
    return out


async def _bfla_write(ctx) -> list[Finding]:
    """Inconsistent function-level checks: the least privileged identity is refused (401/403)
    when it creates objects in a collection, yet its DELETE / PUT on an object of the same
    collection passes authorization. Probed without changing anything: the creation with an
    empty body (refused before or at validation) and the delete on an id that does not exist
    (a GET first shows it does not)."""
    low = ctx.identities[-1] if ctx.identities else None
    if low is None:
        return []
    out: list[Finding] = []
    for op in ctx.ops:
        if op.method not in ("DELETE", "PUT", "PATCH") or len(op.path_params) != 1:
            continue
        coll = op.path.split("{")[0].rstrip("/")
        create = next((o for o in ctx.ops if o.path == coll and o.method in ("POST", "PUT")), None)
        if create is None:
            continue
        made = await ctx.send(create, low, json={})
        if made.status not in (401, 403):
            continue  # creating is not refused to this identity: no inconsistency to see
        missing = "987654321"
        reader = next((o for o in ctx.ops if o.path == op.path and o.method == "GET"), None)
        if reader is not None:
            g = await ctx.send(reader, low, value=missing)
            if g.ok:
                continue
        r = await ctx.send(op, low, value=missing, json={} if op.method != "DELETE" else None)
        if r.status in (200, 202, 204, 404, 410):  # past authorization: it went looking for the object
            out.append(
                Finding(
                    "api5-bfla-write",
                    f"{op.method} is not restricted like creation",
                    "API5",
                    285,
                    "high",
                    "firm",
                    op.method,
                    r.url,
                    f"{low.name}: creating in {coll} → HTTP {made.status}, but {op.method} {op.path} "
                    f"(an id that does not exist) → HTTP {r.status}: the role check is missing on {op.method}",
                    "Apply the same function-level authorization to every write of a resource.",
                    f"routes:\n  - path: {coll}/*\n    methods: [{op.method}]\n    policies: {{authorization: "
                    "{claims: {role: [admin]}}}",
                    request_headers=ctx.auth(low),
                )
            )
    return out


async def run(ctx) -> list[Finding]:
    out: list[Finding] = await _escalation(ctx)
    out += await _bfla_write(ctx)
    low = ctx.identities[-1] if ctx.identities else None  # the last identity is the least privileged
    for op in ctx.gets():
        if not ADMINISH.search(op.path) or low is None:
            continue
        r = await ctx.send(op, low)
        if r.ok:
            out.append(
                Finding(
                    "api5-admin",
                    "An admin operation answers a normal user",
                    "API5",
                    285,
                    "high",
                    "firm",
                    "GET",
                    r.url,
                    f"{low.name} got HTTP {r.status}: {r.text[:120]}",
                    "Check the caller's role or scope on every administrative operation.",
                    "routes:\n  - path: /admin/*\n    policies: {authorization: {claims: {role: [admin]}}}",
                    request_headers=ctx.auth(low),
                )
            )
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
            r = await ctx.client.request(
                method, ctx.fill(op, "999999"), headers=ctx.auth(a), json={} if method == "PUT" else None
            )
            if r.ok:
                out.append(
                    Finding(
                        "api5-method-switch",
                        f"{method} accepted on a read-only resource",
                        "API5",
                        650,
                        "high",
                        "firm",
                        method,
                        r.url,
                        f"HTTP {r.status}; the spec declares only GET",
                        "Refuse methods an operation does not declare (405).",
                        "routes:\n  - {openapi: spec.yaml, upstream: api}   # undeclared methods: 405",
                        request_headers=ctx.auth(a),
                    )
                )
                break
    return out
