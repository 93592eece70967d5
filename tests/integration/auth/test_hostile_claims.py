"""Validly signed tokens with hostile claims, and ambiguous credentials, through a real gateway:
never a 5xx, never a header the gateway did not mean, on the first use and on the cached path."""

from __future__ import annotations

import json
import socket
import time

import jwt
import pytest
from helpers import forwarded_headers, raw_request, run_gateway

from bastion.auth.apikeys import hash_key
from tests.unit.auth.keys import AUD, ISS, SECRET

API_KEY = "bk_test_" + "H" * 43


def bearer_scheme(**issuer: object) -> dict:
    """The HS256 test issuer as a `jwt` scheme, with extra issuer settings."""
    return {
        "type": "jwt",
        "issuers": [
            {"issuer": ISS, "audiences": [AUD], "algorithms": ["HS256"], "keys": [{"secret": SECRET}], **issuer}
        ],
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream):
    tmp = tmp_path_factory.mktemp("hostile")
    config = {
        "upstreams": {"up": {"urls": [upstream.url]}},
        "policies": {
            "auth": {
                "schemes": {
                    "bearer": bearer_scheme(),
                    "key": {
                        "type": "api_key",
                        "query_param": "api_key",
                        "cookie": "api_key",
                        "keys": [{"id": "k1", "hash": hash_key(API_KEY), "owner": "acme", "scopes": ["read"]}],
                    },
                }
            }
        },
        "routes": [
            {"path": "/either/*", "upstream": "up"},
            {"path": "/q/*", "upstream": "up", "policies": {"auth": {"allow_query_key": True}}},
            {"path": "/pub/*", "upstream": "up", "policies": {"auth": {"require": []}}},
        ],
    }
    with run_gateway(config, tmp) as g:
        yield g


