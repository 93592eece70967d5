"""API1: objects of identity A fetched by identity B (ids from A's token and A's responses)."""

from __future__ import annotations

from bastion.scanner.model import Finding

IDS = ("api1-bola",)
OWNER_SEGMENTS = {"users", "user", "accounts", "account", "customers", "customer", "members", "profiles", "owners",
                  "tenants", "people"}


def _owned(op, body: str, who) -> bool:
    """Does the object belong to `who`? Its id sits under a users-like segment, or the answer
    names them."""
    segs = [s for s in op.path.split("/") if s]
    for i, seg in enumerate(segs):
        if seg.startswith("{") and i > 0 and segs[i - 1].lower() in OWNER_SEGMENTS:
            return True
    return any(v and f'"{v}"' in body for v in (who.username, getattr(who, "email", None)))


async def run(ctx) -> list[Finding]:
    a, b = ctx.a, ctx.b
    out = await _sequential(ctx)
    if a is None or b is None or not a.subject:
        return out
    for op in ctx.gets(with_params=True):
        if len(op.path_params) != 1:
            continue
        mine = await ctx.send(op, a, value=a.subject)
        if not mine.ok or not mine.body or not _owned(op, mine.text, a):
            continue
        theirs = await ctx.send(op, b, value=a.subject)
        if theirs.ok and theirs.body == mine.body:
            out.append(Finding(
                "api1-bola", f"{b.name} reads {a.name}'s object", "API1", 639, "high", "firm", "GET", theirs.url,
                f"{b.name} got the same {len(theirs.body)}-byte answer {a.name} gets for {a.name}'s id: "
                + theirs.text[:200],
                "Check that the caller owns (or may see) the object named in the path, on every request.",
                "policies:\n  authorization:\n    objects: [{param: id, claim: sub, status: 404}]",
                request_headers=ctx.auth(b)))
    return out


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
                out.append(Finding(
                    "api1-bola", f"{who.name} reads another user's object by guessing its id", "API1", 639, "high",
                    "firm", "GET", r.url, f"id {other} (next to {who.name}'s own {own_id}) answered HTTP {r.status}: "
                    + r.text[:160], "Check ownership on every object access; do not rely on unguessable ids.",
                    "policies:\n  authorization:\n    objects: [{param: id, claim: sub, status: 404}]",
                    request_headers=ctx.auth(who)))
                break
    return out
