"""Tokens as applications issue them: no `iss`, base64 HMAC secrets, a JWKS file, a `kid` on a
token signed with the only key. Each relaxation is checked against its forgeries, and two
generators check the whole verifier: no mutation of a good token is accepted, and on claims
PyJWT judges, bastion's verdict is PyJWT's."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bastion.auth.errors import AuthError
from bastion.auth.jwt import SUPPORTED, decode_secret_base64
from bastion.auth.schemes import Jwt, JwtScheme

from .keys import AUD, EC, ISS, RSA, RSA_OTHER, SECRET, b64, claims, pem_public

# A secret whose base64 spelling has both '+'/'/' and, in base64url, '-'/'_'.
RAW_SECRET = bytes(range(250, 256)) + b"\xfb\xff\xfe" + hashlib.sha256(b"bastion tests").digest()  # fixed: test ids
B64 = base64.b64encode(RAW_SECRET).decode()
B64URL = base64.urlsafe_b64encode(RAW_SECRET).decode().rstrip("=")
OTHER_SECRET = "another-secret-" + "y" * 40


def scheme(*issuers, tmp_path=None) -> Jwt:
    conf = JwtScheme.model_validate({"type": "jwt", "issuers": list(issuers)})
    return Jwt("bearer", conf, str(tmp_path or "."))


def accept(s: Jwt, token: str):
    return asyncio.run(s.authenticate(token))


def refuse(s: Jwt, token: str, why: str | None = None) -> str:
    with pytest.raises(AuthError) as exc:
        accept(s, token)
    if why is not None:
        assert why in exc.value.reason
    return exc.value.reason


def no_iss(**over):
    return claims(**{"iss": None, "aud": None, **over})


def hs(secret, headers=None, **over) -> str:
    return jwt.encode(no_iss(**over), secret, algorithm="HS256", headers=headers)


APP = {"algorithms": ["HS256"], "keys": [{"secret_base64": B64}]}  # an app's own tokens: no iss, no aud
IDP = {"issuer": ISS, "audiences": [AUD], "algorithms": ["RS256"], "keys": [{"kid": "rsa1", "pem": pem_public(RSA)}]}


# ---- issuer entries without `issuer` ------------------------------------------------------------


def test_an_entry_without_issuer_accepts_tokens_without_iss():
    s = scheme(APP, IDP)
    p = accept(s, hs(RAW_SECRET))
    assert p.subject == "alice" and p.issuer is None
    # the IdP's tokens still go to the IdP's entry
    assert accept(s, jwt.encode(claims(), RSA, "RS256", headers={"kid": "rsa1"})).issuer == ISS


def test_a_token_with_an_unknown_iss_is_refused_even_with_an_entry_without_issuer():
    s = scheme(APP, IDP)
    refuse(s, hs(RAW_SECRET, iss="https://evil.example"), "unknown issuer")
    refuse(s, hs(RAW_SECRET, iss=""), "unknown issuer")
    # an `iss` that differs from a configured one only in case or a trailing slash is another issuer
    refuse(s, hs(RAW_SECRET, iss=ISS.upper()), "unknown issuer")
    refuse(s, hs(RAW_SECRET, iss=ISS + "/"), "unknown issuer")


@pytest.mark.parametrize("iss", [None, 1, [], {}, True])
def test_a_non_string_iss_is_malformed_not_absent(iss):
    header = b64({"alg": "HS256", "typ": "JWT"})
    body = no_iss()
    body["iss"] = iss
    import hmac

    signing = f"{header}.{b64(body)}"
    sig = hmac.new(RAW_SECRET, signing.encode(), hashlib.sha256).digest()
    refuse(scheme(APP), f"{signing}.{b64(sig)}", "malformed claim 'iss'")


def test_iss_on_the_wrong_key_is_refused():
    s = scheme(APP, IDP)
    # the IdP's iss, signed with the app's HMAC secret: the IdP's entry has no HMAC key/algorithm
    refuse(s, jwt.encode(claims(), RAW_SECRET, "HS256"), "algorithm not allowed")
    # no iss, signed with the IdP's RSA key: the app's entry does not take RS256
    refuse(s, jwt.encode(no_iss(), RSA, "RS256", headers={"kid": "rsa1"}), "algorithm not allowed")
    # an entry without issuer taking RS256 too, with its own RSA key: the IdP's key is not its key
    both = dict(APP, algorithms=["HS256", "RS256"], keys=[{"secret_base64": B64}, {"pem": pem_public(RSA_OTHER)}])
    s = scheme(both, IDP)
    refuse(s, jwt.encode(no_iss(), RSA, "RS256", headers={"kid": "rsa1"}), "bad signature")
    assert accept(s, jwt.encode(no_iss(), RSA_OTHER, "RS256")).issuer is None


def test_alg_confusion_stays_refused_for_an_entry_without_issuer():
    import hmac

    s = scheme({"algorithms": ["RS256", "HS256"], "keys": [{"pem": pem_public(RSA)}]})
    header = b64({"alg": "HS256", "typ": "JWT"})
    body = b64(no_iss())
    sig = hmac.new(pem_public(RSA).encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    refuse(s, f"{header}.{body}.{b64(sig)}", "no key")
    refuse(s, f"{b64({'alg': 'none'})}.{body}.", "missing signature")
    refuse(s, f"{b64({'alg': 'none'})}.{body}.AAAA", "algorithm not allowed")


def test_a_token_without_iss_and_no_entry_for_it_is_refused():
    refuse(scheme(IDP), jwt.encode(no_iss(), RSA, "RS256", headers={"kid": "rsa1"}), "token has no issuer")


@pytest.mark.parametrize(
    "issuers,why",
    [
        ([APP, APP], "at most one issuer entry without"),
        ([IDP, IDP], "listed twice"),
        ([dict(APP, required_claims=["exp", "iss"])], "cannot require `iss`"),
        ([dict(APP, issuer="")], "at least 1 character"),
    ],
)
def test_issuer_entries_are_checked_at_load(issuers, why):
    with pytest.raises(ValidationError) as exc:
        JwtScheme.model_validate({"type": "jwt", "issuers": issuers})
    assert why in str(exc.value)


# ---- secret_base64 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [B64, B64.rstrip("="), B64URL, B64URL + "=" * (-len(B64URL) % 4)],
    ids=["base64", "base64-unpadded", "base64url", "base64url-padded"],
)
def test_secret_base64_takes_base64_and_base64url(spelling):
    assert "+" in B64 or "/" in B64  # the two alphabets really differ for this secret
    assert decode_secret_base64(spelling) == RAW_SECRET
    s = scheme(dict(APP, keys=[{"secret_base64": spelling}]))
    assert accept(s, hs(RAW_SECRET)).subject == "alice"
    refuse(s, hs(OTHER_SECRET), "bad signature")
    # the base64 text itself is not the secret
    refuse(s, hs(spelling.encode() + b"x" * 32), "bad signature")


@pytest.mark.parametrize(
    "value",
    [
        base64.b64encode(b"k" * 31).decode(),  # 31 bytes: weak
        "c2VjcmV0",  # "secret"
        "",
        "not base64!",
        "A" * 45,  # 45 characters: not a whole number of bytes
    ],
)
def test_weak_or_bad_base64_secrets_are_refused(value):
    with pytest.raises(ValidationError):
        JwtScheme.model_validate({"type": "jwt", "issuers": [dict(APP, keys=[{"secret_base64": value}])]})


def test_weak_plain_secrets_stay_refused():
    for weak in ("secret", "random", "x" * 31):
        with pytest.raises(ValidationError, match="at least 32 bytes"):
            JwtScheme.model_validate({"type": "jwt", "issuers": [dict(APP, keys=[{"secret": weak}])]})


# ---- a key without kid, tokens with one ---------------------------------------------------------


def test_the_only_key_of_its_type_verifies_tokens_with_any_kid():
    s = scheme(APP)
    assert accept(s, hs(RAW_SECRET, headers={"kid": "key-2024"})).subject == "alice"
    refuse(s, hs(OTHER_SECRET, headers={"kid": "key-2024"}), "bad signature")


def test_no_fallback_when_the_key_is_not_the_only_one_of_its_type():
    two = dict(APP, keys=[{"secret_base64": B64}, {"secret": OTHER_SECRET}])
    refuse(scheme(two), hs(RAW_SECRET, headers={"kid": "key-2024"}), "no key")
    assert accept(scheme(two), hs(RAW_SECRET)).subject == "alice"  # without kid: every key is tried
    named = dict(APP, keys=[{"secret_base64": B64}, {"kid": "k2", "secret": OTHER_SECRET}])
    refuse(scheme(named), hs(RAW_SECRET, headers={"kid": "key-2024"}), "no key")
    assert accept(scheme(named), hs(OTHER_SECRET.encode(), headers={"kid": "k2"})).subject == "alice"
    # a kid that names another key is that key's, never the unnamed one's
    refuse(scheme(named), hs(RAW_SECRET, headers={"kid": "k2"}), "bad signature")


def test_the_fallback_is_per_key_type():
    mixed = {
        "algorithms": ["RS256", "ES256"],
        "keys": [{"pem": pem_public(RSA)}, {"kid": "ec1", "pem": pem_public(EC)}],
    }
    s = scheme(mixed)
    assert accept(s, jwt.encode(no_iss(), RSA, "RS256", headers={"kid": "whatever"})).subject == "alice"
    refuse(s, jwt.encode(no_iss(), EC, "ES256", headers={"kid": "whatever"}), "no key")
    refuse(s, jwt.encode(no_iss(), RSA_OTHER, "RS256", headers={"kid": "whatever"}), "bad signature")


# ---- jwks_file ----------------------------------------------------------------------------------


def jwk_of(key, kid, alg="RS256"):
    d = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**d, "kid": kid, "use": "sig", "alg": alg}


def write_jwks(path, keys):
    st = path.stat() if path.exists() else None
    path.write_text(json.dumps({"keys": keys}))
    if st is not None:  # a new mtime even on a coarse-grained file system
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def file_scheme(tmp_path, keys):
    write_jwks(tmp_path / "jwks.json", keys)
    s = scheme(
        {"issuer": ISS, "audiences": [AUD], "algorithms": ["RS256", "HS256"], "jwks_file": "jwks.json"},
        tmp_path=tmp_path,
    )
    s.verifier.files[0].poll_seconds = 0  # look at the file on every token, not once a second
    return s


def test_jwks_file_rotation_and_removal(tmp_path):
    s = file_scheme(tmp_path, [jwk_of(RSA, "a")])
    old = jwt.encode(claims(), RSA, "RS256", headers={"kid": "a"})
    new = jwt.encode(claims(), RSA_OTHER, "RS256", headers={"kid": "b"})
    assert accept(s, old).subject == "alice"
    refuse(s, new, "no key")
    write_jwks(tmp_path / "jwks.json", [jwk_of(RSA, "a"), jwk_of(RSA_OTHER, "b")])
    assert accept(s, new).subject == "alice" and accept(s, old).subject == "alice"
    write_jwks(tmp_path / "jwks.json", [jwk_of(RSA_OTHER, "b")])
    refuse(s, old, "no key")  # cached as accepted before: a removed key takes its tokens with it
    assert s.verifier.files[0].reloads == 2


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"keys": {}}',
        "[]",
        '{"keys": [1]}',
        json.dumps({"keys": [{"kty": "oct", "k": b64(b"short"), "kid": "h"}]}),
    ],
)
def test_a_bad_jwks_file_keeps_the_last_good_keys(tmp_path, caplog, content):
    s = file_scheme(tmp_path, [jwk_of(RSA, "a")])
    good = jwt.encode(claims(), RSA, "RS256", headers={"kid": "a"})
    path = tmp_path / "jwks.json"
    st = path.stat()
    path.write_text(content)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with caplog.at_level(logging.WARNING, logger="bastion.auth"):
        assert accept(s, jwt.encode(claims(jti="x"), RSA, "RS256", headers={"kid": "a"})).subject == "alice"
    assert any("keeping the last good keys" in r.getMessage() for r in caplog.records)
    path.unlink()
    assert accept(s, good).subject == "alice"


def test_a_bad_jwks_file_at_load_is_an_error(tmp_path):
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{"kty": "oct", "k": b64(b"short")}]}))
    conf = JwtScheme.model_validate(
        {"type": "jwt", "issuers": [{"issuer": ISS, "algorithms": ["HS256"], "jwks_file": "jwks.json"}]}
    )
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Jwt("bearer", conf, str(tmp_path))
    with pytest.raises(OSError):
        Jwt("bearer", conf, str(tmp_path / "nowhere"))


def test_jwks_file_hmac_keys_by_kid(tmp_path):
    s = file_scheme(tmp_path, [{"kty": "oct", "k": b64(SECRET.encode()), "kid": "h1", "alg": "HS256"}])
    assert accept(s, jwt.encode(claims(), SECRET, "HS256", headers={"kid": "h1"})).subject == "alice"
    refuse(s, jwt.encode(claims(), OTHER_SECRET, "HS256", headers={"kid": "h1"}), "bad signature")


# ---- generators ---------------------------------------------------------------------------------

TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "
MUTATION_SCHEME = scheme(APP, IDP)
GOOD_HS = hs(RAW_SECRET, headers={"kid": "k"}, exp=2_000_000_000)  # module-level: must not expire mid-run
GOOD_RS = jwt.encode(claims(exp=2_000_000_000), RSA, "RS256", headers={"kid": "rsa1"})


@st.composite
def mutated(draw):
    token = draw(st.sampled_from([GOOD_HS, GOOD_RS]))
    how = draw(st.sampled_from(["replace", "delete", "insert", "truncate", "swap"]))
    i = draw(st.integers(0, len(token) - 1))
    c = draw(st.sampled_from(TOKEN_CHARS))
    if how == "replace":
        out = token[:i] + c + token[i + 1 :]
    elif how == "delete":
        out = token[:i] + token[i + 1 :]
    elif how == "insert":
        out = token[:i] + c + token[i:]
    elif how == "truncate":
        out = token[:i]
    else:
        h, p, s = token.split(".")
        out = draw(st.sampled_from([f"{p}.{h}.{s}", f"{h}.{p}.{h}", f"{h}.{p}.{p}", f"{h}.{h}.{s}"]))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_no_mutated_token_is_accepted(token):
    assert accept(MUTATION_SCHEME, GOOD_HS).subject == "alice"
    if token in (GOOD_HS, GOOD_RS):
        return
    with pytest.raises(AuthError):
        accept(MUTATION_SCHEME, token)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([GOOD_HS, GOOD_RS]),
    st.sampled_from([*SUPPORTED, "none", "HS257", "rs256"]),
    st.dictionaries(
        st.sampled_from(["sub", "iss", "exp", "scope", "aud", "kid", "admin"]),
        st.one_of(st.text(max_size=8), st.integers(-(2**40), 2**40), st.booleans(), st.none()),
        max_size=3,
    ),
)
def test_a_resigned_header_or_edited_payload_is_refused(token, alg, edits):
    """The signature of a good token, over any other header or payload."""
    h, p, s = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(h + "=="))
    payload = json.loads(base64.urlsafe_b64decode(p + "=="))
    new_header = b64({**header, "alg": alg})
    new_payload = b64({**payload, **edits})
    for candidate in (f"{new_header}.{p}.{s}", f"{h}.{new_payload}.{s}", f"{new_header}.{new_payload}.{s}"):
        if candidate == token:
            continue
        with pytest.raises(AuthError):
            accept(MUTATION_SCHEME, candidate)


OFFSETS = st.sampled_from([None, -7200, -100, -45, -15, 0, 15, 45, 100, 7200])  # leeway is 30 s


@settings(max_examples=300, deadline=None)
@given(
    exp=OFFSETS,
    iat=OFFSETS,
    nbf=OFFSETS,
    iss=st.sampled_from([ISS, "https://other.example", None]),
    aud=st.sampled_from([AUD, "api://other", [AUD, "x"], ["x"], None]),
    sub=st.sampled_from(["alice", None]),
    secret=st.sampled_from([SECRET, OTHER_SECRET]),
)
def test_verdicts_match_pyjwt(exp, iat, nbf, iss, aud, sub, secret):
    import time

    now = int(time.time())
    body = {"iss": iss, "aud": aud, "sub": sub, "jti": os.urandom(8).hex()}
    for name, off in (("exp", exp), ("iat", iat), ("nbf", nbf)):
        if off is not None:
            body[name] = now + off
    body = {k: v for k, v in body.items() if v is not None}
    token = jwt.encode(body, secret, "HS256")
    s = scheme({"issuer": ISS, "audiences": [AUD], "algorithms": ["HS256"], "keys": [{"secret": SECRET}], "leeway": 30})
    try:
        jwt.decode(
            token,
            SECRET,
            algorithms=["HS256"],
            audience=[AUD],
            issuer=ISS,
            leeway=30,
            options={"require": ["exp", "iat", "sub"]},
        )
        pyjwt_accepts = True
    except jwt.InvalidTokenError:
        pyjwt_accepts = False
    try:
        accept(s, token)
        ours = True
    except AuthError:
        ours = False
    assert ours == pyjwt_accepts, body


def test_a_non_canonical_base64_spelling_is_refused():
    """A segment whose length leaves unused low bits in its last character has other spellings
    that decode to the same bytes: two strings would be one token (cache, logs, revocation)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    segments = GOOD_HS.split(".")
    twins = []
    for n, seg in enumerate(segments):
        spare = {2: 4, 3: 2}.get(len(seg) % 4)  # unused bits in the last character
        if spare is None:
            continue
        last = alphabet.index(seg[-1])
        for low in range(1, 2**spare):
            twin = list(segments)
            twin[n] = seg[:-1] + alphabet[last | low]
            twins.append(".".join(twin))
    assert twins
    for twin in twins:
        assert twin != GOOD_HS
        refuse(MUTATION_SCHEME, twin, "malformed token")
