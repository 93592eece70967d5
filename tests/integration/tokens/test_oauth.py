"""The OAuth 2.0 authorization server through a real gateway: authorization code + PKCE with the
login/consent page, client credentials, introspection and revocation."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from helpers import raw_request, run_gateway

from bastion.tokens.oauth import new_client

from .conftest import PASSWORD, database, free_port, gateway_config

REDIRECT = "https://app.example.com/callback"


@pytest.fixture(scope="module")
def oauth(upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oauth")
    with database("sqlite", tmp) as db:
        port = free_port()
        with run_gateway(gateway_config(db, port, upstream.url, tmp), tmp) as gw:
            ta = gw.server.gateway.state.token_app
            ta.service.register("carol", "carol@example.com", PASSWORD)
            gw.public_id, _ = new_client(
                ta.sessions,
                "Web app",
                [REDIRECT],
                ["authorization_code", "refresh_token"],
                ["orders:read"],
                public=True,
            )
            gw.service_id, gw.service_secret = new_client(
                ta.sessions, "Billing", [], ["client_credentials"], ["billing:run"]
            )
            yield gw


def pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def form(gw, path, fields, headers=None):
    return raw_request(
        gw.port,
        "POST",
        path,
        {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
        urlencode(fields).encode(),
    )


def authorize_params(gw, challenge, **over):
    p = {
        "response_type": "code",
        "client_id": gw.public_id,
        "redirect_uri": REDIRECT,
        "scope": "orders:read",
        "state": "st-" + secrets.token_hex(4),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    p.update(over)
    return {k: v for k, v in p.items() if v is not None}


def get_code(gw, challenge, **over):
    params = authorize_params(gw, challenge, **over)
    page = raw_request(gw.port, "GET", "/auth/oauth/authorize?" + urlencode(params))
    assert page.status == 200, page.body
    assert "content-security-policy" in dict(page.headers)
    csrf = re.search(rb'name="csrf" value="([^"]+)"', page.body).group(1).decode()
    r = form(
        gw,
        "/auth/oauth/authorize",
        {**params, "csrf": csrf, "username": "carol", "password": PASSWORD, "decision": "allow"},
    )
    assert r.status == 302, r.body
    loc = urlsplit(r.header("location"))
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == REDIRECT
    q = parse_qs(loc.query)
    assert q["state"] == [params["state"]]  # state carried through
    return q["code"][0]


def exchange(gw, code, verifier, **over):
    fields = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": gw.public_id,
        "code_verifier": verifier,
    }
    fields.update(over)
    return form(gw, "/auth/oauth/token", {k: v for k, v in fields.items() if v is not None})


def test_authorization_code_with_pkce(oauth):
    verifier, challenge = pkce()
    code = get_code(oauth, challenge)
    r = exchange(oauth, code, verifier)
    assert r.status == 200, r.body
    tokens = r.json()
    assert tokens["scope"] == "orders:read" and tokens["refresh_token"]
    assert raw_request(oauth.port, "GET", "/api/x", {"Authorization": f"Bearer {tokens['access_token']}"}).status == 200
    # the code works once
    again = exchange(oauth, code, verifier)
    assert again.status == 400 and again.json()["error"] == "invalid_grant"
    # refresh through the token endpoint rotates
    r2 = form(oauth, "/auth/oauth/token", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert r2.status == 200 and r2.json()["refresh_token"] != tokens["refresh_token"]


def test_wrong_verifier_refused(oauth):
    verifier, challenge = pkce()
    code = get_code(oauth, challenge)
    r = exchange(oauth, code, pkce()[0])
    assert r.status == 400 and r.json()["error"] == "invalid_grant"
    missing = exchange(oauth, get_code(oauth, challenge), None)
    assert missing.status == 400


@pytest.mark.parametrize(
    "over",
    [
        {"code_challenge_method": "plain"},
        {"code_challenge_method": None},
        {"code_challenge": None, "code_challenge_method": None},
    ],
)
def test_pkce_s256_is_required(oauth, over):
    _, challenge = pkce()
    params = authorize_params(oauth, challenge, **over)
    r = raw_request(oauth.port, "GET", "/auth/oauth/authorize?" + urlencode(params))
    assert r.status in (302, 400)
    if r.status == 302:  # errors go back to the (registered) client with the state
        q = parse_qs(urlsplit(r.header("location")).query)
        assert q["error"] == ["invalid_request"] and q["state"] == [params["state"]]


@pytest.mark.parametrize(
    "uri",
    [
        REDIRECT + "/extra",
        REDIRECT + "?next=https://evil.example",
        "https://evil.example/callback",
        "https://app.example.com/callback/",
        "http://app.example.com/callback",
    ],
)
def test_redirect_uri_must_match_exactly(oauth, uri):
    _, challenge = pkce()
    r = raw_request(
        oauth.port, "GET", "/auth/oauth/authorize?" + urlencode(authorize_params(oauth, challenge, redirect_uri=uri))
    )
    assert r.status == 400 and r.header("location") is None  # never redirected to an unregistered URI


def test_deny_and_bad_password_and_csrf(oauth):
    _, challenge = pkce()
    params = authorize_params(oauth, challenge)
    page = raw_request(oauth.port, "GET", "/auth/oauth/authorize?" + urlencode(params))
    csrf = re.search(rb'name="csrf" value="([^"]+)"', page.body).group(1).decode()
    bad = form(
        oauth,
        "/auth/oauth/authorize",
        {**params, "csrf": csrf, "username": "carol", "password": "Wrong-password-1!", "decision": "allow"},
    )
    assert bad.status == 200 and b"wrong" in bad.body and bad.header("location") is None
    forged = form(
        oauth,
        "/auth/oauth/authorize",
        {**params, "csrf": "1." + "0" * 64, "username": "carol", "password": PASSWORD, "decision": "allow"},
    )
    assert forged.status == 200 and forged.header("location") is None
    deny = form(oauth, "/auth/oauth/authorize", {**params, "csrf": csrf, "decision": "deny"})
    assert deny.status == 302 and parse_qs(urlsplit(deny.header("location")).query)["error"] == ["access_denied"]


def test_client_credentials_introspection_and_revocation(oauth):
    basic = base64.b64encode(f"{oauth.service_id}:{oauth.service_secret}".encode()).decode()
    auth = {"Authorization": f"Basic {basic}"}
    r = form(oauth, "/auth/oauth/token", {"grant_type": "client_credentials", "scope": "billing:run"}, auth)
    assert r.status == 200, r.body
    token = r.json()["access_token"]
    assert "refresh_token" not in r.json()
    wrong = base64.b64encode(f"{oauth.service_id}:nope".encode()).decode()
    assert (
        form(
            oauth, "/auth/oauth/token", {"grant_type": "client_credentials"}, {"Authorization": f"Basic {wrong}"}
        ).status
        == 401
    )
    info = form(oauth, "/auth/oauth/introspect", {"token": token}, auth).json()
    assert info["active"] is True and info["sub"] == oauth.service_id and info["scope"] == "billing:run"
    assert form(oauth, "/auth/oauth/introspect", {"token": token}).status == 401  # clients only
    assert form(oauth, "/auth/oauth/revoke", {"token": token}, auth).status == 200
    assert form(oauth, "/auth/oauth/introspect", {"token": token}, auth).json() == {"active": False}
    assert raw_request(oauth.port, "GET", "/api/x", {"Authorization": f"Bearer {token}"}).status == 401
    assert form(oauth, "/auth/oauth/introspect", {"token": "garbage"}, auth).json() == {"active": False}


def test_implicit_and_password_grants_are_not_offered(oauth):
    r = form(
        oauth,
        "/auth/oauth/token",
        {"grant_type": "password", "username": "carol", "password": PASSWORD, "client_id": oauth.public_id},
    )
    assert r.status == 400 and r.json()["error"] == "unsupported_grant_type"
    _, challenge = pkce()
    r = raw_request(
        oauth.port,
        "GET",
        "/auth/oauth/authorize?" + urlencode(authorize_params(oauth, challenge, response_type="token")),
    )
    assert r.status in (302, 400) and "access_token" not in (r.header("location") or "")


def test_openid_id_token_carries_the_nonce(oauth):
    import jwt as pyjwt

    verifier, challenge = pkce()
    code = get_code(oauth, challenge, scope="openid email orders:read", nonce="n-0S6_WzA2Mj")
    r = exchange(oauth, code, verifier)
    assert r.status == 200, r.body
    doc = r.json()
    jwks = raw_request(oauth.port, "GET", "/auth/.well-known/jwks.json").json()
    kid = pyjwt.get_unverified_header(doc["id_token"])["kid"]
    key = pyjwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid))
    claims = pyjwt.decode(
        doc["id_token"],
        key.key,
        algorithms=["RS256"],
        audience=oauth.public_id,
        issuer=f"http://127.0.0.1:{oauth.port}/auth",
    )
    assert claims["nonce"] == "n-0S6_WzA2Mj" and claims["email"] == "carol@example.com"
    assert "password" not in str(claims)
