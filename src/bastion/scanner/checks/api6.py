"""API6: unrestricted access to a sensitive business flow — a one-time benefit (a referral,
invite, coupon or promo code) that can be redeemed again and again.

Only throwaway accounts the scan registers take part: one owns the code (read from its own
answers), the other redeems it twice. A made-up code of the same shape is the control, so an
app that answers 200 "invalid code" to everything is not a finding."""

from __future__ import annotations

import re
import secrets
import string

import orjson

from bastion.scanner.context import _props, register_account
from bastion.scanner.model import Finding

IDS = ("api6-flow-replay",)
FLOW_PATH = re.compile(r"(apply|redeem|claim|activate|invite|referr|coupon|voucher|promo|reward|gift|bonus)", re.I)
CODE_PROP = re.compile(r"(code|coupon|voucher|promo|referral|invite|invitation)", re.I)
NOT_FLOW = re.compile(r"(login|signin|token|register|signup|reset|forgot|recover|verify|password|otp|2fa|mfa)", re.I)
REFUSED = re.compile(
    r"(invalid|unknown|not found|already|only once|once per|own code|yourself|not allowed|cannot|can't|"
    r"expired|used|denied|forbidden|error)",
    re.I,
)


def _strings(doc, key=""):
    """(key, value) for every string in an answer."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _strings(v, str(k))
    elif isinstance(doc, list):
        for v in doc[:50]:
            yield from _strings(v, key)
    elif isinstance(doc, str):
        yield key, doc


def _fits(prop: str, key: str) -> bool:
    """An answer's key that can hold the value of body property `prop`: the same name, or one
    name the other's tail (referral_code ~ code, code ~ invite_code)."""
    p, k = prop.lower(), key.lower()
    return bool(k) and (p == k or p.endswith(k) or (k.endswith("code") and CODE_PROP.search(k) is not None))


def _like(value: str) -> str:
    """A made-up code of the same shape (length and character classes)."""
    chars = ""
    chars += string.ascii_uppercase if any(c.isupper() for c in value) else ""
    chars += string.ascii_lowercase if any(c.islower() for c in value) else ""
    chars += string.digits if any(c.isdigit() for c in value) or not chars else ""
    return "".join(secrets.choice(chars) for _ in value)


def _accepted(r, code: str, control) -> bool:
    if not r.ok or REFUSED.search(r.text.replace(code, "")):
        return False
    return not (r.status == control[0] and r.body.replace(code.encode(), b"") == control[1])


async def run(ctx) -> list[Finding]:
    flows = []
    for op in ctx.ops:
        if op.method not in ("POST", "PUT") or op.path_params or NOT_FLOW.search(op.path):
            continue
        if not FLOW_PATH.search(op.path):
            continue
        props = _props(op)
        code_props = [
            k
            for k, v in props.items()
            if CODE_PROP.search(k) and (not isinstance(v, dict) or v.get("type", "string") == "string")
        ]
        if code_props:
            flows.append((op, code_props[0]))
    if not flows:
        return []
    owner = await register_account(ctx)
    redeemer = await register_account(ctx)
    if owner is None or owner.identity is None or redeemer is None or redeemer.identity is None:
        return []
    # the owner's own answers: every parameterless GET, the code-named ones first
    gets = sorted(ctx.gets(with_params=False), key=lambda o: not CODE_PROP.search(o.path))[:12]
    answers = [await ctx.send(o, owner.identity) for o in gets]
    out: list[Finding] = []
    for op, prop in flows[:3]:
        code = next(
            (v for r in answers if r.ok for k, v in _strings(r.json()) if _fits(prop, k) and 4 <= len(v) <= 64),
            None,
        )
        if code is None:
            continue
        fake = _like(code)
        c = await ctx.send(op, redeemer.identity, json={prop: fake})
        control = (c.status, c.body.replace(fake.encode(), b""))
        r1 = await ctx.send(op, redeemer.identity, json={prop: code})
        r2 = await ctx.send(op, redeemer.identity, json={prop: code})
        if not (_accepted(r1, code, control) and _accepted(r2, code, control)):
            continue
        own = await ctx.send(op, owner.identity, json={prop: code})
        also = " Its owner redeeming it on itself was accepted too." if _accepted(own, code, control) else ""
        out.append(
            Finding(
                "api6-flow-replay",
                "A one-time benefit can be redeemed again and again",
                "API6",
                837,
                "medium",
                "firm",
                op.method,
                r1.url,
                f"a throwaway account redeemed another's {prop} twice: HTTP {r1.status} {r1.text[:80]!r}, then "
                f"HTTP {r2.status} {r2.text[:80]!r}; a made-up code of the same shape got HTTP {c.status} "
                f"{c.text[:60]!r}.{also}",
                "Redeem each code once per account (a unique constraint, checked in the same transaction), "
                "refuse a user's own code, and cap benefits per account.",
                "# a business rule: the application must record redemptions (a gateway cannot know them)",
                request_headers=ctx.auth(redeemer.identity),
                request_body=orjson.dumps({prop: code}).decode(),
            )
        )
    return out
