"""Authentication and authorization through a real gateway."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
import yaml
from helpers import STARTUP_SECONDS, ThreadedUvicorn, forwarded_headers, raw_request, run_gateway

from bastion.auth.apikeys import hash_key
from tests.unit.auth.keys import AUD, EC, ISS, RSA, RSA_OTHER, pem_public, sign

from . import idp

API_KEY = "bk_test_" + "A" * 43
REVOKED_KEY = "bk_test_" + "R" * 43
EXPIRED_KEY = "bk_test_" + "E" * 43


@pytest.fixture(scope="module")
def provider():
    with ThreadedUvicorn(idp.app) as server:
        yield server


def auth_config(base_config, tmp_path, provider, routes, *, revocation="memory"):
    (tmp_path / "rsa.pem").write_text(pem_public(RSA))
    base_config["policies"]["auth"] = {
        "revocation_store": revocation,
        "schemes": {
            "key": {
                "type": "api_key",
                "query_param": "api_key",
                "keys": [
                    {"id": "k1", "hash": hash_key(API_KEY), "owner": "acme", "scopes": ["orders:read"], "tier": "pro"},
                    {"id": "k2", "hash": hash_key(REVOKED_KEY), "owner": "acme", "status": "revoked"},
                    {"id": "k3", "hash": hash_key(EXPIRED_KEY), "owner": "acme", "expires": "2020-01-01T00:00:00Z"},
                ],
            },
            "bearer": {
                "type": "jwt",
                "issuers": [
                    {
                        "issuer": ISS,
                        "audiences": [AUD],
                        "algorithms": ["RS256", "ES256"],
                        "keys": [{"kid": "rsa1", "pem_file": "rsa.pem"}],
                        "jwks_url": f"{provider.url}/jwks.json",
                        "jwks_min_refresh_seconds": 60,
                    }
                ],
            },
            "opaque": {
                "type": "introspection",
                "url": f"{provider.url}/introspect",
                "client_id": idp.CLIENT[0],
                "client_secret": idp.CLIENT[1],
            },
        },
    }
    base_config["routes"] = routes
    return base_config


ROUTES = [
    {"path": "/public/*", "upstream": "up", "policies": {"auth": {"require": []}}},
    {"path": "/orders/*", "upstream": "up", "policies": {"auth": {"scopes": ["orders:read"]}}},
    {"path": "/both/*", "upstream": "up", "policies": {"auth": {"require": [{"bearer": [], "key": []}]}}},
    {
        "path": "/either/*",
        "upstream": "up",
        "policies": {"auth": {"require": [{"bearer": ["orders:write"]}, {"key": ["orders:read"]}]}},
    },
    {
        "path": "/query/*",
        "upstream": "up",
        "policies": {"auth": {"allow_query_key": True, "forward_credentials": False}},
    },
    {"path": "/admin/*", "upstream": "up", "policies": {"authorization": {"claims": {"role": ["admin"]}}}},
    {
        "path": "/users/{user_id}/orders",
        "upstream": "up",
        "policies": {
            "authorization": {
                "objects": [{"param": "user_id", "claim": "sub", "bypass_scopes": ["admin"], "status": 404}]
            }
        },
    },
    {"path": "/*", "upstream": "up"},
]


@pytest.fixture()
def gw(base_config, tmp_path, provider):
    with run_gateway(auth_config(base_config, tmp_path, provider, ROUTES), tmp_path) as g:
        yield g


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_no_credentials_is_401_with_a_challenge(gw):
    r = raw_request(gw.port, "GET", "/orders/1")
    assert r.status == 401 and r.header("www-authenticate").startswith("Bearer realm=")
    assert r.json()["type"].endswith("/unauthenticated")
    assert raw_request(gw.port, "GET", "/public/x").status == 200


def test_api_key_in_header_and_as_bearer(gw):
    for h in ({"X-API-Key": API_KEY}, bearer(API_KEY)):
        r = raw_request(gw.port, "GET", "/orders/1", h)
        assert r.status == 200
        seen = forwarded_headers(r)
        assert seen["x-bastion-subject"] == ["acme"] and seen["x-bastion-key-id"] == ["k1"]
        assert seen["x-bastion-tier"] == ["pro"] and seen["x-bastion-scopes"] == ["orders:read"]


@pytest.mark.parametrize(
    "key,why", [(REVOKED_KEY, "revoked"), (EXPIRED_KEY, "expired"), ("bk_test_unknown", "unknown")]
)
def test_bad_api_keys_are_refused(gw, key, why):
    r = raw_request(gw.port, "GET", "/orders/1", {"X-API-Key": key})
    assert r.status == 401 and why in r.json()["detail"]
    assert key not in r.body.decode()


def test_api_key_in_query_only_where_allowed_and_redacted(gw, tmp_path):
    assert raw_request(gw.port, "GET", f"/orders/1?api_key={API_KEY}").status == 401
    r = raw_request(gw.port, "GET", f"/query/x?api_key={API_KEY}&page=2", {"X-Request-Id": "q-key"})
    assert r.status == 200
    assert r.json()["query"] == "page=2"  # forward_credentials: false strips it
    from helpers import audit_lines

    audit_lines(tmp_path / "audit.log", "q-key")
    assert API_KEY not in (tmp_path / "audit.log").read_text()


def test_jwt_with_scopes(gw):
    assert raw_request(gw.port, "GET", "/orders/1", bearer(sign(RSA))).status == 200
    r = raw_request(gw.port, "GET", "/orders/1", bearer(sign(RSA, scope="profile")))
    assert r.status == 403 and 'error="insufficient_scope"' in r.header("www-authenticate")
    assert r.json()["detail"] == "missing scopes: orders:read"


def test_jwt_from_jwks_and_invalid_tokens(gw):
    ec_token = sign(EC, "ES256", {"kid": "ec1"})
    assert raw_request(gw.port, "GET", "/orders/1", bearer(ec_token)).status == 200
    r = raw_request(gw.port, "GET", "/orders/1", bearer(sign(RSA_OTHER)))
    assert r.status == 401 and 'error="invalid_token"' in r.header("www-authenticate")
    r = raw_request(gw.port, "GET", "/public/x", bearer(sign(RSA_OTHER)))
    assert r.status == 200  # public operations ignore credentials, as in OpenAPI


def test_unknown_kid_refreshes_the_jwks_at_most_once_per_interval(gw):
    before = idp.CALLS["jwks"]
    for i in range(20):
        token = sign(RSA_OTHER, headers={"kid": f"attacker-{i}"})
        assert raw_request(gw.port, "GET", "/orders/1", bearer(token)).status == 401
    assert idp.CALLS["jwks"] - before <= 1


def test_and_or_requirements(gw):
    jwt_token = sign(RSA)
    both = {"Authorization": f"Bearer {jwt_token}", "X-API-Key": API_KEY}
    assert raw_request(gw.port, "GET", "/both/x", bearer(jwt_token)).status == 401
    assert raw_request(gw.port, "GET", "/both/x", {"X-API-Key": API_KEY}).status == 401
    assert raw_request(gw.port, "GET", "/both/x", both).status == 200
    # either a token with orders:write, or a key with orders:read
    assert raw_request(gw.port, "GET", "/either/x", {"X-API-Key": API_KEY}).status == 200
    assert raw_request(gw.port, "GET", "/either/x", bearer(jwt_token)).status == 403
    assert raw_request(gw.port, "GET", "/either/x", bearer(sign(RSA, scope="orders:write"))).status == 200


def test_introspection_for_opaque_tokens_is_cached(gw):
    before = idp.CALLS["introspect"]
    for _ in range(5):
        r = raw_request(gw.port, "GET", "/orders/1", bearer("opaque-good"))
        assert r.status == 200 and forwarded_headers(r)["x-bastion-subject"] == ["svc-7"]
    assert idp.CALLS["introspect"] - before == 1
    r = raw_request(gw.port, "GET", "/orders/1", bearer("opaque-bad"))
    assert r.status == 401 and "not active" in r.json()["detail"]


def test_spoofed_principal_headers_are_removed(gw):
    spoof = {
        "X-Bastion-Subject": "admin",
        "X-Bastion-Scopes": "everything",
        "X-Bastion-Tier": "enterprise",
        "X-Bastion-Key-Id": "k0",
        "X-Bastion-Anything": "1",
    }
    seen = forwarded_headers(raw_request(gw.port, "GET", "/public/x", spoof))
    assert not [k for k in seen if k.startswith("x-bastion-")]
    seen = forwarded_headers(raw_request(gw.port, "GET", "/orders/1", {**spoof, "X-API-Key": API_KEY}))
    assert seen["x-bastion-subject"] == ["acme"] and seen["x-bastion-tier"] == ["pro"]


def test_claims_rule_for_admin_area(gw):
    assert raw_request(gw.port, "GET", "/admin/x", bearer(sign(RSA))).status == 403
    assert raw_request(gw.port, "GET", "/admin/x", bearer(sign(RSA, role="admin"))).status == 200
    assert raw_request(gw.port, "GET", "/admin/x").status == 401


def test_object_level_rule(gw):
    assert raw_request(gw.port, "GET", "/users/alice/orders", bearer(sign(RSA))).status == 200
    r = raw_request(gw.port, "GET", "/users/bob/orders", bearer(sign(RSA)))
    assert r.status == 404  # configured to hide the object's existence
    assert raw_request(gw.port, "GET", "/users/bob/orders", bearer(sign(RSA, scope="admin"))).status == 200
    # a path trick does not change whose object it is
    assert raw_request(gw.port, "GET", "/users/x/../bob/orders", bearer(sign(RSA))).status == 404
    assert raw_request(gw.port, "GET", "/users/%62ob/orders", bearer(sign(RSA))).status == 404


# ---- revocation shared through Redis by two gateway processes ------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_revoked_token_is_refused_by_every_gateway(upstream, provider, redis_url, tmp_path):
    from bastion.auth.revocation import RedisRevocations

    procs, ports = [], []
    for _ in range(2):
        port = _free_port()
        cfg = auth_config(
            {"upstreams": {"up": {"urls": [upstream.url]}}, "policies": {"audit": {"enabled": False}}},
            tmp_path,
            provider,
            [{"path": "/*", "upstream": "up"}],
            revocation=redis_url,
        )
        cfg["listeners"] = [{"host": "127.0.0.1", "port": port}]
        path = tmp_path / f"gw{port}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bastion.cli", "serve", "--no-watch", "--workers", "1", "-c", str(path)],
                stderr=subprocess.DEVNULL,
            )
        )
        ports.append(port)
    try:
        for port, proc in zip(ports, procs, strict=True):
            deadline = time.time() + STARTUP_SECONDS
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.time() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.05)
        jti = f"jti-{uuid.uuid4().hex}"
        user = f"user-{uuid.uuid4().hex}"
        token = sign(RSA, jti=jti)
        other = sign(RSA, sub=user, iat=int(time.time()) - 10)
        assert [raw_request(p, "GET", "/x", bearer(token)).status for p in ports] == [200, 200]
        assert [raw_request(p, "GET", "/x", bearer(other)).status for p in ports] == [200, 200]

        async def revoke():
            store = RedisRevocations(redis_url)
            await store.revoke_jti(jti, time.time() + 300)
            await store.revoke_subject(user)  # "log out everywhere"
            await store.close()

        asyncio.run(revoke())
        for p in ports:  # cached verification, but revocation is checked every time
            r = raw_request(p, "GET", "/x", bearer(token))
            assert r.status == 401 and r.json()["detail"] == "token revoked"
            assert raw_request(p, "GET", "/x", bearer(other)).status == 401
        fresh = sign(RSA, sub=user, iat=int(time.time()) + 1)
        assert raw_request(ports[0], "GET", "/x", bearer(fresh)).status == 200  # issued after
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(20)


def test_revocation_store_down_fails_closed_or_open(base_config, tmp_path, provider):
    dead = "redis://127.0.0.1:1/0"
    cfg = auth_config(
        base_config,
        tmp_path,
        provider,
        [
            {"path": "/closed/*", "upstream": "up", "policies": {"auth": {"scopes": []}}},
            {"path": "/open/*", "upstream": "up", "policies": {"auth": {"revocation_fail": "open"}}},
        ],
        revocation=dead,
    )
    with run_gateway(cfg, tmp_path) as g:
        r = raw_request(g.port, "GET", "/closed/x", bearer(sign(RSA)))
        assert r.status == 503 and r.json()["type"].endswith("/revocation-unavailable")
        assert raw_request(g.port, "GET", "/open/x", bearer(sign(RSA))).status == 200
