"""API2: broken authentication — secured operations answering without (or with forged)
credentials, weak token signing, tokens without exp, login without brute-force protection,
user enumeration, credentials accepted in the query string."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from urllib.parse import urlsplit

import jwt as pyjwt
import orjson
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bastion.scanner.context import b64, jwt_parts
from bastion.scanner.model import Finding
from bastion.scanner.secrets_list import crack

IDS = (
    "api2-no-auth",
    "api2-bad-token",
    "api2-alg-none",
    "api2-hs256-public-key",
    "api2-weak-secret",
    "api2-no-exp",
    "api2-expired-accepted",
    "api2-no-bruteforce",
    "api2-enumeration",
    "api2-query-creds",
    "api2-code-bruteforce",
)
WORDLIST = (
    "secret",
    "password",
    "changeme",
    "123456",
    "jwt",
    "key",
    "secretkey",
    "secret123",
    "admin",
    "test",
    "your-256-bit-secret",
    "supersecret",
    "default",
    "qwerty",
    "s3cr3t",
    "token",
    "dev",
    "jwtsecret",
    "mysecret",
    "letmein",
    "passw0rd",
    "private",
    "hmac",
    "signing-key",
)
AUTH_FIX = (
    "policies:\n  auth:\n    schemes: {bearer: {type: jwt, issuers: [{issuer: …, algorithms: [RS256], jwks_url: …}]}}"
)


def _sign(header: dict, payload: dict, key: bytes) -> str:
    h, p = b64(orjson.dumps(header)), b64(orjson.dumps(payload))
    return f"{h}.{p}.{b64(hmac.new(key, f'{h}.{p}'.encode(), hashlib.sha256).digest())}"


async def _graphql_probe(ctx, token: str):
    """For a GraphQL API: a root query (no required arguments) whose answer with A's token differs
    from the anonymous one; a forged token is accepted when it gets A's answer."""
    from bastion.scanner.checks.graphql import INTROSPECT, Schema, _call

    r = await ctx.client.request(
        "POST", ctx.graphql_path, json={"query": INTROSPECT}, headers={"Authorization": f"Bearer {token}"}
    )
    doc = r.json()
    if not (isinstance(doc, dict) and (doc.get("data") or {}).get("__schema")):
        return None
    schema = Schema(doc)
    for f in [f for f in schema.fields(schema.query) if not schema.required_args(f)][:8]:
        q = {"query": _call("query", f, schema, {})}
        mine = await ctx.client.request("POST", ctx.graphql_path, json=q, headers={"Authorization": f"Bearer {token}"})
        anon = await ctx.client.request("POST", ctx.graphql_path, json=q)
        bad = await ctx.client.request(
            "POST", ctx.graphql_path, json=q, headers={"Authorization": "Bearer not-a-real-token"}
        )
        md = (mine.json() or {}).get("data") if isinstance(mine.json(), dict) else None
        if (
            not md
            or not any(md.values())
            or md == ((anon.json() or {}).get("data") if isinstance(anon.json(), dict) else None)
            or bad.body == mine.body
        ):
            continue

        async def accepts(tok: str, q=q, mine=mine):
            r = await ctx.client.request("POST", ctx.graphql_path, json=q, headers={"Authorization": f"Bearer {tok}"})
            return r if r.ok and r.body == mine.body else None

        return accepts
    return None


def _target_words(ctx) -> tuple[bytes, ...]:
    """The target's own words (its host, its spec's title): secrets are often named after the app."""
    words: set[str] = set()
    host = (urlsplit(ctx.base_url).hostname or "").split(".")[0]
    title = str(((ctx.spec or {}).get("info") or {}).get("title", ""))
    for w in re.findall(r"[A-Za-z][A-Za-z0-9]{2,}", f"{host} {title}"):
        for form in (w, w.lower()):
            words |= {
                form,
                form + "secret",
                form + "-secret",
                form + "_secret",
                form + "key",
                form + "-key",
                form + "_key",
                form + "123",
                form + "-jwt-secret",
                form + "_jwt_secret",
            }
    return tuple(w.encode() for w in sorted(words))


async def _probe_target(ctx):
    """A secured GET that identity A can use (the reference for forged-token tests)."""
    a = ctx.a
    for op in ctx.gets():
        if not op.secured:
            continue
        ok = await ctx.send(op, a)
        if ok.ok:
            anon = await ctx.send(op, None)
            if not anon.ok:
                return op
    return None


