"""API1: objects of identity A fetched by identity B (ids from A's token and A's responses)."""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlsplit

import orjson

from bastion.scanner.checks.api3 import ME
from bastion.scanner.context import login_account, register_account, sample
from bastion.scanner.model import Finding

IDS = ("api1-bola", "api1-bola-write")
OWNER_SEGMENTS = {
    "users",
    "user",
    "accounts",
    "account",
    "customers",
    "customer",
    "members",
    "profiles",
    "owners",
    "tenants",
    "people",
}


def _owned(op, body: str, who) -> bool:
    """Does the object belong to `who`? Its id sits under a users-like segment, or the answer
    names them."""
    if _owner_param(op):
        return True
    return any(v and f'"{v}"' in body for v in (who.username, getattr(who, "email", None)))


def _same_object(x, y) -> bool:
    if x.body == y.body:
        return True
    dx, dy = x.json(), y.json()
    return (
        isinstance(dx, dict)
        and isinstance(dy, dict)
        and bool(dx)
        and dx.keys() == dy.keys()
        and all(dx.get(k) == dy.get(k) for k in ("id", "uuid", "username", "email", "owner", "user_id") if k in dx)
    )


BOLA_FIX = "policies:\n  authorization:\n    objects: [{param: id, claim: sub, status: 404}]"


async def run(ctx) -> list[Finding]:
    a, b = ctx.a, ctx.b
    out = await _sequential(ctx)
    if a is None or b is None:
        return out
    await ctx.views()
    for op in ctx.gets(with_params=True):
        if len(op.path_params) != 1:
            continue
        param = op.path_params[0]
        mine_vals = await ctx.values_for(op, param, a)
        theirs_vals = set(await ctx.values_for(op, param, b))
        userish = _owner_param(op) or any(
            w in param.lower() for w in ("user", "owner", "account", "member", "customer", "login")
        )
        own = [v for v in ((a.username if userish else None), a.subject) if v]
        # A's objects: what A's own list shows and B's does not, then A's own ids
        candidates = [v for v in mine_vals if v not in theirs_vals and v not in own][:3] + own
        for v in list(dict.fromkeys(candidates))[:5]:
            mine = await ctx.send(op, a, value=v)
            if not mine.ok or not mine.body:
                continue
            if v in own and not _owned(op, mine.text, a):
                continue  # A's id in a path that is not A's: nothing says the object is A's
            theirs = await ctx.send(op, b, value=v)
            if not theirs.ok or not _same_object(mine, theirs):
                continue
            if not op.secured:  # public by spec: BOLA only if B sees more than an anonymous caller
                anon = await ctx.send(op, None, value=v)
                if anon.ok and _same_object(anon, theirs):
                    continue
            why = "from A's own list, absent from B's" if v not in own else "A's own id"
            out.append(
                Finding(
                    "api1-bola",
                    f"{b.name} reads {a.name}'s object",
                    "API1",
                    639,
                    "high",
                    "firm",
                    "GET",
                    theirs.url,
                    f"{b.name} got the same {len(theirs.body)}-byte object {a.name} gets for {param}={v} ({why}): "
                    + theirs.text[:200],
                    "Check that the caller owns (or may see) the object named in the path, on every request.",
                    BOLA_FIX,
                    request_headers=ctx.auth(b),
                )
            )
            break
    flagged = {
        o.path
        for o in ctx.gets(with_params=True)
        for f in out
        if re.fullmatch(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(o.path)), urlsplit(f.url).path)
    }
    out += await _created_reads(ctx, flagged)
    out += await _writes(ctx)
    return out


async def _created_reads(ctx, flagged: set[str]) -> list[Finding]:
    """With --allow-destructive: A creates an object in each collection that has a POST and an
    item GET; B reads it. The path value is the field of that name A sent (/books/{book_title}
    after POST /books {"book_title": …}) or the id the creation answered."""
    if not ctx.allow_destructive:
        return []
    a, b = ctx.a, ctx.b
    out: list[Finding] = []
    for op in ctx.gets(with_params=True):
        if len(op.path_params) != 1 or _owner_param(op) or op.path in flagged:
            continue
        param = op.path_params[0]
        coll = op.path.split("{")[0].rstrip("/")
        create = next((o for o in ctx.ops if o.method == "POST" and o.path == coll and o.body_schema), None)
        if create is None:
            continue
        marker = "scan" + secrets.token_hex(3)
        body = _body_for(create, marker) or {}
        made = await ctx.send(create, a, json=body)
        if not made.ok:
            continue
        value = str(body[param]) if param in body else _id_of(made.json())
        if not value:
            continue
        mine = await ctx.send(op, a, value=value)
        if not mine.ok or op.path in flagged:
            continue
        theirs = await ctx.send(op, b, value=value)
        if not theirs.ok or not _same_object(mine, theirs):
            continue
        if not op.secured:
            anon = await ctx.send(op, None, value=value)
            if anon.ok and _same_object(anon, theirs):
                continue
        out.append(
            Finding(
                "api1-bola",
                f"{b.name} reads an object {a.name} created",
                "API1",
                639,
                "high",
                "firm",
                "GET",
                theirs.url,
                f"{a.name} created it with POST {coll}; {b.name} got the same {len(theirs.body)}-byte object: "
                + theirs.text[:200],
                "Check that the caller owns (or may see) the object named in the path, on every request.",
                BOLA_FIX,
                request_headers=ctx.auth(b),
            )
        )
    return out


