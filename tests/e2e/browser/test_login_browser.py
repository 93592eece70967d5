"""Login at the gateway in a real browser: a protected page → bastion's own provider (login +
consent page) → back with a session → the upstream sees the user; logout ends it. The cookies
are the real ones (`__Host-`, Secure — Chromium accepts Secure cookies on http://localhost)."""

from __future__ import annotations

import json

from helpers import run_gateway

from bastion.store.db import open_store
from bastion.tokens.oauth import new_client
from tests.integration.tokens.conftest import PASSWORD, database, free_port, gateway_config
from tests.integration.tokens.test_login_rp import SESSION_KEY

from .conftest import real_errors, screenshot


def test_browser_login_round_trip(page, upstream, tmp_path):
    with database("sqlite", tmp_path) as db:
        port = free_port()
        base = f"http://localhost:{port}"
        _, maker = open_store(db)
        client_id, secret = new_client(
            maker,
            "Orders web",
            [f"{base}/app/_bastion/callback"],
            ["authorization_code", "refresh_token"],
            ["orders:read"],
        )
        cfg = gateway_config(db, port, upstream.url, tmp_path)
        cfg["token_service"]["issuer"] = f"{base}/auth"
        cfg["policies"]["auth"]["schemes"]["bearer"]["issuers"][0]["issuer"] = f"{base}/auth"
        cfg["policies"]["login"] = {
            "providers": {
                "bastion": {
                    "issuer": f"{base}/auth",
                    "client_id": client_id,
                    "client_secret": secret,
                    "scopes": ["openid", "email", "orders:read"],
                }
            },
            "session_secret": SESSION_KEY,
        }
        cfg["routes"].append(
            {
                "path": "/app/*",
                "upstream": "api",
                "policies": {
                    "login": {"provider": "bastion", "redirect_uri": f"{base}/app/_bastion/callback"},
                    "auth": {"require": [{"bearer": []}]},
                },
            }
        )
        cfg["routes"].append(
            {
                "path": "/",
                "methods": ["GET"],
                "upstream": "api",  # where logout lands
                "policies": {"auth": {"require": []}},
            }
        )
        with run_gateway(cfg, tmp_path) as gw:
            gw.server.gateway.state.token_app.service.register("hana", "hana@example.com", PASSWORD)
            page.goto(f"{base}/app/orders?view=all")
            # the provider's page
            assert "/auth/oauth/authorize" in page.url
            assert page.locator("h1").inner_text().startswith("Sign in to continue to Orders web")
            screenshot(page, "login-provider-page")
            page.fill("#username", "hana")
            page.fill("#password", PASSWORD)
            page.click("button[value=allow]")
            page.wait_for_url(f"{base}/app/orders?view=all")
            seen = json.loads(page.locator("body").inner_text())
            headers = dict((k, v) for k, v in seen["headers"])
            user = gw.server.gateway.state.token_app.service.users()[0]
            assert headers["x-bastion-subject"] == user.id
            cookies = {c["name"]: c for c in page.context.cookies()}
            session = cookies["__Host-bastion_session"]
            assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Lax"
            assert "__Host-bastion_login" not in cookies  # the login binding is cleared
            screenshot(page, "login-upstream-page")
            page.goto(f"{base}/app/_bastion/logout")
            assert "__Host-bastion_session" not in {c["name"] for c in page.context.cookies()}
            page.goto(f"{base}/app/orders")
            assert "/auth/oauth/authorize" in page.url  # logged out: back to the provider
            assert not real_errors(page), (page.console_errors, page.failed_loads)
