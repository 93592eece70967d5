"""Login at the gateway (OIDC relying party), with bastion's own token service as the provider —
raw HTTP, handling cookies and redirects by hand so every step is visible."""

from __future__ import annotations

import json
import re
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import ThreadedUvicorn, forwarded_headers, raw_request, run_gateway

from bastion.policies.login import safe_return_path
from bastion.store.db import open_store
from bastion.tokens.oauth import new_client

from .conftest import PASSWORD, database, free_port, gateway_config

SESSION_KEY = "Wq5mT0m9hYtGkYx2o1nq0Y3xQv1gU1c7fY0v4JzR3dA="


def login_config(db, port, upstream_url, tmp_path, client_id, secret, *, store="memory", provider=None):
    cfg = gateway_config(db, port, upstream_url, tmp_path)
    base = f"http://127.0.0.1:{port}"
    cfg["policies"]["login"] = {
        "providers": {
            "bastion": provider
            or {
                "issuer": f"{base}/auth",
                "client_id": client_id,
                "client_secret": secret,
                "scopes": ["openid", "email", "orders:read"],
            }
        },
        "session_store": store,
        "session_secret": SESSION_KEY,
        "cookie_secure": False,
    }
    cfg["routes"].append(
        {
            "path": "/app/*",
            "upstream": "api",
            "policies": {
                "login": {"provider": "bastion", "redirect_uri": f"{base}/app/_bastion/callback"},
                "auth": {"require": [{"bearer": ["orders:read"]}]},
            },
        }
    )
    return cfg


