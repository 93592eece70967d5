"""Issue 15 item 4 (second property): validly signed HS256 tokens (the gateway's secret) whose
claims and header are arbitrary JSON, each sent twice (first use, then the verified-token cache).

Invariants: the answer is 200 or 401, never 5xx, and the same both times; a 401 never reaches
the upstream and a 200 reaches it once; no control character and no injected header or request
reaches the upstream; principal headers are ASCII; and the claims the issue names as wrong
(`exp`/`nbf`/`iat` not a finite number in range, `sub` not a string, `typ` "refresh" in any
case) are refused with 401.

    PYTHONPATH=$PWD/src .venv/bin/python -m pytest -p no:cacheprovider -q tests/integration/edge/test_fuzz_jwt_claims.py
"""

from __future__ import annotations

import json
import math
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from .conftest import AUD, ISS, hs256, send_raw
from .recorder import CANARY, control_chars

FAST = settings(
    max_examples=80,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SLOW = settings(
    max_examples=2000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NOW = int(time.time())
HOSTILE_NUMBERS = [
    "1e400",
    "-1e400",
    "1e-400",
    "NaN",
    "Infinity",
    "-Infinity",
    str(10**400),
    "-" + str(10**30),
    "1e308",
    "9007199254740993",
    "0",
    "-1",
    "1.5",
    "true",
    "null",
    '"%d"' % (NOW + 600),
    '"%d"' % (NOW - 600),
    '"1e400"',
    '"NaN"',
    "[%d]" % (NOW + 600),
    '{"$date": %d}' % (NOW + 600),
    "%d.000001" % (NOW + 600),
    "%d" % (NOW + 600),
    "%d" % (NOW - 600),
]
HOSTILE_STRINGS = [
    "alice\r\nZinj: 1",
    "alice\nZinj: 1",
    "alice\rZinj: 1",
    "a\x00b",
    "a\x01b",
    "a\x7fb",
    "a\tb",
    "\u00e9l\u00e8ve",
    "\u2028",
    "\ud800",
    "\U0001f600",
    "a" * 5000,
    "",
    "alice\r\n\r\nGET /admin/zinj HTTP/1.1\r\nHost: x\r\n\r\n",
    " alice ",
    "alice,admin",
]
TYP_CLAIMS = ["refresh", "Refresh", "REFRESH", " refresh", "at+jwt", "Bearer", "JWT", "id"]


def frag(value) -> str:
    return json.dumps(value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
).map(frag)
numbers = st.sampled_from(HOSTILE_NUMBERS) | json_values
strings = st.sampled_from([frag(s) for s in HOSTILE_STRINGS]) | json_values | st.text(max_size=30).map(frag)
GOOD = {
    "iss": frag(ISS),
    "aud": frag(AUD),
    "sub": frag("alice"),
    "iat": str(NOW),
    "exp": str(NOW + 3600),
    "scope": frag("orders:read"),
    "tier": frag("pro"),
}
SLOTS = {
    "iss": strings,
    "aud": strings,
    "sub": strings,
    "iat": numbers,
    "exp": numbers,
    "nbf": numbers,
    "scope": strings,
    "tier": strings,
    "typ": st.sampled_from([frag(t) for t in TYP_CLAIMS]) | strings,
    "jti": strings,
    "azp": strings,
    "roles": strings,
}
HEADERS = [
    {"alg": "HS256"},
    {"alg": "HS256", "typ": "JWT"},
    {"alg": "HS256", "typ": "at+jwt"},
    {"alg": "HS256", "typ": "application/at+jwt"},
    {"alg": "HS256", "typ": "jwt"},
    {"alg": "HS256", "typ": 1},
    {"alg": "HS256", "typ": None},
    {"alg": "HS256", "typ": {"a": 1}},
    {"alg": "HS256", "typ": "JWT\r\nZinj: 1"},
    {"alg": "HS256", "kid": 1},
    {"alg": "HS256", "kid": "../../x"},
    {"alg": "HS256", "crit": ["exp"]},
    {"alg": "HS256", "crit": "x"},
    {"alg": "HS256", "cty": "JWT"},
    {"alg": "HS256", "b64": False},
    {"alg": "HS256", "jku": "http://127.0.0.1:1/jwks"},
    {"alg": "HS256", "x5u": "http://127.0.0.1:1/x"},
    {"alg": "HS256", "jwk": {"kty": "oct", "k": "AAAA"}},
    {"alg": "HS256", "typ": "JWT", "typ ": "x"},
    {"alg": "HS256", "kid": "a\r\nZinj: 1"},
    {"alg": "HS256", "zip": "DEF"},
]


@st.composite
def tokens(draw) -> tuple[str, str]:
    """(header JSON, payload JSON): one to three claims made hostile (or dropped), the rest
    good, so most tokens get past signature, issuer and audience to the code under test."""
    hostile = draw(st.lists(st.sampled_from(sorted(SLOTS)), min_size=1, max_size=3, unique=True))
    parts = []
    for name in SLOTS:
        if name in hostile:
            if draw(st.integers(0, 4)):
                parts.append(f"{json.dumps(name)}:{draw(SLOTS[name])}")
        elif name in GOOD:
            parts.append(f"{json.dumps(name)}:{GOOD[name]}")
    if draw(st.integers(0, 4)) == 0:  # a duplicate key: which one does the verifier read?
        name = draw(st.sampled_from(sorted(SLOTS)))
        parts.append(f"{json.dumps(name)}:{draw(SLOTS[name])}")
    return json.dumps(draw(st.sampled_from(HEADERS))), "{" + ",".join(parts) + "}"


def must_refuse(payload: str) -> str | None:
    """Why the issue's claim rules refuse this payload (None: the oracle does not know)."""
    try:
        claims = json.loads(payload)  # the last duplicate wins, as in PyJWT
    except ValueError:
        return "not JSON"
    if not isinstance(claims, dict):
        return "not an object"
    for name in ("exp", "iat", "nbf"):
        if name in claims:
            v = claims[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return f"{name} is not a number"
            if (isinstance(v, float) and not math.isfinite(v)) or abs(v) >= 10**20:
                return f"{name} out of range"
    for name in ("exp", "iat", "sub"):  # required_claims default
        if name not in claims:
            return f"{name} missing"
    if not isinstance(claims.get("sub"), str):
        return "sub is not a string"
    typ = claims.get("typ")
    if isinstance(typ, str) and typ.lower() == "refresh":
        return "a refresh token"
    return None


def send(edge, token: str):
    port, recorder, route_of_port = edge
    recorder.take(0)
    status, _ = send_raw(  # a whole request: no answer within 30 s is a failure, not a slow machine
        port,
        b"GET /account/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token.encode() + b"\r\n\r\n",
        timeout=30,
    )
    return status, recorder.take()


def check_token(edge, header: str, payload: str) -> None:
    token = hs256(payload, header)
    why = must_refuse(payload)
    statuses = []
    for attempt in ("first use", "cached"):
        status, records = send(edge, token)
        statuses.append(status)
        seen = "; ".join(repr(r.head) for r in records)
        assert status in (200, 401), f"{attempt}: answered {status} for {payload}; upstream saw {seen}"
        assert len(records) == (1 if status == 200 else 0), (
            f"{attempt}: {status} with {len(records)} upstream requests: {seen}"
        )
        for rec in records:
            bad = [(k, v) for k, v in rec.headers if control_chars(k) or control_chars(v)]
            assert not bad and not rec.malformed and not rec.folded, f"{attempt}: control characters forwarded: {seen}"
            assert not any(k.lower().startswith(CANARY) for k, _ in rec.headers), f"{attempt}: injected header: {seen}"
            principal = [v for k, v in rec.headers if k.lower().startswith(b"x-bastion-")]
            assert all(v.isascii() for v in principal), f"{attempt}: non-ASCII principal header: {seen}"
        if why is not None:
            assert status == 401, f"{attempt}: accepted although {why}: {payload}"
    assert statuses[0] == statuses[1], f"first use {statuses[0]}, cached {statuses[1]}: {payload}"


H = json.dumps({"alg": "HS256", "typ": "JWT"})


def claims_text(**over: str) -> str:
    doc = dict(GOOD)
    doc.update(over)
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in doc.items() if v is not None) + "}"


# Named regression cases: the issue's list and what the fuzzer found (header JSON, payload JSON).
REGRESSIONS = {
    "exp-10**400": (H, claims_text(exp=str(10**400))),
    "exp-1e400": (H, claims_text(exp="1e400")),
    "exp-NaN": (H, claims_text(exp="NaN")),
    "exp-Infinity": (H, claims_text(exp="Infinity")),
    "exp-as-string": (H, claims_text(exp='"%d"' % (NOW + 3600))),
    "nbf-numeric-string": (H, claims_text(nbf='"%d"' % (NOW - 60))),
    "iat-object": (H, claims_text(iat='{"a": 1}')),
    "exp-true": (H, claims_text(exp="true")),
    "sub-crlf-injection": (H, claims_text(sub=frag("alice\r\nZinj: 1"))),
    "sub-smuggled-request": (H, claims_text(sub=frag("alice\r\n\r\nGET /admin/zinj HTTP/1.1\r\nHost: x\r\n\r\n"))),
    "tier-crlf-injection": (H, claims_text(tier=frag("pro\r\nZinj: 1"))),
    "sub-nul": (H, claims_text(sub=frag("a\x00b"))),
    "sub-bare-lf": (H, claims_text(sub=frag("alice\nZinj: 1"))),
    "sub-non-ascii": (H, claims_text(sub=frag("\u00e9l\u00e8ve"))),
    "sub-lone-surrogate": (H, claims_text(sub=frag("\ud800"))),
    "sub-object": (H, claims_text(sub='{"a": 1}')),
    "sub-number": (H, claims_text(sub="12")),
    "tier-object": (H, claims_text(tier='{"a": 1}')),
    "scope-object": (H, claims_text(scope='{"a": 1}')),
    "typ-Refresh": (H, claims_text(typ=frag("Refresh"))),
    "typ-REFRESH": (H, claims_text(typ=frag("REFRESH"))),
    "header-typ-crlf": (json.dumps({"alg": "HS256", "typ": "JWT\r\nZinj: 1"}), claims_text()),
    "duplicate-exp-key": (H, claims_text()[:-1] + ',"exp":"1e400"}'),
}


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_named_claim_regressions(edge, name):
    check_token(edge, *REGRESSIONS[name])


@FAST
@given(tok=tokens())
@example(tok=(H, claims_text()))  # the harness accepts a good token (else the property is vacuous)
def test_jwt_claims_fuzz(edge, tok):
    check_token(edge, *tok)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@SLOW
@given(tok=tokens())
def test_jwt_claims_fuzz_large(edge, tok):
    check_token(edge, *tok)


def test_good_token_is_accepted_twice(edge):
    """The harness itself: a good token is 200 on first use and from the cache."""
    token = hs256(claims_text(), H)
    assert [send(edge, token)[0] for _ in range(2)] == [200, 200]
