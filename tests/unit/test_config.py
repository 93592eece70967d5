"""Config errors name the key and the line; insecure settings are found by `lint`."""

import pytest

from bastion.config import ConfigError, load_config_text
from bastion.config.lint import lint


def errors(text):
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, "b.yaml")
    return [(i.line, ".".join(map(str, i.loc)), i.message) for i in exc.value.issues]


def test_unknown_key_names_key_and_line():
    errs = errors("upstreams:\n  api:\n    urls: [http://a:1]\n    timeout: 3\n")
    assert errs[0][0] == 4 and errs[0][1] == "upstreams.api.timeout"


def test_policy_error_inside_a_route():
    text = """\
upstreams: {api: {urls: ["http://127.0.0.1:9"]}}
routes:
  - path: /a
    upstream: api
  - path: /b
    upstream: api
    policies:
      ip_rules:
        allow: ["10.0.0.0/8", "not-a-network"]
"""
    ((line, key, msg),) = errors(text)
    assert key == "routes.1.policies.ip_rules.allow" and line == 9
    assert "not-a-network" in msg


def test_unknown_upstream_is_reported_on_its_line():
    ((line, key, msg),) = errors(
        "upstreams: {api: {urls: ['http://h:1']}}\nroutes:\n  - path: /a\n    upstream: nope\n"
    )
    assert key == "routes.0.upstream" and line == 4 and "nope" in msg


def test_bad_route_pattern():
    ((line, key, msg),) = errors(
        "upstreams: {api: {urls: ['http://h:1']}}\nroutes:\n  - {path: '/a/*/b', upstream: api}\n"
    )
    assert key == "routes.0.path" and "last segment" in msg


def test_yaml_syntax_error_has_a_line():
    ((line, _, msg),) = errors("routes:\n  - path: /a\n   upstream: x\n")
    assert line == 3 and "YAML" in msg


def test_missing_env_var(monkeypatch):
    monkeypatch.delenv("BASTION_TEST_UNSET", raising=False)
    ((line, _, msg),) = errors("upstreams: {api: {urls: ['${BASTION_TEST_UNSET}']}}\n")
    assert "BASTION_TEST_UNSET" in msg


def test_env_var_with_default(monkeypatch):
    monkeypatch.setenv("UP_PORT", "9001")
    cfg = load_config_text("upstreams: {api: {urls: ['http://127.0.0.1:${UP_PORT}', 'http://h:${NOPE:-7}']}}\n")
    assert cfg.upstreams["api"].urls == ["http://127.0.0.1:9001", "http://h:7"]


def test_lint_refuses_plaintext_public_listener_and_trust_all():
    cfg = load_config_text("listeners: [{host: 0.0.0.0, port: 80}]\ntrusted_proxies: ['0.0.0.0/0']\n")
    found = {(f.severity, f.key) for f in lint(cfg)}
    assert ("error", "listeners[0]") in found
    assert ("error", "trusted_proxies") in found


def test_lint_allows_plaintext_when_explicit_and_loopback():
    cfg = load_config_text("listeners: [{host: 0.0.0.0, port: 80, allow_plaintext: true}, {host: 127.0.0.1}]\n")
    assert not [f for f in lint(cfg) if f.severity == "error"]


def test_lint_warns_on_loose_cors():
    cfg = load_config_text("policies: {cors: {allow_origins: ['*', 'null']}}\n")
    msgs = " ".join(f.message for f in lint(cfg))
    assert "any web site" in msgs and "null" in msgs


def test_duplicate_keys_are_errors():
    ((line, key, msg),) = errors(
        "policies:\n  cors: {allow_origins: ['https://a.example.com']}\n  cors: {enabled: false}\n"
    )
    assert line == 3 and key == "policies.cors" and "duplicate" in msg


def test_lint_refuses_a_token_service_whose_logouts_the_gateway_cannot_see():
    text = """
token_service: {issuer: "https://x/auth", audience: [api], key_encryption_key: k, revocation_store: "redis://r:6379/0"}
policies:
  auth: {revocation_store: memory, schemes: {k: {type: api_key}}}
"""
    findings = {(f.severity, f.key) for f in lint(load_config_text(text))}
    assert ("error", "token_service.revocation_store") in findings
    same = text.replace("revocation_store: memory", 'revocation_store: "redis://r:6379/0"')
    assert not any(f.severity == "error" for f in lint(load_config_text(same)))