async def run(ctx) -> list[Finding]:
    out: list[Finding] = []
    open_ops = set()
    for op in ctx.gets():
        if not op.secured:
            continue
        r = await ctx.send(op, None)
        if r.ok:
            open_ops.add(op.path)
            out.append(
                Finding(
                    "api2-no-auth",
                    "A secured operation answers without credentials",
                    "API2",
                    306,
                    "critical",
                    "certain",
                    "GET",
                    r.url,
                    f"HTTP {r.status} without credentials: {r.text[:160]}",
                    "Require authentication on every operation the spec marks as secured.",
                    AUTH_FIX,
                )
            )
            continue
        r = await ctx.send(op, None, headers={"Authorization": "Bearer not-a-real-token"})
        if r.ok:
            out.append(
                Finding(
                    "api2-bad-token",
                    "A garbage bearer token is accepted",
                    "API2",
                    287,
                    "critical",
                    "certain",
                    "GET",
                    r.url,
                    f"HTTP {r.status} with 'Bearer not-a-real-token'",
                    "Verify every token's signature, issuer and expiry.",
                    AUTH_FIX,
                    request_headers={"Authorization": "Bearer not-a-real-token"},
                )
            )
    a = ctx.a
    token = a.token if a else None
    parts = jwt_parts(token) if token else None
    if token is None or parts is None:  # an opaque token or a cookie: nothing to forge, logins still to guess
        return out + await _login_checks(ctx) + await _recovery_checks(ctx)
    header, payload, _ = parts
    if "exp" not in payload:
        out.append(
            Finding(
                "api2-no-exp",
                "Tokens never expire (no exp claim)",
                "API2",
                613,
                "medium",
                "certain",
                "-",
                ctx.base_url,
                f"{a.name}'s JWT carries only " + ", ".join(sorted(payload)),
                "Issue short-lived access tokens (exp) and refresh them.",
                "token_service: {access_ttl: 900}",
            )
        )
    secret = None
    if header.get("alg", "").startswith("HS"):
        hints = tuple(w.encode() for w in WORDLIST) + _target_words(ctx)
        secret, tried = await asyncio.to_thread(crack, token, hints)
        if secret is not None:
            out.append(
                Finding(
                    "api2-weak-secret",
                    "The token signing secret is in a common-secret list",
                    "API2",
                    521,
                    "critical",
                    "certain",
                    "-",
                    ctx.base_url,
                    f"{a.name}'s {header['alg']} token verifies with a {len(secret)}-character "
                    f"secret found offline after {tried} candidates",
                    "Sign with an asymmetric key (RS256/ES256/EdDSA) or a random secret of 32+ bytes.",
                    "token_service: {algorithm: ES256}",
                )
            )
    target = await _probe_target(ctx)
    accepts = None
    if target is not None:
        url_path = ctx.fill(target)

        async def accepts(tok: str):
            r = await ctx.client.request("GET", url_path, headers={"Authorization": f"Bearer {tok}"})
            return r if r.ok else None
    elif ctx.graphql_path:
        accepts = await _graphql_probe(ctx, token)
    if accepts is None:
        return out + await _login_checks(ctx) + await _recovery_checks(ctx)
    none = b64(orjson.dumps({"alg": "none", "typ": "JWT"})) + "." + b64(orjson.dumps(payload)) + "."
    r = await accepts(none)
    if r is not None:
        out.append(
            Finding(
                "api2-alg-none",
                "Unsigned tokens (alg: none) are accepted",
                "API2",
                347,
                "critical",
                "certain",
                r.method,
                r.url,
                f"HTTP {r.status} for {a.name}'s claims with alg none and no signature, answered as for the real token",
                "Accept only the algorithms you issue; never 'none'.",
                AUTH_FIX,
                request_headers={"Authorization": f"Bearer {none}"},
            )
        )
    for jwks_path in ("/.well-known/jwks.json", "/jwks.json", "/auth/.well-known/jwks.json", "/oauth/jwks"):
        jr = await ctx.client.request("GET", jwks_path, record=False)
        doc = jr.json() if jr.ok else None
        keys = doc.get("keys") if isinstance(doc, dict) else None
        if not keys:
            continue
        for jwk in keys:
            if jwk.get("kty") != "RSA":
                continue
            pem = pyjwt.PyJWK(jwk).key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
            forged = _sign({"alg": "HS256", "typ": "JWT", "kid": jwk.get("kid")}, payload, pem)
            fr = await accepts(forged)
            if fr is not None:
                out.append(
                    Finding(
                        "api2-hs256-public-key",
                        "A token HMAC-signed with the server's public key is accepted (algorithm confusion)",
                        "API2",
                        327,
                        "critical",
                        "certain",
                        fr.method,
                        fr.url,
                        f"HTTP {fr.status}; key {jwk.get('kid')} from {jwks_path}",
                        "Bind each key to its algorithm; never let the token's header choose.",
                        AUTH_FIX,
                    )
                )
        break
    if secret is not None:
        expired = {**payload, "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}
        forged = _sign(header, expired, secret.encode())
        r = await accepts(forged)
        if r is not None:
            out.append(
                Finding(
                    "api2-expired-accepted",
                    "An expired token is accepted",
                    "API2",
                    613,
                    "high",
                    "certain",
                    r.method,
                    r.url,
                    f"HTTP {r.status} for a token that expired an hour ago",
                    "Check exp (with a small leeway) on every request.",
                    AUTH_FIX,
                )
            )
    if target is None:
        return out + await _login_checks(ctx) + await _recovery_checks(ctx)
    anon_status = (await ctx.client.request("GET", url_path)).status
    for name in ("access_token", "token", "api_key", "apikey", "jwt"):
        r = await ctx.client.request("GET", url_path, params={name: token})
        if r.ok and anon_status in (401, 403):
            out.append(
                Finding(
                    "api2-query-creds",
                    "Credentials are accepted in the query string",
                    "API2",
                    598,
                    "medium",
                    "certain",
                    "GET",
                    r.url.split("?")[0] + f"?{name}=…",
                    f"HTTP {r.status} with the credential in the {name} query parameter and no header "
                    f"(HTTP {anon_status} without)",
                    "Accept credentials only in headers: URLs end up in logs, history and Referer.",
                    "policies:\n  auth: {allow_query_key: false}",
                )
            )
            break
    out += await _login_checks(ctx)
    return out + await _recovery_checks(ctx)


def _tried_password(r) -> bool:
    """Did the login look at the password, or refuse the request's shape (a 422 listing missing
    fields, a 415)? Only the first counts as a guess."""
    return r.status not in (415, 422) and not re.search(
        r"(field required|missing|is required|invalid json|"
        r"unsupported media)",
        r.text,
        re.I,
    )


async def _login_checks(ctx) -> list[Finding]:
    login = next(
        (
            o
            for o in ctx.ops
            if o.method == "POST"
            and any(w in o.path.lower() for w in ("login", "signin", "sign-in", "session", "token"))
        ),
        None,
    )
    if login is None:
        return []
    known = next((i.username for i in ctx.identities if i.username), None)
    out: list[Finding] = []
    user = "scanner_" + secrets.token_hex(4)  # never a real account: guessing must not lock anyone out
    wrong = {"username": user, "password": "Wrong-" + secrets.token_hex(6)}
    codes = []
    for _ in range(12):
        r = await ctx.send(login, None, json={**wrong, "password": "Wrong-" + secrets.token_hex(6)})
        codes.append(r.status)
        if r.status in (423, 429) or (r.status in (400, 415, 422) and len(codes) == 1 and not _tried_password(r)):
            break
    if len(codes) == 12 and not any(c in (423, 429) for c in codes) and all(c < 500 for c in codes):
        out.append(
            Finding(
                "api2-no-bruteforce",
                "Login accepts unlimited password guesses",
                "API2",
                307,
                "high",
                "firm",
                "POST",
                ctx.client.url(ctx.fill(login)),
                f"{len(codes)} wrong passwords in a row, answers {sorted(set(codes))}, no 429/423",
                "Throttle logins per IP and per account, and lock accounts after repeated failures.",
                "policies:\n  rate_limit: {login_paths: [/login], login_limits: [5/minute]}",
                request_body=orjson.dumps(wrong).decode(),
            )
        )
    if known:
        r1 = await ctx.send(login, None, json={"username": known, "password": "Wrong-pass-1x"})
        ghost = "nobody_" + secrets.token_hex(4)
        r2 = await ctx.send(login, None, json={"username": ghost, "password": "Wrong-pass-1x"})
        if r1.status and r2.status and r1.status not in (429, 423) and (r1.status != r2.status or r1.body != r2.body):
            out.append(
                Finding(
                    "api2-enumeration",
                    "Login answers differ for existing and unknown users",
                    "API2",
                    204,
                    "medium",
                    "firm",
                    "POST",
                    r1.url,
                    f"existing user: HTTP {r1.status} {r1.text[:80]!r}; unknown: HTTP {r2.status} {r2.text[:80]!r}",
                    "Answer the same status and body for unknown users and wrong passwords, in similar time.",
                    "token_service: {}  # bastion's login never says which",
                )
            )
    return out


RECOVERY = re.compile(r"(forgot|reset|recover|lost)", re.I)
CONFIRM = re.compile(r"(forgot|reset|recover|verify|confirm|otp|2fa|mfa|code)", re.I)
USER_FIELD = re.compile(r"^(username|user_?name|user|login|email|e_?mail|phone|phone_?number|mobile)$", re.I)
CODE_FIELD = re.compile(r"(^|_)(code|otp|pin|passcode|token)$", re.I)
PASSWORD_FIELD = re.compile(r"password|passwd|pwd", re.I)


def _snake_key(k: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", k).lower()


def _recovery_ops(ctx):
    """The account-recovery pair: a request operation (POST, a body of one user field and nothing
    secret: "send me a code") and a confirm operation (a body with a user field and a code-like
    field: the code the user received, usually with the new password)."""
    from bastion.scanner.context import _props

    request = confirm = None
    for op in ctx.ops:
        if op.method not in ("POST", "PUT") or op.path_params:
            continue
        props = list(_props(op))
        users = [k for k in props if USER_FIELD.match(k)]
        codes = [k for k in props if CODE_FIELD.search(_snake_key(k))]
        secret = [k for k in props if PASSWORD_FIELD.search(k) and k not in codes]
        if request is None and RECOVERY.search(op.path) and users and not codes and not secret and len(props) <= 2:
            request = (op, users[0])
        elif confirm is None and CONFIRM.search(op.path) and users and codes:
            confirm = (op, users[0], codes[0], props)
    return request, confirm


def _same_answer(r1, r2, v1: str, v2: str) -> bool:
    return r1.status == r2.status and r1.body.replace(v1.encode(), b"") == r2.body.replace(v2.encode(), b"")


async def _recovery_checks(ctx) -> list[Finding]:
    """Account recovery, the other way into an account: (1) the request answers differ for an
    existing and an unknown user (enumeration); (2) the code it sends can be guessed: 12 wrong
    codes for the account, after a real request, with no 429/423. The known account is a
    throwaway one the scan registers (its reset is the only one triggered), else identity A's
    name for the enumeration only (the guesses then go to a made-up user, so nobody is locked
    out)."""
    from bastion.scanner.context import register_account

    request, confirm = _recovery_ops(ctx)
    if request is None and confirm is None:
        return []
    out: list[Finding] = []
    acct = await register_account(ctx)
    known = acct.username if acct else next((i.username for i in ctx.identities if i.username), None)
    known_email = acct.email if acct else None
    ghost = "nobody_" + secrets.token_hex(4)

    def user_value(field: str, name: str | None) -> str:
        f = field.lower()
        if "mail" in f:
            return known_email if (name == known and known_email) else f"{name}@example.com"
        if "phone" in f or "mobile" in f:
            return "555" + secrets.token_hex(3)
        return str(name)

    if request is not None and known:
        op, field = request
        v1, v2 = user_value(field, known), user_value(field, ghost)
        if "phone" not in field.lower() and "mobile" not in field.lower():
            r1 = await ctx.send(op, None, json={field: v1})
            r2 = await ctx.send(op, None, json={field: v2})
            if r1.status and r2.status and 429 not in (r1.status, r2.status) and not _same_answer(r1, r2, v1, v2):
                out.append(
                    Finding(
                        "api2-enumeration",
                        "Account recovery answers differ for existing and unknown users",
                        "API2",
                        204,
                        "medium",
                        "firm",
                        op.method,
                        r1.url,
                        f"existing user: HTTP {r1.status} {r1.text[:80]!r}; unknown: HTTP {r2.status} {r2.text[:80]!r}",
                        'Answer every recovery request the same way ("if the account exists, a code was sent").',
                        "policies:\n  rate_limit: {login_paths: [/reset-password], login_limits: [5/minute]}",
                        request_body=orjson.dumps({field: v2}).decode(),
                    )
                )
    if confirm is not None:
        op, field, code_field, props = confirm
        target = known if acct else ghost
        if request is not None and acct:
            await ctx.send(request[0], None, json={request[1]: user_value(request[1], target)})
        body = {k: "Scan-" + secrets.token_urlsafe(10) for k in props if PASSWORD_FIELD.search(k) and k != code_field}
        body[field] = user_value(field, target)
        codes: list[int] = []
        for _ in range(12):
            body[code_field] = "".join(secrets.choice("0123456789") for _ in range(6))
            r = await ctx.send(op, None, json=body)
            codes.append(r.status)
            if r.status in (423, 429) or (len(codes) == 1 and not _tried_password(r)):
                break
        if len(codes) == 12 and not any(c in (423, 429) for c in codes) and all(c < 500 for c in codes):
            out.append(
                Finding(
                    "api2-code-bruteforce",
                    "Recovery / verification codes can be guessed without limit",
                    "API2",
                    307,
                    "high",
                    "firm",
                    op.method,
                    ctx.client.url(ctx.fill(op)),
                    f"{len(codes)} wrong {code_field!r} values in a row for "
                    + ("an account with a pending code" if acct else "a made-up user")
                    + f", answers {sorted(set(codes))}, no 429/423",
                    "Limit attempts per code and per account (invalidate the code after a few failures), "
                    "use long codes, and throttle per client.",
                    f"policies:\n  rate_limit: {{login_paths: [{op.path}], login_limits: [5/minute]}}",
                    request_body=orjson.dumps(body).decode(),
                )
            )
    return out