def raw_payload_token(payload: bytes, header: dict | None = None) -> str:
    """An HS256 token over an arbitrary payload text (so non-JSON-native values like 1e400 or
    10**400 can be written exactly as an attacker would)."""
    import base64
    import hashlib
    import hmac

    def b64(b: bytes) -> bytes:
        return base64.urlsafe_b64encode(b).rstrip(b"=")

    head = b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(payload)
    sig = b64(hmac.new(SECRET.encode(), head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def claims_text(**over) -> bytes:
    now = int(time.time())
    base = {"iss": ISS, "aud": AUD, "sub": "alice", "iat": now, "exp": now + 300}
    parts = {k: json.dumps(v) for k, v in base.items()}
    for k, v in over.items():
        if v is None:
            parts.pop(k, None)
        else:
            parts[k] = v if isinstance(v, str) and v.startswith("RAW:") else json.dumps(v)
    return ("{" + ",".join(f'"{k}":{v.removeprefix("RAW:")}' for k, v in parts.items()) + "}").encode()


NOW = int(time.time())
HOSTILE = {
    "exp 10**400": {"exp": "RAW:" + "1" + "0" * 400},
    "exp 1e400": {"exp": "RAW:1e400"},
    "exp Infinity": {"exp": "RAW:Infinity"},
    "exp NaN": {"exp": "RAW:NaN"},
    "exp as string": {"exp": str(NOW + 300)},
    "exp negative": {"exp": -5},
    "exp true": {"exp": True},
    "nbf as string": {"nbf": str(NOW - 10)},
    "nbf object": {"nbf": {"$gt": 0}},
    "iat as string": {"iat": str(NOW)},
    "iat 1e308": {"iat": 1e308},
    "sub object": {"sub": {"id": "admin"}},
    "sub number": {"sub": 42},
    "sub list": {"sub": ["alice", "admin"]},
    "sub with CRLF": {"sub": "alice\r\nX-Bastion-Subject: admin"},
    "sub smuggling a request": {"sub": "a\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n"},
    "sub with NUL": {"sub": "alice\u0000admin"},
    "sub with LF only": {"sub": "alice\nx: y"},
    "sub with DEL": {"sub": "alice\u007f"},
    "tier with CRLF": {"tier": "gold\r\nX-Injected: 1"},
    "tier object": {"tier": {"name": "gold"}},
    "scope number": {"scope": 5},
    "scope with NUL": {"scope": "read\u0000write"},
    "aud object": {"aud": {"x": AUD}},
    "iss list": {"iss": [ISS]},
    "jti number": {"jti": 7},
    "typ Refresh (Keycloak)": {"typ": "Refresh"},
    "typ REFRESH": {"typ": "REFRESH"},
    "typ Offline": {"typ": "Offline"},
    "typ ID": {"typ": "ID"},
    "typ number": {"typ": 1},
    # from the red-team review
    "typ refresh with a trailing space": {"typ": "refresh "},
    "typ refresh with NUL": {"typ": "refresh\u0000"},
    "typ refresh_token": {"typ": "refresh_token"},
    "typ full-width refresh": {"typ": "\uff52\uff45\uff46\uff52\uff45\uff53\uff48"},
    "sub lone surrogate": {"sub": 'RAW:"al\\ud800ice"'},
    "sub empty": {"sub": ""},
    "payload nested 1000 deep": {"x": "RAW:" + "[" * 1000 + "]" * 1000},
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_claims_are_401_on_first_use_and_on_the_cached_path(gw, name):
    token = raw_payload_token(claims_text(**HOSTILE[name]))
    for attempt in (1, 2):
        r = raw_request(gw.port, "GET", "/either/x", {"Authorization": f"Bearer {token}"})
        assert r.status == 401, (name, attempt, r.status, r.body[:300])
        assert r.header("content-type") == "application/problem+json"


def test_a_plain_token_still_works_and_unicode_subjects_are_encoded_once(gw):
    ok = raw_payload_token(claims_text())
    r = raw_request(gw.port, "GET", "/either/x", {"Authorization": f"Bearer {ok}"})
    assert r.status == 200
    assert forwarded_headers(r)["x-bastion-subject"] == ["alice"]
    for sub, forwarded in (("José", "Jos%C3%A9"), ("Jos%C3%A9", "Jos%25C3%25A9"), (" admin", "%20admin")):
        token = raw_payload_token(claims_text(sub=sub))
        r = raw_request(gw.port, "GET", "/either/x", {"Authorization": f"Bearer {token}"})
        assert r.status == 200
        assert forwarded_headers(r)["x-bastion-subject"] == [forwarded], sub


def test_header_typ_can_be_required(upstream, tmp_path):
    config = {
        "upstreams": {"up": {"urls": [upstream.url]}},
        "policies": {"auth": {"schemes": {"bearer": bearer_scheme(header_typ=["at+jwt"])}}},
        "routes": [{"path": "/*", "upstream": "up"}],
    }
    with run_gateway(config, tmp_path) as g:
        for typ, status in (("at+jwt", 200), ("AT+JWT", 200), ("application/at+jwt", 200), ("JWT", 401), (None, 401)):
            header = {"alg": "HS256"} if typ is None else {"alg": "HS256", "typ": typ}
            token = raw_payload_token(claims_text(), header)
            r = raw_request(g.port, "GET", "/x", {"Authorization": f"Bearer {token}"})
            assert r.status == status, (typ, r.status)


def send_raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                length = [
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(rest) >= length[0]:
                    break
        return out


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def test_two_authorization_headers_are_refused(gw):
    low = raw_payload_token(claims_text())
    forged = jwt.encode({"iss": ISS, "aud": AUD, "sub": "admin", "exp": NOW + 300}, "x" * 40, algorithm="HS256")
    out = send_raw(
        gw.port,
        (
            f"GET /either/x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {low}\r\n"
            f"Authorization: Bearer {forged}\r\nConnection: close\r\n\r\n"
        ).encode(),
    )
    assert status_of(out) == 400 and b"ambiguous-credentials" in out


@pytest.mark.parametrize(
    "where",
    [
        "X-API-Key: {k}\r\nX-API-Key: {k}\r\n",
        "X-API-Key: {k}\r\nCookie: api_key={k}\r\n",
        "Cookie: api_key={k}; api_key=other\r\n",
        "Cookie: api_key={k}\r\nCookie: api_key=other\r\n",
    ],
)
def test_an_api_key_in_two_places_is_refused(gw, where):
    out = send_raw(
        gw.port, (f"GET /either/x HTTP/1.1\r\nHost: t\r\n{where.format(k=API_KEY)}Connection: close\r\n\r\n").encode()
    )
    assert status_of(out) == 400 and b"ambiguous-credentials" in out


def test_an_api_key_in_header_and_query_is_refused_where_query_keys_are_allowed(gw):
    r = raw_request(gw.port, "GET", f"/q/x?api_key={API_KEY}", {"X-API-Key": API_KEY})
    assert r.status == 400
    assert raw_request(gw.port, "GET", f"/q/x?api_key={API_KEY}").status == 200


def test_duplicates_are_refused_on_public_routes_too(gw):
    out = send_raw(
        gw.port,
        (
            f"GET /pub/x HTTP/1.1\r\nHost: t\r\nX-API-Key: {API_KEY}\r\nX-API-Key: nope\r\nConnection: close\r\n\r\n"
        ).encode(),
    )
    assert status_of(out) == 400


def test_an_underscore_spelling_of_the_key_header_counts_as_a_second_key(gw):
    out = send_raw(
        gw.port,
        (
            f"GET /either/x HTTP/1.1\r\nHost: t\r\nX-API-Key: {API_KEY}\r\nX_API_Key: forged\r\n"
            "Connection: close\r\n\r\n"
        ).encode(),
    )
    assert status_of(out) == 400


def test_principal_headers_are_named_once_for_the_gateway(upstream, tmp_path):
    """Top-level `principal_headers`: the auth policy publishes under these names, and whatever a
    client sends under them is dropped, authenticated or not."""
    config = {
        "upstreams": {"up": {"urls": [upstream.url]}},
        "principal_headers": {"subject": "X-User", "scopes": "X-User-Scopes"},
        "policies": {
            "auth": {
                "schemes": {
                    "key": {
                        "type": "api_key",
                        "keys": [{"id": "k1", "hash": hash_key(API_KEY), "owner": "acme", "scopes": ["read"]}],
                    }
                }
            }
        },
        "routes": [
            {"path": "/pub/*", "upstream": "up", "policies": {"auth": {"require": []}}},
            {"path": "/*", "upstream": "up"},
        ],
    }
    with run_gateway(config, tmp_path) as g:
        seen = forwarded_headers(raw_request(g.port, "GET", "/x", {"X-API-Key": API_KEY, "X-User": "root"}))
        assert seen["x-user"] == ["acme"] and seen["x-user-scopes"] == ["read"] and "x-bastion-subject" not in seen
        seen = forwarded_headers(raw_request(g.port, "GET", "/pub/x", {"X-User": "root", "X_User_Scopes": "admin"}))
        assert "x-user" not in seen and "x_user_scopes" not in seen


def test_scopes_are_separated_by_spaces_only(upstream, tmp_path):
    """RFC 6749 3.3: `read\u00a0admin` is one (odd) scope, not `read` and `admin`."""
    config = {
        "upstreams": {"up": {"urls": [upstream.url]}},
        "policies": {"auth": {"schemes": {"bearer": bearer_scheme()}}},
        "routes": [
            {"path": "/admin/*", "upstream": "up", "policies": {"auth": {"scopes": ["admin"]}}},
            {"path": "/*", "upstream": "up"},
        ],
    }
    with run_gateway(config, tmp_path) as g:
        for sep in ("\u00a0", "\u2003", "\u001c"):
            token = raw_payload_token(claims_text(scope="read" + sep + "admin"))
            assert raw_request(g.port, "GET", "/admin/x", {"Authorization": f"Bearer {token}"}).status in (401, 403)
        token = raw_payload_token(claims_text(scope="read admin"))
        r = raw_request(g.port, "GET", "/admin/x", {"Authorization": f"Bearer {token}"})
        assert r.status == 200 and forwarded_headers(r)["x-bastion-issuer"] == [ISS]


def test_an_unsigned_deeply_nested_token_is_401_not_500(gw):
    import base64

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    token = b64(b'{"alg":"HS256"}') + "." + b64(b'{"a":' + b"[" * 1000 + b"]" * 1000 + b"}") + ".AAAA"
    r = raw_request(gw.port, "GET", "/pub/x", {"Authorization": f"Bearer {token}"})
    assert r.status == 200  # public route: the refused token is dropped, the request goes on
    assert "authorization" not in forwarded_headers(r)
    assert raw_request(gw.port, "GET", "/either/x", {"Authorization": f"Bearer {token}"}).status == 401


def test_a_bearer_token_in_the_query_is_refused_on_auth_routes(gw):
    ok = raw_payload_token(claims_text())
    r = raw_request(gw.port, "GET", "/either/x?access_token=forged", {"Authorization": f"Bearer {ok}"})
    assert r.status == 400 and r.json()["type"].endswith("/ambiguous-credentials")
    assert raw_request(gw.port, "GET", "/pub/x?access_token=forged").status == 400