class Browser:
    """Just enough of a browser: a cookie jar and explicit redirects."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.jar: dict[str, str] = {}

    def request(self, method, target, headers=None, body=None):
        h = {"Accept": "text/html", **(headers or {})}
        if self.jar:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        r = raw_request(self.port, method, target, h, body)
        for value in r.headers_named("set-cookie"):
            c = SimpleCookie()
            c.load(value)
            for name, morsel in c.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.jar.pop(name, None)
                else:
                    self.jar[name] = morsel.value
        return r


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def sign_in(b: Browser, start: str = "/app/page?x=1", password: str = PASSWORD):
    """Page → provider login → consent → callback. Returns the callback response and its URL."""
    r = b.request("GET", start)
    assert r.status == 302, r.body
    authorize = r.header("location")
    page = b.request("GET", path_of(authorize))
    assert page.status == 200, page.body
    fields = dict(re.findall(rb'name="([^"]+)" value="([^"]*)"', page.body))
    fields = {k.decode(): v.decode().replace("&amp;", "&") for k, v in fields.items()}
    r = b.request(
        "POST",
        "/auth/oauth/authorize",
        {"Content-Type": "application/x-www-form-urlencoded"},
        urlencode({**fields, "username": "gina", "password": password, "decision": "allow"}).encode(),
    )
    assert r.status == 302, r.body
    callback = r.header("location")
    return b.request("GET", path_of(callback)), callback


@pytest.fixture()
def rp(upstream, tmp_path):
    with database("sqlite", tmp_path) as db:
        port = free_port()
        _, maker = open_store(db)
        client_id, secret = new_client(
            maker,
            "gateway",
            [f"http://127.0.0.1:{port}/app/_bastion/callback"],
            ["authorization_code", "refresh_token"],
            ["orders:read"],
        )
        with run_gateway(login_config(db, port, upstream.url, tmp_path, client_id, secret), tmp_path) as gw:
            gw.server.gateway.state.token_app.service.register("gina", "gina@example.com", PASSWORD)
            ta = gw.server.gateway.state.token_app
            from sqlalchemy import update

            from bastion.store.models import User

            with ta.sessions.begin() as s:
                s.execute(update(User).values(scopes="orders:read"))
            yield gw


def test_login_round_trip_and_logout(rp):
    b = Browser(rp.port)
    r, _ = sign_in(b)
    assert r.status == 302 and r.header("location") == "/app/page?x=1"
    cookie = r.header("set-cookie")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and cookie.startswith("__Host-bastion_session=")
    page = b.request("GET", "/app/page?x=1")
    assert page.status == 200
    seen = forwarded_headers(page)
    user = rp.server.gateway.state.token_app.service.users()[0]
    assert seen["x-bastion-subject"] == [user.id]
    assert "authorization" not in seen  # forward_access_token is off
    assert "cookie" not in seen  # the session cookie stays at the gateway
    b.jar["theme"] = "dark"
    assert forwarded_headers(b.request("GET", "/app/page"))["cookie"] == ["theme=dark"]
    b.jar.pop("theme")
    old = dict(b.jar)
    out = b.request("GET", "/app/_bastion/logout")
    assert out.status == 302 and "__Host-bastion_session" not in b.jar
    # the old cookie no longer works
    again = raw_request(
        rp.port,
        "GET",
        "/app/page",
        {"Accept": "text/html", "Cookie": f"__Host-bastion_session={old['__Host-bastion_session']}"},
    )
    assert again.status == 302 and "/auth/oauth/authorize" in again.header("location")


def test_replayed_and_forged_callbacks(rp):
    b = Browser(rp.port)
    r, callback = sign_in(b)
    assert r.status == 302
    replay = b.request("GET", path_of(callback))
    assert replay.status == 400 and "state" in replay.json()["detail"]
    forged = b.request("GET", "/app/_bastion/callback?code=abc&state=made-up")
    assert forged.status == 400


def test_state_is_bound_to_the_browser(rp):
    victim, attacker = Browser(rp.port), Browser(rp.port)
    # the attacker starts a login and gets a code for their own account...
    r = attacker.request("GET", "/app/page")
    page = attacker.request("GET", path_of(r.header("location")))
    fields = {
        k.decode(): v.decode().replace("&amp;", "&")
        for k, v in re.findall(rb'name="([^"]+)" value="([^"]*)"', page.body)
    }
    r = attacker.request(
        "POST",
        "/auth/oauth/authorize",
        {"Content-Type": "application/x-www-form-urlencoded"},
        urlencode({**fields, "username": "gina", "password": PASSWORD, "decision": "allow"}).encode(),
    )
    callback = r.header("location")
    # ...and makes the victim's browser open the callback (login CSRF): refused
    victim.request("GET", "/app/page")  # the victim has its own, different binding cookie
    hit = victim.request("GET", path_of(callback))
    assert hit.status == 400 and "another browser" in hit.json()["detail"]
    assert "__Host-bastion_session" not in victim.jar


def test_api_clients_still_use_bearer_tokens(rp):
    tok = raw_request(
        rp.port,
        "POST",
        "/auth/login",
        {"Content-Type": "application/json"},
        json.dumps({"username": "gina", "password": PASSWORD}).encode(),
    ).json()["access_token"]
    assert raw_request(rp.port, "GET", "/app/data", {"Authorization": f"Bearer {tok}"}).status == 200
    assert raw_request(rp.port, "GET", "/app/data", {"Authorization": "Bearer nope"}).status == 401
    # not a page load and no session: 401, no redirect
    assert raw_request(rp.port, "GET", "/app/data", {"Accept": "application/json"}).status == 401


def test_csrf_on_cookie_authenticated_changes(rp):
    b = Browser(rp.port)
    sign_in(b)
    body = b'{"a": 1}'
    assert b.request("POST", "/app/orders", {"Content-Type": "application/json"}, body).status == 403
    assert (
        b.request(
            "POST", "/app/orders", {"Content-Type": "application/json", "Origin": "https://evil.example"}, body
        ).status
        == 403
    )
    assert (
        b.request(
            "POST",
            "/app/orders",
            {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{rp.port}.evil.example"},
            body,
        ).status
        == 403
    )
    ok = b.request(
        "POST", "/app/orders", {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{rp.port}"}, body
    )
    assert ok.status == 200


@pytest.mark.parametrize(
    "value,expected",
    [
        ("/app/x?y=1", "/app/x?y=1"),
        ("//evil.example/x", "/"),
        ("https://evil.example", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
        (None, "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
    ],
)
def test_return_paths_are_same_origin_only(value, expected):
    assert safe_return_path(value) == expected


# ------------------------------------------------------------------ a provider that misbehaves
EVIL = rsa.generate_private_key(public_exponent=65537, key_size=2048)
GOOD = rsa.generate_private_key(public_exponent=65537, key_size=2048)
MODE = {"value": "ok"}
ISSUED: dict[str, str] = {}


def fake_provider_app(port_holder):
    import orjson
    from upstream_app import read_body

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        path = scope["path"]
        base = f"http://127.0.0.1:{port_holder['port']}"
        await read_body(receive)
        if path == "/.well-known/openid-configuration":
            doc = {
                "issuer": base,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "jwks_uri": f"{base}/jwks",
            }
        elif path == "/jwks":
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(GOOD.public_key(), as_dict=True)
            doc = {"keys": [{**jwk, "kid": "good", "alg": "RS256", "use": "sig"}]}
        elif path == "/authorize":
            q = parse_qs(scope["query_string"].decode())
            ISSUED["nonce"] = q["nonce"][0]
            loc = q["redirect_uri"][0] + "?" + urlencode({"code": "c0de", "state": q["state"][0]})
            await send({"type": "http.response.start", "status": 302, "headers": [(b"location", loc.encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        elif path == "/userinfo":
            auth = dict(scope["headers"]).get(b"authorization", b"")
            doc = {"id": 42, "login": "octo", "email": "octo@example.com"} if auth == b"Bearer at" else {"error": "no"}
        elif path == "/token":
            now = int(time.time())
            claims = {"iss": base, "aud": "rp", "sub": "u1", "iat": now, "exp": now + 300, "nonce": ISSUED["nonce"]}
            key, kid = GOOD, "good"
            if MODE["value"] == "wrong-nonce":
                claims["nonce"] = "not-the-one"
            elif MODE["value"] == "other-key":
                key = EVIL
            elif MODE["value"] == "wrong-aud":
                claims["aud"] = "someone-else"
            elif MODE["value"] == "expired":
                claims.update(iat=now - 900, exp=now - 600)
            doc = {
                "access_token": "at",
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid}),
            }
        else:
            doc = {"error": "not found"}
        out = orjson.dumps(doc)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})

    return app


@pytest.mark.parametrize(
    "mode,ok", [("ok", True), ("wrong-nonce", False), ("other-key", False), ("wrong-aud", False), ("expired", False)]
)
def test_id_token_checks(upstream, tmp_path, mode, ok):
    holder: dict = {}
    with ThreadedUvicorn(fake_provider_app(holder)) as idp:
        holder["port"] = idp.port
        with database("sqlite", tmp_path) as db:
            port = free_port()
            provider = {"issuer": f"http://127.0.0.1:{idp.port}", "client_id": "rp", "client_secret": "s"}
            cfg = login_config(db, port, upstream.url, tmp_path, "rp", "s", provider=provider)
            cfg["routes"][-1]["policies"]["auth"] = {"require": []}
            with run_gateway(cfg, tmp_path) as gw:
                MODE["value"] = mode
                b = Browser(gw.port)
                r = b.request("GET", "/app/page")
                assert r.status == 302
                authz = raw_request(idp.port, "GET", path_of(r.header("location")))
                done = b.request("GET", path_of(authz.header("location")))
                if ok:
                    assert done.status == 302 and "__Host-bastion_session" in b.jar
                    assert forwarded_headers(b.request("GET", "/app/page"))["x-bastion-subject"] == ["u1"]
                else:
                    assert done.status == 400 and "__Host-bastion_session" not in b.jar, done.body


def test_server_side_refresh_and_a_failed_refresh_ends_the_session(upstream, tmp_path):
    with database("sqlite", tmp_path) as db:
        port = free_port()
        _, maker = open_store(db)
        client_id, secret = new_client(
            maker,
            "gateway",
            [f"http://127.0.0.1:{port}/app/_bastion/callback"],
            ["authorization_code", "refresh_token"],
            ["orders:read"],
        )
        cfg = login_config(db, port, upstream.url, tmp_path, client_id, secret)
        cfg["token_service"]["access_ttl"] = 30
        cfg["routes"][-1]["policies"]["login"].update(forward_access_token=True, refresh_before=29)
        with run_gateway(cfg, tmp_path) as gw:
            ta = gw.server.gateway.state.token_app
            ta.service.register("gina", "gina@example.com", PASSWORD)
            b = Browser(gw.port)
            sign_in(b)
            first = forwarded_headers(b.request("GET", "/app/page"))["authorization"][0]
            time.sleep(1.1)  # now within refresh_before of expiry: the gateway refreshes
            second = forwarded_headers(b.request("GET", "/app/page"))["authorization"][0]
            assert first != second
            assert jwt.decode(second[7:], options={"verify_signature": False})["typ"] == "access"
            # the provider ends every login of the user: the next refresh fails, the session ends
            user = ta.service.users()[0]
            ta.service.logout_everywhere(user.id)
            time.sleep(1.1)  # the access token's clock again: the next request must want a refresh
            r = b.request("GET", "/app/page")
            assert r.status == 302 and "/auth/oauth/authorize" in r.header("location")


def two_gateways(db, upstream, tmp_path, store):
    """Configs of two gateways of one deployment sharing `store` for sessions: B knows A's
    issuer and redirect URI."""
    port_a, port_b = free_port(), free_port()
    _, maker = open_store(db)
    client_id, secret = new_client(
        maker,
        "gateway",
        [f"http://127.0.0.1:{port_a}/app/_bastion/callback"],
        ["authorization_code", "refresh_token"],
        ["orders:read"],
    )
    cfg_a = login_config(db, port_a, upstream.url, tmp_path, client_id, secret, store=store)
    cfg_b = login_config(db, port_b, upstream.url, tmp_path, client_id, secret, store=store)
    cfg_b["policies"]["login"]["providers"] = cfg_a["policies"]["login"]["providers"]
    cfg_b["routes"][-1]["policies"]["login"]["redirect_uri"] = f"http://127.0.0.1:{port_a}/app/_bastion/callback"
    cfg_b["policies"]["auth"]["schemes"] = cfg_a["policies"]["auth"]["schemes"]
    cfg_b["token_service"]["issuer"] = cfg_a["token_service"]["issuer"]
    return cfg_a, cfg_b, maker


def test_sessions_are_shared_through_redis(upstream, tmp_path, redis_url):
    """Two gateways (separate policy instances and session stores) share sessions via Redis: a
    login on one is a session on the other, and a logout on either ends it."""
    with database("sqlite", tmp_path) as db:
        cfg_a, cfg_b, maker = two_gateways(db, upstream, tmp_path, redis_url)
        with run_gateway(cfg_a, tmp_path) as a, run_gateway(cfg_b, tmp_path) as b_gw:
            a.server.gateway.state.token_app.service.register("gina", "gina@example.com", PASSWORD)
            browser = Browser(a.port)
            sign_in(browser)
            other = Browser(b_gw.port)
            other.jar = dict(browser.jar)
            r = other.request("GET", "/app/page")
            assert r.status == 200 and forwarded_headers(r)["x-bastion-subject"]
            assert other.request("GET", "/app/_bastion/logout").status == 302
            assert browser.request("GET", "/app/page").status == 302  # gone on A too


def test_plain_oauth2_provider_with_userinfo(upstream, tmp_path):
    """A GitHub-style provider: explicit endpoints, no ID token, the user from its userinfo."""
    holder: dict = {}
    with ThreadedUvicorn(fake_provider_app(holder)) as idp:
        holder["port"] = idp.port
        base = f"http://127.0.0.1:{idp.port}"
        with database("sqlite", tmp_path) as db:
            port = free_port()
            provider = {
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "userinfo_endpoint": f"{base}/userinfo",
                "subject_field": "id",
                "client_id": "rp",
                "client_secret": "s",
                "scopes": ["read:user"],
            }
            cfg = login_config(db, port, upstream.url, tmp_path, "rp", "s", provider=provider)
            cfg["routes"][-1]["policies"]["auth"] = {"require": []}
            with run_gateway(cfg, tmp_path) as gw:
                MODE["value"] = "ok"
                b = Browser(gw.port)
                r = b.request("GET", "/app/page")
                authz = raw_request(idp.port, "GET", path_of(r.header("location")))
                done = b.request("GET", path_of(authz.header("location")))
                assert done.status == 302, done.body
                assert forwarded_headers(b.request("GET", "/app/page"))["x-bastion-subject"] == ["42"]


@pytest.mark.parametrize("right_key", [True, False])
def test_private_key_jwt_client_authentication(upstream, tmp_path, right_key):
    """The gateway proves it is the client with a signed assertion (RFC 7523), not a secret."""
    from cryptography.hazmat.primitives import serialization

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    (tmp_path / "client.pem").write_bytes(
        (key if right_key else other).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with database("sqlite", tmp_path) as db:
        port = free_port()
        _, maker = open_store(db)
        client_id, secret = new_client(
            maker,
            "gateway",
            [f"http://127.0.0.1:{port}/app/_bastion/callback"],
            ["authorization_code", "refresh_token"],
            ["orders:read"],
            jwks={"keys": [{**jwk, "kid": "gw-1", "alg": "RS256", "use": "sig"}]},
        )
        assert secret is None
        base = f"http://127.0.0.1:{port}"
        provider = {
            "issuer": f"{base}/auth",
            "client_id": client_id,
            "client_auth": "private_key_jwt",
            "private_key_file": str(tmp_path / "client.pem"),
            "private_key_kid": "gw-1",
            "scopes": ["openid", "orders:read"],
        }
        cfg = login_config(db, port, upstream.url, tmp_path, client_id, None, provider=provider)
        with run_gateway(cfg, tmp_path) as gw:
            gw.server.gateway.state.token_app.service.register("gina", "gina@example.com", PASSWORD)
            b = Browser(gw.port)
            r, _ = sign_in(b)
            if right_key:
                assert r.status == 302 and "__Host-bastion_session" in b.jar
                assert b.request("GET", "/app/page").status == 200
                assert b.request("GET", "/app/_bastion/logout").status == 302  # revocation also signs
            else:
                assert r.status == 400 and "refused" in r.json()["detail"]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_sessions_in_the_database(upstream, tmp_path, kind, request):
    """Sessions kept in the identity store's database: encrypted, ids hashed, shared by two
    gateways, single-use login state."""
    from sqlalchemy import select

    from bastion.store.models import GatewaySession

    pg = request.getfixturevalue("postgres_ok") if kind == "postgresql" else None
    with database(kind, tmp_path, pg) as db:
        cfg_a, cfg_b, maker = two_gateways(db, upstream, tmp_path, db)
        with run_gateway(cfg_a, tmp_path) as a, run_gateway(cfg_b, tmp_path) as b_gw:
            a.server.gateway.state.token_app.service.register("gina", "gina@example.com", PASSWORD)
            browser = Browser(a.port)
            r, callback = sign_in(browser)
            assert r.status == 302
            assert browser.request("GET", path_of(callback)).status == 400  # state used once
            sid = browser.jar["__Host-bastion_session"]
            with maker() as s:
                rows = s.scalars(select(GatewaySession)).all()
            assert rows and all(sid not in r.key_hash and b"access_token" not in r.blob for r in rows)
            other = Browser(b_gw.port)
            other.jar = dict(browser.jar)
            assert other.request("GET", "/app/page").status == 200
            assert other.request("GET", "/app/_bastion/logout").status == 302
            assert browser.request("GET", "/app/page").status == 302


def test_open_redirects_through_next_or_redirect_are_refused(rp):
    b = Browser(rp.port)
    sign_in(b, start="/app/page")
    for param in ("next", "redirect", "return_to", "redirect_uri"):
        out = b.request("GET", f"/app/_bastion/logout?{param}=https://evil.example/x")
        assert out.status == 302 and "evil.example" not in out.header("location"), param
        sign_in(b, start="/app/page")
    # a login started from a URL carrying next= comes back to that same-origin path, never elsewhere
    fresh = Browser(rp.port)
    r, _ = sign_in(fresh, start="/app/page?next=https://evil.example")
    assert r.status == 302 and r.header("location") == "/app/page?next=https://evil.example"
    forged = fresh.request("GET", "/app/_bastion/callback?code=x&state=y&redirect_uri=https://evil.example")
    assert forged.status == 400 and forged.header("location") is None
