"""API3: object property level — mass assignment (privileged properties accepted and reflected)
and excessive data exposure (secrets, hashes, card numbers in any response seen)."""

from __future__ import annotations

import re

import orjson

from bastion.scanner.context import _props, credential_ops, items_of, jwt_parts, register_account, sample
from bastion.scanner.model import Finding

IDS = ("api3-mass-assignment", "api3-data-exposure", "api3-plaintext-creds")
PRIVILEGED = {"role": "admin", "is_admin": True, "admin": True, "isAdmin": True}
SENSITIVE = re.compile(
    r"^(password|passwd|pwd|password_hash|passwordhash|hash|secret|client_secret|api_?key|"
    r"private_key|ssn|credit_?card|card_number|cvv|access_token|refresh_token|otp_secret)$",
    re.I,
)
CARD = re.compile(r"^\d{13,19}$")
# a credential-named key: password, passwd, pwd, pass, passphrase, secret, pin — alone or as a word
# of a longer name (db_password, smtpPassword, client-secret)
CRED_KEY = re.compile(r"(^|_)(password|passwd|pwd|pass|passphrase|passcode|secret|pin)(_|$)")
NOT_CRED = re.compile(
    r"(hash|digest|salt|crypt|changed|updated|expire|reset|policy|length|required|question|"
    r"strength|hint|rotat|enabled|set|count|at$)"
)
HASHED = re.compile(
    r"^(\$2[abxy]?\$\d\d\$|\$argon2|\$pbkdf2|pbkdf2[_:$]|\$[1356]\$|\$y\$|\{S?SHA|sha\d+[$:]|"
    r"[0-9a-f]{32}$|[0-9a-f]{40}$|[0-9a-f]{56}$|[0-9a-f]{64}$|[0-9a-f]{96}$|[0-9a-f]{128}$|"
    r"[*•x?]+$|\[?(redacted|hidden|filtered|masked|removed)\]?$)",
    re.I,
)
TOKEN_KEYS = {"access_token", "refresh_token", "id_token", "token", "jwt"}
LOGINISH = re.compile(r"(login|signin|sign-in|auth|session|token|register|signup|refresh)", re.I)


def _snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).replace("-", "_").lower()


def _is_path(v) -> bool:
    return isinstance(v, str) and bool(re.fullmatch(r"(/[\w.@+-]+)+/?|[A-Za-z]:\\[^\n]*|~?/", v.strip()))


def plaintext_credential(key: str, value) -> bool:
    """A credential-named property holding what looks like the credential itself: a string that
    is not a known hash format, not hex/base64 digest-sized, not a mask."""
    k = _snake(str(key))
    if not CRED_KEY.search(k) or NOT_CRED.search(k) or not isinstance(value, str):
        return False
    v = value.strip()
    if not 3 <= len(v) <= 128 or HASHED.match(v):
        return False
    if _is_path(v):
        return False  # a filesystem path (an environment's PWD), not a secret
    return not re.fullmatch(r"[A-Za-z0-9+/=_-]{43,}", v)  # long base64: a digest or a key, not a typed password


def _luhn(number: str) -> bool:
    digits = [int(c) for c in number][::-1]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0


def _mask(value: str) -> str:
    return value[:1] + "…" + f"[{len(value) - 1} more characters redacted]"


def _walk(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"{path}/{k}", k, v
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value[:50]):
            yield from _walk(v, f"{path}/{i}")


PRIV_CREATE = {
    "role": "admin",
    "roles": ["admin"],
    "is_admin": True,
    "isAdmin": True,
    "admin": True,
    "is_superuser": True,
    "is_staff": True,
    "verified": True,
    "is_verified": True,
    "permissions": ["admin"],
    "user_type": "admin",
    "account_type": "admin",
}
ME = re.compile(r"(me|profile|account|whoami|self|current|user)", re.I)


def _privileged(value) -> bool:
    if value is True:
        return True
    if isinstance(value, str):
        return value.lower() in ("admin", "administrator", "superuser", "root", "staff")
    if isinstance(value, list):
        return any(_privileged(v) for v in value)
    return False


