"""`bastion check`'s listing of operations without security, for each way a route's auth can be."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config.lint import lint
from bastion.config.model import GatewayConfig
from bastion.gateway.state import compile_state

SPECS = Path(__file__).resolve().parents[2] / "specs"
SCHEMES = {
    "bearerAuth": {"type": "jwt", "issuers": [{"algorithms": ["HS256"], "keys": [{"secret": "s" * 40}]}]},
}


def findings(route: dict, auth: dict | None):
    cfg = {
        "upstreams": {"app": {"urls": ["http://127.0.0.1:9"]}},
        "routes": [{"openapi": "users-as-written.yaml", "upstream": "app", **route}],
    }
    if auth is not None:
        cfg["policies"] = {"auth": auth}
    model = GatewayConfig.model_validate(cfg)
    compile_state(model, config_dir=str(SPECS))  # the config is one `serve` would take
    return [f for f in lint(model, str(SPECS)) if "declare no `security`" in f.message]


@pytest.mark.parametrize(
    "route,auth,key,says",
    [
        ({}, {"schemes": SCHEMES}, "routes[0].openapi", "so without one they answer 401"),
        ({"default_security": "public"}, {"schemes": SCHEMES}, "routes[0].default_security", "are public"),
        ({"policies": {"auth": {"require": []}}}, {"schemes": SCHEMES}, "routes[0].openapi", "`require: []`"),
        ({"policies": {"auth": {"enabled": False}}}, {"schemes": SCHEMES}, "routes[0].openapi", "anyone can call"),
    ],
)
def test_each_case_says_what_happens(route, auth, key, says):
    (f,) = findings(route, auth)
    assert f.severity == "warning" and f.key == key and says in f.message
    assert "POST /users/v1/login (login)" in f.message and "POST /users/v1/register (register)" in f.message
    assert "/users/v1/me" not in f.message and "/health" not in f.message


def test_nothing_without_a_config_dir_or_an_openapi_route():
    cfg = GatewayConfig.model_validate(
        {
            "upstreams": {"app": {"urls": ["http://127.0.0.1:9"]}},
            "routes": [{"openapi": "users-as-written.yaml", "upstream": "app"}],
            "policies": {"auth": {"schemes": SCHEMES}},
        }
    )
    assert not [f for f in lint(cfg) if "security" in f.message]
    assert not [f for f in lint(cfg.model_copy(update={"routes": []}), str(SPECS)) if "security" in f.message]