WRITE = ("PUT", "PATCH", "DELETE", "POST")


async def _writes(ctx) -> list[Finding]:
    """With --allow-destructive, on objects the scan created itself: B changes or deletes them.
    Objects: a throwaway account the scan registers (for per-user sub-resources such as
    /users/{name}/password or /email), and objects A creates by POSTing to a collection. Every
    finding is verified: the account logs in with the password B set, or A's read shows B's
    change, or the object is gone for A."""
    if not ctx.allow_destructive or ctx.b is None:
        return []
    out: list[Finding] = []
    b = ctx.b
    user_ops = [
        o
        for o in ctx.ops
        if o.method in WRITE
        and (
            (len(o.path_params) == 1 and _owner_param(o))
            or (not o.path_params and _user_field(o) and not SKIP.search(o.path))
        )
    ]
    if user_ops:
        for op in user_ops[:4]:
            acct = await register_account(ctx)
            if acct is None or acct.identity is None:
                break
            marker = "scan" + secrets.token_hex(3)
            body = _body_for(op, marker)
            if op.path_params:
                value = acct.username if not _numeric_param(op) else _id_of(acct.answer) or acct.identity.subject
                if not value:
                    continue
            else:  # the user is named in the body (PUT /profile {"username": …})
                value = None
                field = _user_field(op)
                if field is None:  # not reached: user_ops without path parameters have a user field
                    continue
                body = {**(body or {}), field: acct.email if "mail" in field.lower() else acct.username}
            r = await ctx.send(op, b, value=str(value) if value else None, json=body if op.method != "DELETE" else None)
            if not r.ok:
                continue
            proof = await _verify_account(ctx, acct, op, body, marker)
            if proof:
                out.append(
                    Finding(
                        "api1-bola-write",
                        f"{b.name} changes another user's account",
                        "API1",
                        639,
                        "critical",
                        "certain",
                        op.method,
                        r.url,
                        f"{b.name} sent {op.method} for a "
                        f"throwaway account the scan registered: HTTP {r.status}; {proof}",
                        "Check on every write that the caller is the user named in the path (or an admin).",
                        BOLA_FIX,
                        request_headers=ctx.auth(b),
                        request_body=orjson.dumps(body).decode() if body is not None else None,
                    )
                )
    out += await _object_writes(ctx)
    return out


async def _object_writes(ctx) -> list[Finding]:
    a, b = ctx.a, ctx.b
    out: list[Finding] = []
    creators = {o.path: o for o in ctx.ops if o.method == "POST" and not o.path_params and o.body_schema}
    for op in ctx.ops:
        if op.method not in ("DELETE", "PUT", "PATCH") or len(op.path_params) != 1 or _owner_param(op):
            continue
        coll = op.path.split("{")[0].rstrip("/")
        create = creators.get(coll)
        reader = next((o for o in ctx.gets(with_params=True) if o.path == op.path), None)
        if create is None or reader is None:
            continue
        made = await ctx.send(create, a, json=sample(create.body_schema))
        oid = _id_of(made.json()) if made.ok else None
        if oid is None:
            continue
        before = await ctx.send(reader, a, value=oid)
        if not before.ok:
            continue
        marker = "scan" + secrets.token_hex(3)
        body = _body_for(op, marker) if op.method != "DELETE" else None
        r = await ctx.send(op, b, value=oid, json=body)
        if not r.ok:
            continue
        after = await ctx.send(reader, a, value=oid)
        if op.method == "DELETE" and after.status in (404, 410):
            proof = (
                f"the object {a.name} created is gone for {a.name} (HTTP {after.status} after, {before.status} before)"
            )
        elif op.method != "DELETE" and after.ok and marker in after.text and marker not in before.text:
            proof = f"{a.name}'s read of the object now shows {b.name}'s value"
        else:
            continue
        out.append(
            Finding(
                "api1-bola-write",
                f"{b.name} {'deletes' if op.method == 'DELETE' else 'changes'} {a.name}'s object",
                "API1",
                639,
                "critical",
                "certain",
                op.method,
                r.url,
                f"{op.method} by {b.name} on an object {a.name} created: HTTP {r.status}; {proof}",
                "Check ownership on every write and delete, not only on reads.",
                BOLA_FIX,
                request_headers=ctx.auth(b),
            )
        )
    return out


