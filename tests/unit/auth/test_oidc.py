"""bastion.auth.oidc without a provider: the authorization request and the session cookies."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from helpers import ThreadedUvicorn
from hypothesis import given
from hypothesis import strategies as st

from bastion.auth.oidc import (
    AuthorizationRequest,
    ProviderConfig,
    RelyingParty,
    SessionCookies,
    needs_refresh,
    new_session,
    refreshed_session,
)
from bastion.net.fetch import FetchError


def test_authorization_url_carries_pkce_s256_state_and_nonce():
    attempt = AuthorizationRequest(return_to="/app")
    url = attempt.url("https://idp.example/authorize?tenant=a", "cid", "https://gw.example/cb", ["openid", "email"])
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert parts.netloc == "idp.example" and parts.path == "/authorize"
    assert q["tenant"] == "a"  # an endpoint's own query is kept
    assert q["response_type"] == "code" and q["client_id"] == "cid" and q["redirect_uri"] == "https://gw.example/cb"
    assert q["scope"] == "openid email" and q["state"] == attempt.state and q["nonce"] == attempt.nonce
    digest = hashlib.sha256(attempt.verifier.encode()).digest()
    assert q["code_challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert q["code_challenge_method"] == "S256"
    assert attempt.verifier not in url and attempt.binding not in url  # secrets stay at the gateway


def test_each_attempt_has_fresh_secrets():
    a, b = AuthorizationRequest(return_to="/"), AuthorizationRequest(return_to="/")
    assert {a.state, a.nonce, a.binding, a.verifier}.isdisjoint({b.state, b.nonce, b.binding, b.verifier})
    assert len({a.state, a.nonce, a.binding, a.verifier}) == 4


cookie_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=8)


@given(st.lists(st.tuples(cookie_name, cookie_name), max_size=6), st.sampled_from(["session", "login"]))
def test_the_gateway_cookies_never_reach_the_upstream(others, which):
    cookies = SessionCookies("__Host-bastion_session", secure=True)
    ours = cookies.session if which == "session" else cookies.login
    pairs = [f"{k}={v}" for k, v in others]
    raw = "; ".join([*pairs[:2], f"{ours}=secret", *pairs[2:]]).encode()
    kept = cookies.forwarded_cookie(raw)
    names = [] if kept is None else [p.split("=")[0] for p in kept.decode().split("; ")]
    assert cookies.session not in names and cookies.login not in names
    assert names == [k for k, _ in others if k not in (cookies.session, cookies.login)]


def test_cookie_names_and_attributes():
    c = SessionCookies("__Host-bastion_session", secure=False)
    assert c.login == "__Host-bastion_login"
    assert SessionCookies("sid", secure=True).login == "sid_login"
    assert c.set(c.session, "x", 60) == (
        b"set-cookie",
        b"__Host-bastion_session=x; Path=/; HttpOnly; SameSite=Lax; Max-Age=60",
    )
    assert SessionCookies("sid", secure=True).set("sid", "", 0)[1].endswith(b"Max-Age=0; Secure")


def test_session_refresh_bookkeeping():
    s = new_session(
        {"sub": "u1", "email": "a@b"}, {"access_token": "a1", "refresh_token": "r1", "expires_in": 300}, 1000.0, 3600
    )
    assert s["expires_at"] == 4600.0 and s["access_expires_at"] == 1300.0
    assert not needs_refresh(s, 60, 1200.0) and needs_refresh(s, 60, 1240.0)
    r = refreshed_session(s, {"access_token": "a2", "expires_in": 300}, 1250.0)
    assert r["access_token"] == "a2" and r["refresh_token"] == "r1" and r["access_expires_at"] == 1550.0
    assert r["expires_at"] == s["expires_at"]  # a refresh never extends the session itself
    no_refresh = new_session({"sub": "u"}, {"access_token": "a", "expires_in": 1}, 0.0, 60)
    assert not needs_refresh(no_refresh, 60, 100.0)


def test_discovery_without_an_authorization_or_token_endpoint_is_a_provider_failure():
    """A discovery document that names no authorization/token endpoint is the provider failing
    (FetchError: the policy answers 503), not a crash later while building the redirect."""
    docs: dict[str, dict] = {}

    async def app(scope, receive, send):
        body = orjson.dumps(docs["doc"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    with ThreadedUvicorn(app) as idp:
        issuer = idp.url
        good = {"issuer": issuer, "authorization_endpoint": f"{issuer}/a", "token_endpoint": f"{issuer}/t"}
        for missing in ("authorization_endpoint", "token_endpoint"):
            docs["doc"] = {k: v for k, v in good.items() if k != missing}
            rp = RelyingParty(ProviderConfig(issuer=issuer, client_id="c"), f"{issuer}/cb", ".")
            with pytest.raises(FetchError):
                asyncio.run(rp.discover())
        docs["doc"] = good
        rp = RelyingParty(ProviderConfig(issuer=issuer, client_id="c"), f"{issuer}/cb", ".")
        ep = asyncio.run(rp.discover())
        assert ep.authorization_endpoint == f"{issuer}/a" and ep.token_endpoint == f"{issuer}/t"
        assert rp.verifier is None  # no jwks_uri: a plain OAuth 2.0 provider
