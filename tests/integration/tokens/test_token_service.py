"""The token service end to end: real HTTP through a real gateway, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import time
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from helpers import STARTUP_SECONDS, raw_request

from .conftest import PASSWORD


def post(gw, path, doc=None, headers=None, raw=None):
    body = raw if raw is not None else (json.dumps(doc).encode() if doc is not None else b"")
    h = {"Content-Type": "application/json", **(headers or {})}
    return raw_request(gw.port, "POST", path, h, body)


def register(gw, name="alice", email=None, password=PASSWORD):
    return post(gw, "/auth/register", {"username": name, "email": email or f"{name}@Example.com", "password": password})


def login(gw, name="alice", password=PASSWORD):
    return post(gw, "/auth/login", {"username": name, "password": password})


def api(gw, token):
    return raw_request(gw.port, "GET", "/api/orders", {"Authorization": f"Bearer {token}"})


def test_register_validates_and_never_takes_a_role(service):
    r = register(service)
    assert r.status == 201 and r.json()["email"] == "alice@example.com" and r.json()["role"] == "user"
    bad = post(service, "/auth/register", {"username": "a!", "email": "nope", "password": "short"})
    assert bad.status == 422
    pointers = {e["pointer"] for e in bad.json()["errors"]}
    assert pointers == {"/username", "/email", "/password"}
    weak = register(service, "bob", password="alllowercase-123")
    assert weak.status == 422 and "upper" in json.dumps(weak.json()["errors"])
    role = post(
        service,
        "/auth/register",
        {"username": "mallory", "email": "m@example.com", "password": PASSWORD, "role": "admin"},
    )
    assert role.status == 422 and role.json()["errors"][0]["pointer"] == "/role"
    # a taken username or email: one answer, no hint which
    a = register(service, "alice", "other@example.com")
    b = register(service, "alice2", "ALICE@example.com")
    assert a.status == b.status == 409 and a.json()["detail"] == b.json()["detail"]


def test_login_issues_tokens_that_the_gateway_accepts(service):
    register(service)
    r = login(service)
    assert r.status == 200 and r.header("cache-control") == "no-store"
    doc = r.json()
    assert doc["token_type"] == "Bearer" and doc["expires_in"] == 900
    header = jwt.get_unverified_header(doc["access_token"])
    claims = jwt.decode(doc["access_token"], options={"verify_signature": False})
    assert header["alg"] == "RS256" and header["kid"]
    assert claims["typ"] == "access" and claims["aud"] == "api" and claims["iss"].endswith("/auth")
    assert claims["scope"] == "orders:read" and claims["role"] == "user" and claims["jti"]
    assert claims["exp"] - claims["iat"] == 900
    assert "email" not in claims and "password" not in json.dumps(claims)
    refresh = jwt.decode(doc["refresh_token"], options={"verify_signature": False})
    assert refresh["typ"] == "refresh" and refresh["exp"] - refresh["iat"] == 30 * 86400
    ok = api(service, doc["access_token"])
    assert ok.status == 200
    # the refresh token is not an access token, at the gateway either
    assert api(service, doc["refresh_token"]).status == 401


def test_login_does_not_reveal_whether_a_user_exists(service, monkeypatch):
    """The same answer, and the same work: argon2 runs once per login with the same parameters
    for an unknown user (a dummy hash) as for a wrong password. Counted, not timed (a timing
    ratio is noise on a loaded machine)."""
    register(service)
    passwords = service.server.gateway.state.token_app.service.passwords
    verified: list[str] = []

    class Spy:
        def __init__(self, real: Any) -> None:
            self.real = real

        def verify(self, stored: str, password: str) -> Any:
            verified.append(stored)
            return self.real.verify(stored, password)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    monkeypatch.setattr(passwords, "hasher", Spy(passwords.hasher))
    for _ in range(2):
        a = login(service, "alice", "Wrong-password-1!")
        b = login(service, "nobody", "Wrong-password-1!")
        assert a.status == b.status == 401
        da, db_ = a.json(), b.json()
        da.pop("request_id"), db_.pop("request_id")
        assert da == db_
    assert len(verified) == 4  # one argon2 verification per login, known user or not
    assert len({h.rsplit("$", 2)[0] for h in verified}) == 1, verified  # "$argon2id$v=19$m=..,t=..,p=.."


def test_lockout_after_repeated_failures(service, monkeypatch):
    from bastion.tokens import service as service_module

    register(service)
    # the service's clock, held still and then moved on: the lockout (2 s) is what is tested, not
    # how fast a loaded machine makes six logins (more than 2 s of them would unlock the account)
    clock = [time.time()]
    monkeypatch.setattr(service_module, "time", SimpleNamespace(time=lambda: clock[0]))
    for _ in range(5):
        assert login(service, "alice", "Wrong-password-1!").status == 401
    locked = login(service)  # right password, locked account: the same answer
    assert locked.status == 401 and locked.json()["detail"] == "the username or password is wrong"
    clock[0] += 1.9
    assert login(service).status == 401  # still locked just before the end
    clock[0] += 0.2
    assert login(service).status == 200


def test_refresh_rotation_and_reuse_detection(service):
    register(service)
    first = login(service).json()
    second = post(service, "/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert second.status == 200
    new = second.json()
    assert new["refresh_token"] != first["refresh_token"] and api(service, new["access_token"]).status == 200
    reused = post(service, "/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert reused.status == 401 and reused.json()["type"].endswith("/refresh-token-reused")
    # the whole family is gone: the latest refresh token no longer works either
    assert post(service, "/auth/refresh", {"refresh_token": new["refresh_token"]}).status == 401


def test_logout_revokes_access_and_refresh(service):
    register(service)
    doc = login(service).json()
    assert api(service, doc["access_token"]).status == 200
    out = post(
        service,
        "/auth/logout",
        {"refresh_token": doc["refresh_token"]},
        {"Authorization": f"Bearer {doc['access_token']}"},
    )
    assert out.status == 204
    assert api(service, doc["access_token"]).status == 401
    assert post(service, "/auth/refresh", {"refresh_token": doc["refresh_token"]}).status == 401
    other = login(service).json()  # a new login is unaffected
    assert api(service, other["access_token"]).status == 200


def test_logout_everywhere(service):
    register(service)
    a, b = login(service).json(), login(service).json()
    time.sleep(1.05)  # `iat` has one-second resolution: tokens of this second would count as "before"
    r = post(service, "/auth/logout-all", None, {"Authorization": f"Bearer {a['access_token']}"})
    assert r.status == 204
    for doc in (a, b):
        assert api(service, doc["access_token"]).status == 401
        assert post(service, "/auth/refresh", {"refresh_token": doc["refresh_token"]}).status == 401
    time.sleep(1.05)  # one-second `iat` again: a login of the logout's second would count as "before"
    fresh = login(service).json()
    assert api(service, fresh["access_token"]).status == 200


def test_signing_key_rotation(service):
    register(service)
    before = login(service).json()["access_token"]
    old_kid = jwt.get_unverified_header(before)["kid"]
    new_kid = service.server.gateway.state.token_app.keyring.rotate()
    after = login(service).json()["access_token"]
    assert jwt.get_unverified_header(after)["kid"] == new_kid != old_kid
    assert api(service, after).status == 200  # the gateway fetches the new key
    assert api(service, before).status == 200  # the old key still verifies until its tokens expire
    kids = {k["kid"] for k in json.loads(raw_request(service.port, "GET", "/auth/.well-known/jwks.json").body)["keys"]}
    assert {old_kid, new_kid} <= kids


def test_discovery_and_jwks(service):
    d = raw_request(service.port, "GET", "/auth/.well-known/openid-configuration").json()
    assert d["issuer"].endswith("/auth") and d["code_challenge_methods_supported"] == ["S256"]
    assert "implicit" not in json.dumps(d["grant_types_supported"]) and "password" not in d["grant_types_supported"]
    keys = raw_request(service.port, "GET", "/auth/.well-known/jwks.json").json()["keys"]
    assert all("d" not in k and "p" not in k for k in keys)  # public parts only


def test_signing_keys_are_encrypted_at_rest(service):
    from sqlalchemy import select

    from bastion.store.models import SigningKey

    with service.server.gateway.state.token_app.sessions() as s:
        rows = s.scalars(select(SigningKey)).all()
    assert rows and all(b"PRIVATE KEY" not in r.private_key for r in rows)


def test_api_keys_from_the_database(service, monkeypatch):
    from bastion.auth import apikeys
    from bastion.tokens import service as service_module

    svc = service.server.gateway.state.token_app.service
    key, row = svc.create_key("acme", ["orders:read"], "pro", 3600)
    assert row.key_hash.startswith("sha256:") and row.last4 == key[-4:] and key.startswith("bk_live_")
    h = {"X-API-Key": key}
    assert raw_request(service.port, "GET", "/api/orders", h).status == 200
    # one clock for the service (which sets the overlap's end) and the gateway (which checks it),
    # held still then moved on: the overlap is what is tested, not the machine's speed
    clock = [time.time()]
    fake = SimpleNamespace(time=lambda: clock[0])
    monkeypatch.setattr(service_module, "time", fake)
    monkeypatch.setattr(apikeys, "time", fake)
    new_key, old, new = svc.rotate_key(row.id, overlap=2)
    assert raw_request(service.port, "GET", "/api/orders", h).status == 200  # overlap: both work
    assert raw_request(service.port, "GET", "/api/orders", {"X-API-Key": new_key}).status == 200
    clock[0] += 2.1  # the overlap has run out
    assert raw_request(service.port, "GET", "/api/orders", h).status == 401  # the old one has expired
    svc.revoke_key(new.id)
    assert raw_request(service.port, "GET", "/api/orders", {"X-API-Key": new_key}).status == 401


def test_bad_bodies_are_problems_not_500s(service):
    assert post(service, "/auth/login", raw=b"{nope").status == 400
    assert post(service, "/auth/login", raw=b"[]").status == 422
    r = raw_request(service.port, "POST", "/auth/login", {"Content-Type": "text/plain"}, b"x")
    assert r.status == 415
    assert raw_request(service.port, "GET", "/auth/login").status == 405
    assert raw_request(service.port, "GET", "/auth/nothing-here").status == 404
    assert post(service, "/auth/refresh", {"refresh_token": "not.a.jwt"}).status == 401
    forged = jwt.encode(
        {"iss": "x", "sub": "a", "typ": "refresh", "jti": "j", "iat": 1, "exp": 2**31}, "k" * 32, algorithm="HS256"
    )
    assert post(service, "/auth/refresh", {"refresh_token": forged}).status == 401
    none_alg = (
        base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
        + "."
        + base64.urlsafe_b64encode(b'{"sub":"a","typ":"access"}').rstrip(b"=").decode()
        + "."
    )
    assert post(service, "/auth/logout", None, {"Authorization": f"Bearer {none_alg}"}).status == 401


@pytest.mark.parametrize("kind", ["sqlite"])
def test_login_rate_limit_per_ip(kind, upstream, tmp_path):
    from helpers import run_gateway

    from .conftest import database, free_port, gateway_config

    with database(kind, tmp_path) as db:
        port = free_port()
        cfg = gateway_config(db, port, upstream.url, tmp_path)
        # an exact algorithm: the subject is the per-IP login limit, not the clock window (tests/clock.py)
        cfg["policies"]["rate_limit"] = {
            "login_limits": ["3/minute"],
            "key_prefix": f"t{port}",
            "algorithm": "sliding_log",
        }
        with run_gateway(cfg, tmp_path) as gw:
            codes = [login(gw, "ghost", "Wrong-password-1!").status for _ in range(4)]
            assert codes == [401, 401, 401, 429]


def test_logout_is_seen_by_a_second_gateway_process_through_redis(upstream, tmp_path, redis_url):
    """Gateway A (this process) and gateway B (`bastion serve`, another process) share the
    database and Redis: a logout on A is refused on B."""
    import subprocess
    import sys
    import uuid as _uuid

    import yaml
    from helpers import run_gateway

    from .conftest import database, free_port, gateway_config

    with database("sqlite", tmp_path) as db:
        port_a, port_b = free_port(), free_port()
        cfg_a = gateway_config(db, port_a, upstream.url, tmp_path, revocation=redis_url)
        cfg_b = gateway_config(db, port_b, upstream.url, tmp_path, revocation=redis_url)
        cfg_b["policies"]["audit"]["output"] = str(tmp_path / f"audit-b-{_uuid.uuid4().hex}.log")
        # one public issuer for the whole deployment; each gateway reads the keys from itself
        issuer = cfg_a["token_service"]["issuer"]
        cfg_b["token_service"]["issuer"] = issuer
        cfg_b["policies"]["auth"]["schemes"]["bearer"]["issuers"][0]["issuer"] = issuer
        (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg_b))
        with run_gateway(cfg_a, tmp_path) as a:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bastion.cli",
                    "serve",
                    "--workers",
                    "1",
                    "-c",
                    str(tmp_path / "b.yaml"),
                    "--no-watch",
                    "--log-level",
                    "warning",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.time() + STARTUP_SECONDS
                while time.time() < deadline and proc.poll() is None:
                    try:
                        if raw_request(port_b, "GET", "/auth/.well-known/jwks.json", timeout=5).status == 200:
                            break
                    except OSError:
                        time.sleep(0.2)
                else:
                    proc.kill()
                    pytest.fail(f"gateway B did not start: {proc.stdout.read().decode()[-2000:]}")
                register(a, "dave")
                doc = login(a, "dave").json()
                b_api = raw_request(port_b, "GET", "/api/orders", {"Authorization": f"Bearer {doc['access_token']}"})
                assert b_api.status == 200
                assert post(a, "/auth/logout", None, {"Authorization": f"Bearer {doc['access_token']}"}).status == 204
                b_api = raw_request(port_b, "GET", "/api/orders", {"Authorization": f"Bearer {doc['access_token']}"})
                assert b_api.status == 401
                # and the refresh family is gone for B's token service too (same database)
                r = raw_request(
                    port_b,
                    "POST",
                    "/auth/refresh",
                    {"Content-Type": "application/json"},
                    json.dumps({"refresh_token": doc["refresh_token"]}).encode(),
                )
                assert r.status == 401
            finally:
                proc.terminate()
                proc.wait(10)
