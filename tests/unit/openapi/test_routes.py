"""Routes built from a spec, and the config errors a spec can cause."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config.loader import ConfigError
from bastion.config.model import GatewayConfig
from bastion.gateway.state import compile_state

SPECS = Path(__file__).resolve().parents[2] / "specs"
SECRET = "s" * 40


def state(route: dict, schemes: dict | None = None):
    cfg = {"upstreams": {"app": {"urls": ["http://127.0.0.1:9"]}}, "routes": [{"upstream": "app", **route}]}
    if schemes is not None:
        cfg["policies"] = {"auth": {"schemes": schemes}}
    return compile_state(GatewayConfig.model_validate(cfg), config_dir=str(SPECS))


SCHEMES = {
    "api_key": {"type": "api_key"},
    "bearer": {"type": "jwt", "issuers": [{"issuer": "i", "algorithms": ["HS256"], "keys": [{"secret": SECRET}]}]},
}


def test_one_route_per_operation_plus_the_inventory_guard():
    st = state({"openapi": "petstore.yaml"}, SCHEMES)
    routes = {(r.pattern, tuple(sorted(r.methods or ()))) for r in st.router.routes}
    assert ("/v1/pets", ("GET", "HEAD")) in routes
    assert ("/v1/pets", ("POST",)) in routes
    assert ("/v1/pets/{petId}", ("DELETE",)) in routes
    assert ("/v1/*", ()) in routes
    names = {r.name for r in st.router.routes}
    assert "petstore:listPets" in names and "petstore:GET /health" in names


def test_base_path_and_route_methods_narrow_the_operations():
    st = state({"openapi": "petstore.yaml", "base_path": "/pets-api", "methods": ["GET"]}, SCHEMES)
    patterns = {(r.pattern, tuple(sorted(r.methods or ()))) for r in st.router.routes}
    assert ("/pets-api/pets", ("GET",)) in patterns
    assert not any("POST" in m for _, m in patterns)


def test_scheme_missing_from_the_gateway_config():
    with pytest.raises(ConfigError) as err:
        state({"openapi": "petstore.yaml"}, {"api_key": {"type": "api_key"}})
    text = str(err.value)
    assert "routes[0].openapi" in text and "'bearer'" in text and "policies.auth.schemes" in text


def test_scheme_of_the_wrong_kind():
    with pytest.raises(ConfigError, match="apiKey in the spec but 'jwt'"):
        state({"openapi": "petstore.yaml"}, {"api_key": SCHEMES["bearer"], "bearer": SCHEMES["bearer"]})


def test_spec_that_cannot_be_loaded_names_the_route():
    with pytest.raises(ConfigError, match=r"routes\[0\]\.openapi.*cannot be read"):
        state({"openapi": "missing.yaml"}, SCHEMES)


def test_bad_extension_settings_name_the_operation(tmp_path):
    spec = (SPECS / "petstore.yaml").read_text().replace("limits: [{rate: 10/minute, key: [api_key]}]", "limit: lots")
    (tmp_path / "p.yaml").write_text(spec)
    cfg = GatewayConfig.model_validate(
        {
            "upstreams": {"app": {"urls": ["http://127.0.0.1:9"]}},
            "policies": {"auth": {"schemes": SCHEMES}},
            "routes": [{"upstream": "app", "openapi": "p.yaml"}],
        }
    )
    with pytest.raises(ConfigError, match=r"GET /pets/\{petId\}.policies.rate_limit.limit"):
        compile_state(cfg, config_dir=str(tmp_path))


def test_route_needs_path_or_spec():
    with pytest.raises(Exception, match="needs a path"):
        GatewayConfig.model_validate({"routes": [{"upstream": "a"}]})
    with pytest.raises(Exception, match="apply to routes with openapi"):
        GatewayConfig.model_validate({"routes": [{"path": "/x", "upstream": "a", "passthrough_undocumented": True}]})