SKIP = re.compile(r"(register|signup|sign-up|login|signin|token|session|reset|forgot|role)", re.I)
USER_FIELD = re.compile(r"^(username|user_?name|user|login|email|user_?id|userid)$", re.I)


def _user_field(op) -> str | None:
    return next((k for k in ((op.body_schema or {}).get("properties") or {}) if USER_FIELD.match(k)), None)


def _owner_param(op) -> bool:
    """A path parameter that names a user: under a users-like segment (version segments such as
    /v1 skipped: /users/v1/{username}) or named like one (username, user_id, account)."""
    segs = [s for s in op.path.split("/") if s and not re.fullmatch(r"v\d+(\.\d+)?", s)]
    return any(
        seg.startswith("{")
        and (
            (i > 0 and segs[i - 1].lower() in OWNER_SEGMENTS)
            or re.search(r"(user|owner|account|member|customer)", seg, re.I)
        )
        for i, seg in enumerate(segs)
    )


def _numeric_param(op) -> bool:
    name = op.path_params[0]
    schema = next((p.get("schema") for p in op.params if p.get("name") == name), None) or {}
    return schema.get("type") in ("integer", "number") or name.lower() in ("id", "user_id", "uid", "userid")


def _id_of(doc) -> str | None:
    if isinstance(doc, dict):
        for k in ("id", "uuid", "_id", "user_id", "userId"):
            if isinstance(doc.get(k), (int, str)) and not isinstance(doc.get(k), bool):
                return str(doc[k])
        for v in doc.values():
            if isinstance(v, dict):
                found = _id_of(v)
                if found:
                    return found
    return None


def _body_for(op, marker: str):
    if op.method == "DELETE" or not op.body_schema:
        return None
    body = sample(op.body_schema)
    body = body if isinstance(body, dict) else {}
    for k, schema in (op.body_schema.get("properties") or {}).items():
        lk = k.lower()
        if "pass" in lk:
            body[k] = "Scan-" + marker + "-Pw1!"
        elif "mail" in lk:
            body[k] = marker + "@example.com"
        elif isinstance(schema, dict) and schema.get("type", "string") == "string" and not schema.get("enum"):
            body[k] = marker
    return body


async def _verify_account(ctx, acct, op, body, marker: str) -> str | None:
    if op.method == "DELETE":
        again = await login_account(ctx, acct)
        return "the account can no longer log in" if again is None else None
    new_pw = next((v for k, v in (body or {}).items() if "pass" in k.lower()), None)
    if new_pw:
        who = await login_account(ctx, acct, password=new_pw)
        return "the account now logs in with the password the other user chose" if who else None
    for reader in [o for o in ctx.gets(with_params=True) if len(o.path_params) == 1 and _owner_param(o)][:2]:
        value = acct.username if not _numeric_param(reader) else (_id_of(acct.answer) or acct.identity.subject)
        r = await ctx.send(reader, acct.identity, value=str(value))
        if r.ok and marker in r.text:
            return f"the account's own read ({reader.path}) now shows the other user's value"
    for reader in [o for o in ctx.gets(with_params=False) if o.secured and ME.search(o.path)][:3]:
        r = await ctx.send(reader, acct.identity)
        if r.ok and marker in r.text:
            return f"the account's own read ({reader.path}) now shows the other user's value"
    return None


async def _sequential(ctx) -> list[Finding]:
    """Sequential id probing: the least privileged identity asks for the neighbours of its own
    numeric id on owner-scoped operations (GET only)."""
    who = ctx.identities[-1] if ctx.identities else None
    if who is None or not (who.subject or "").isdigit():
        return []
    own_id = int(who.subject)
    out = []
    for op in ctx.gets(with_params=True):
        if len(op.path_params) != 1 or not _owned(op, "", who):
            continue
        mine = await ctx.send(op, who, value=str(own_id))
        for other in (own_id - 1, own_id + 1):
            if other < 1 or (ctx.a and ctx.a is not who and ctx.a.subject == str(other)):
                continue  # the A/B comparison above covers A's id
            r = await ctx.send(op, who, value=str(other))
            if r.ok and r.body and r.body != mine.body:
                out.append(
                    Finding(
                        "api1-bola",
                        f"{who.name} reads another user's object by guessing its id",
                        "API1",
                        639,
                        "high",
                        "firm",
                        "GET",
                        r.url,
                        f"id {other} (next to {who.name}'s own {own_id}) answered HTTP {r.status}: " + r.text[:160],
                        "Check ownership on every object access; do not rely on unguessable ids.",
                        "policies:\n  authorization:\n    objects: [{param: id, claim: sub, status: 404}]",
                        request_headers=ctx.auth(who),
                    )
                )
                break
    return out
