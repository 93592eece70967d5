"""API keys, users, clients and signing keys over the admin API (admin listener + token only)."""

from __future__ import annotations

import json

from helpers import raw_request, run_gateway

from .conftest import PASSWORD, database, free_port, gateway_config

TOKEN = "admin-token-" + "y" * 24


def test_admin_api_for_the_token_service(upstream, tmp_path):
    with database("sqlite", tmp_path) as db:
        port = free_port()
        cfg = gateway_config(db, port, upstream.url, tmp_path)
        cfg["admin"] = {"host": "127.0.0.1", "port": 0, "token": TOKEN}
        with run_gateway(cfg, tmp_path) as gw:
            admin = gw.server.admin_port
            h = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

            def call(method, path, doc=None, headers=h):
                return raw_request(admin, method, path, headers, json.dumps(doc).encode() if doc is not None else None)

            assert call("GET", "/admin/keys", headers={}).status == 401
            assert raw_request(gw.port, "GET", "/admin/keys", h).status in (401, 404)  # never on the public listener
            made = call(
                "POST", "/admin/keys", {"owner": "acme", "scopes": ["orders:read"], "tier": "pro", "expires_in": 3600}
            )
            assert made.status == 201
            key = made.json()["key"]
            assert raw_request(gw.port, "GET", "/api/x", {"X-API-Key": key}).status == 200
            listed = call("GET", "/admin/keys?owner=acme").json()["keys"]
            assert [k["id"] for k in listed] == [made.json()["id"]]
            assert "key" not in listed[0] and listed[0]["display"].endswith(key[-4:])
            rotated = call("POST", f"/admin/keys/{made.json()['id']}/rotate", {"overlap_seconds": 60}).json()
            assert rotated["new"]["key"] != key and rotated["old"]["replaced_by"] == rotated["new"]["id"]
            assert call("POST", f"/admin/keys/{rotated['new']['id']}/revoke", {}).status == 200
            assert raw_request(gw.port, "GET", "/api/x", {"X-API-Key": rotated["new"]["key"]}).status == 401
            assert call("POST", "/admin/keys/key_nope/revoke", {}).status == 404
            assert call("POST", "/admin/keys", {"scopes": "nope"}).status == 400

            gw.server.gateway.state.token_app.service.register("frank", "frank@example.com", PASSWORD)
            users = call("GET", "/admin/users").json()["users"]
            assert [u["username"] for u in users] == ["frank"] and "password_hash" not in users[0]
            login = raw_request(
                gw.port,
                "POST",
                "/auth/login",
                {"Content-Type": "application/json"},
                json.dumps({"username": "frank", "password": PASSWORD}).encode(),
            ).json()
            import time

            time.sleep(1.05)  # `iat` has one-second resolution: tokens of this second would count as "before"
            assert call("POST", f"/admin/users/{users[0]['id']}/logout-all", {}).status == 200
            assert (
                raw_request(gw.port, "GET", "/api/x", {"Authorization": f"Bearer {login['access_token']}"}).status
                == 401
            )

            client = call(
                "POST", "/admin/clients", {"name": "svc", "grant_types": ["client_credentials"], "scopes": ["a"]}
            )
            assert client.status == 201 and client.json()["client_secret"].startswith("cs_")
            assert call("POST", "/admin/clients", {"name": "bad", "grant_types": ["implicit"]}).status == 400
            kid = call("POST", "/admin/signing-keys/rotate", {}).json()["kid"]
            jwks = raw_request(gw.port, "GET", "/auth/.well-known/jwks.json").json()
            assert kid in {k["kid"] for k in jwks["keys"]}
            assert call("GET", "/admin/config").status == 200
            ready = raw_request(admin, "GET", "/readyz").json()
            assert ready["ready"] and ready["checks"]["database"].startswith("ok")
            metrics = raw_request(admin, "GET", "/metrics").body.decode()
            assert 'bastion_store_up{store="database"} 1.0' in metrics
            assert "bastion_store_latency_seconds" in metrics