async def _reads(ctx, acct) -> dict[str, object]:
    """Everything a later read says about the account: its login answer, its token's claims and
    the "me"-like GETs as that account. Keys flattened and lower-cased."""
    seen: dict[str, object] = {}
    docs = [acct.login_answer]
    if acct.identity is not None:
        parts = jwt_parts(acct.identity.token or "")
        docs.append(parts[1] if parts else None)
        for op in [o for o in ctx.gets(with_params=False) if ME.search(o.path)][:5]:
            r = await ctx.send(op, acct.identity)
            docs.append(r.json() if r.ok else None)
        for op in [
            o
            for o in ctx.gets(with_params=True)
            if len(o.path_params) == 1 and any(w in o.path_params[0].lower() for w in ("user", "name", "login"))
        ][:2]:
            r = await ctx.send(op, acct.identity, value=acct.username)
            docs.append(r.json() if r.ok else None)
    for doc in docs:
        items = items_of(doc)
        if items and items != [doc] and all(isinstance(i, dict) for i in items[:3]):
            # a list of users: only the item that is this account
            doc = next((i for i in items if acct.username in i.values()), None)
        for _, key, value in _walk(doc):
            seen.setdefault(_snake(str(key)), value)
    return seen


async def _mass_assignment_at_creation(ctx) -> list[Finding]:
    """Register a control account and a probe account that also sends privileged properties;
    a finding when a later login or read of the probe says privileged where the control's does
    not (or says it at all, where the control has no such property)."""
    register, login = credential_ops(ctx.ops)
    if register is None or login is None:
        return []
    control = await register_account(ctx)
    if control is None or control.identity is None:
        return []
    declared = {k: v for k, v in PRIV_CREATE.items() if k in _props(register)}
    probe = await register_account(ctx, PRIV_CREATE)
    if probe is None and declared:
        probe = await register_account(ctx, declared)
    if probe is None:
        probe = await register_account(ctx, {"role": "admin", "is_admin": True, "admin": True})
    if probe is None or probe.identity is None:
        return []
    mine, theirs = await _reads(ctx, probe), await _reads(ctx, control)
    hits = sorted(
        k for k in {_snake(k) for k in PRIV_CREATE} if _privileged(mine.get(k)) and not _privileged(theirs.get(k))
    )
    if not hits:
        return []
    return [
        Finding(
            "api3-mass-assignment",
            "Privileged properties are accepted when an account is created",
            "API3",
            915,
            "critical",
            "certain",
            "POST",
            ctx.client.url(ctx.fill(register)),
            f"registered with {sorted(PRIV_CREATE)}: a later login/read of that account says "
            + ", ".join(f"{k}={mine.get(k)!r}" for k in hits)
            + "; an account registered without them says "
            + ", ".join(f"{k}={theirs.get(k)!r}" for k in hits),
            "Bind creation requests to an allow-list of client-settable properties; set roles server-side.",
            "routes:\n  - {openapi: spec.yaml, upstream: api}   # additionalProperties: false enforced",
            request_body=orjson.dumps({"username": probe.username, **PRIV_CREATE}).decode(),
        )
    ]


ROLE_KEY = re.compile(r"^(role|roles|user_?type|account_?type|access_?level|is_?admin|is_?staff|is_?superuser)$", re.I)
SELF_PATH = re.compile(r"/(me|profile|account|self|current|settings)(/|$)", re.I)
ROLE_VALUES = ("admin", "administrator", "employee", "staff", "manager", "moderator", "superuser", "owner")


def _role_values(current) -> list:
    """More privileged values for a role-like property, written like the current one (a boolean
    flag → True; "Customer" → "Admin", "Employee", …; "member" → "admin", …)."""
    if isinstance(current, bool):
        return [True]
    if isinstance(current, list):
        return [["admin"]]
    if not isinstance(current, str):
        return []
    if current.isupper():
        return [w.upper() for w in ROLE_VALUES[:6]]
    if current[:1].isupper():
        return [w.capitalize() for w in ROLE_VALUES[:6]]
    return list(ROLE_VALUES[:6])


async def _undeclared_on_self_update(ctx) -> list[Finding]:
    """Mass assignment on an account's own update: a write on a "me"/profile-like path whose body
    schema does NOT declare the role-like property the account's own reads show (the server
    copies every body field onto the record: pydantic `extra=allow`, `setattr` loops,
    `Object.assign`). A throwaway account sends that property, named as its reads name it,
    with more privileged values written like the current one; a later read (fresh login) that
    shows the new value is the finding. Only that account changes."""
    ops = [
        o
        for o in ctx.ops
        if o.method in ("PATCH", "PUT")
        and not o.path_params
        and SELF_PATH.search(o.path)
        and isinstance(o.body_schema, dict)
        and not any(ROLE_KEY.match(k) for k in _props(o))
    ]
    if not ops:
        return []
    from bastion.scanner.context import login_account

    acct = await register_account(ctx)
    if acct is None or acct.identity is None:
        return []
    before = await _reads(ctx, acct)
    keys = [k for k, v in before.items() if ROLE_KEY.match(k) and v is not None][:2]
    for op in ops[:3]:
        for key in keys:
            current = before[key]
            for value in _role_values(current):
                if value == current:
                    continue
                body = {key: value}
                if op.method == "PUT":  # a full replacement: the declared fields too, as they are now
                    sampled = sample(op.body_schema)
                    base = sampled if isinstance(sampled, dict) else {}
                    for k in _props(op):
                        v = before.get(_snake(k))
                        if isinstance(v, (str, int, float, bool)):
                            base[k] = v
                        elif k.lower() in ("username", "user", "login"):
                            base[k] = acct.username
                    body = {**base, key: value}
                r = await ctx.send(op, acct.identity, json=body)
                if not r.ok:
                    continue
                acct.identity = await login_account(ctx, acct) or acct.identity
                now = (await _reads(ctx, acct)).get(key)
                if now is not None and now != current and (now == value or _privileged(now)):
                    if ctx.elevated is None:
                        ctx.elevated = acct.identity
                    return [
                        Finding(
                            "api3-mass-assignment",
                            "An undeclared role property is accepted on a self-update",
                            "API3",
                            915,
                            "critical",
                            "certain",
                            op.method,
                            r.url,
                            f"the spec's body for {op.method} {op.path} has no {key!r}; a throwaway account sent "
                            f"{key}={value!r} (it had {current!r}) and its later reads say {key}={now!r}",
                            "Bind update requests to an allow-list of client-settable properties (no extra=allow, "
                            "no setattr loops over the body); change roles only through an administrative function.",
                            "routes:\n  - {openapi: spec.yaml, upstream: api}   # additionalProperties: false enforced",
                            request_headers=ctx.auth(acct.identity),
                            request_body=orjson.dumps(body).decode(),
                        )
                    ]
    return []


async def run(ctx) -> list[Finding]:
    out: list[Finding] = await _mass_assignment_at_creation(ctx)
    out += await _undeclared_on_self_update(ctx)
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
            out.append(
                Finding(
                    "api3-mass-assignment",
                    "Privileged properties are accepted and reflected",
                    "API3",
                    915,
                    "high",
                    "firm",
                    op.method,
                    r.url,
                    f"sent {sorted(PRIVILEGED)}; the answer carries "
                    f"{sorted(k for k, v in PRIVILEGED.items() if doc.get(k) == v)}",
                    "Accept only the properties a client may set (allow-lists, additionalProperties: false).",
                    "routes:\n  - {openapi: spec.yaml, upstream: api}   # unknown properties refused",
                    request_headers=ctx.auth(a),
                    request_body=orjson.dumps(body).decode(),
                )
            )
    await ctx.views()  # every documented list, "me" and debug answer, as each identity
    reported: set[tuple[str, str]] = set()
    creds_at: set[str] = set()
    for resp in list(ctx.client.seen):
        doc = resp.json() if resp.ok else None
        if doc is None:
            continue
        route = resp.url.split("?")[0]
        login_answer = resp.method == "POST" and LOGINISH.search(route)
        for ptr, key, value in _walk(doc):
            hit = None
            if plaintext_credential(key, value):
                if route not in creds_at:
                    creds_at.add(route)
                    out.append(
                        Finding(
                            "api3-plaintext-creds",
                            "An answer carries a plaintext credential",
                            "API3",
                            256,
                            "critical",
                            "firm",
                            resp.method,
                            route,
                            f"property {ptr} holds a {len(value)}-character value that is no hash ({_mask(value)})",
                            "Store passwords only as slow salted hashes (argon2, bcrypt); never return "
                            "credentials or configuration secrets in an answer.",
                            "policies:\n  response_filter: {remove: [password, secret]}",
                            request_headers=resp.request_headers,
                        )
                    )
                continue
            if str(key).lower() in TOKEN_KEYS and login_answer:
                continue  # a token in the answer to a login is what a login is for
            if SENSITIVE.match(str(key)) and value not in (None, "", False) and not _is_path(value):
                hit = f"property {ptr}"
            elif (
                isinstance(value, str)
                and CARD.match(value.replace(" ", "").replace("-", ""))
                and _luhn(value.replace(" ", "").replace("-", ""))
            ):
                hit = f"a card number at {ptr}"
            if hit:
                route = resp.url.split("?")[0]
                if (route, str(key)) in reported:
                    continue
                reported.add((route, str(key)))
                out.append(
                    Finding(
                        "api3-data-exposure",
                        "A response exposes sensitive data",
                        "API3",
                        213,
                        "high",
                        "firm",
                        resp.method,
                        route,
                        f"{hit} = {str(value)[:40]}",
                        "Return only the properties the caller needs; never hashes, secrets or full numbers.",
                        "policies:\n  response_filter: {remove: [password_hash, secret]}",
                        request_headers=resp.request_headers,
                    )
                )
    return out
