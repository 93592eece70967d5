"""Header hygiene at the edge, through a real gateway: rewrite/override headers never reach the
upstream, a method override (when honoured) is what gets routed and checked, and no header with
a control character is ever written upstream."""

from __future__ import annotations

import pytest
from helpers import forwarded_headers, raw_request, run_gateway

from tests.integration.auth.test_hostile_claims import send_raw, status_of

OVERRIDES = [
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Override-URL",
    "X-Original-URI",
    "X-Forwarded-Uri",
    "X-Forwarded-Path",
    "X-Forwarded-Prefix",
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
    "X-Original-Method",
    "X-Forwarded-Method",
]


def routes():
    return [
        {"path": "/*", "upstream": "up"},
        {"path": "/admin/*", "upstream": "up", "policies": {"ip_rules": {"allow": ["10.0.0.0/8"]}}},
        {"path": "/items/{id}", "upstream": "up", "methods": ["GET", "POST"]},
    ]


@pytest.fixture()
def gw(base_config, tmp_path):
    base_config["routes"] = routes()
    with run_gateway(base_config, tmp_path) as g:
        yield g


def test_rewrite_and_override_headers_are_dropped(gw):
    r = raw_request(gw.port, "GET", "/public", [(h, "/admin/secret") for h in OVERRIDES])
    assert r.status == 200
    seen = forwarded_headers(r)
    assert not [h for h in OVERRIDES if h.lower() in seen]


def test_an_allowlisted_override_header_is_forwarded(base_config, tmp_path):
    base_config["routes"] = routes()
    base_config["edge"] = {"forward_override_headers": ["X-Forwarded-Prefix"]}
    with run_gateway(base_config, tmp_path) as g:
        r = raw_request(g.port, "GET", "/public", {"X-Forwarded-Prefix": "/api", "X-Original-URL": "/admin"})
        seen = forwarded_headers(r)
        assert seen["x-forwarded-prefix"] == ["/api"] and "x-original-url" not in seen


def test_unknown_override_headers_in_the_allowlist_are_a_config_error(base_config, tmp_path):
    base_config["routes"] = routes()
    base_config["edge"] = {"forward_override_headers": ["X-Anything"]}
    from bastion.config.loader import ConfigError

    with pytest.raises(ConfigError, match="edge.forward_override_headers: 'x-anything' is not one of"):
        with run_gateway(base_config, tmp_path):
            pass


def test_method_override_is_ignored_by_default(gw):
    r = raw_request(gw.port, "POST", "/items/1", {"X-HTTP-Method-Override": "DELETE"}, body=b"")
    assert r.status == 200 and r.json()["method"] == "POST"
    assert "x-http-method-override" not in forwarded_headers(r)


def test_an_honoured_method_override_is_routed_and_checked(base_config, tmp_path):
    base_config["routes"] = routes()
    base_config["edge"] = {"method_override": True}
    with run_gateway(base_config, tmp_path) as g:
        # DELETE is not allowed on /items/{id}: the override is routed, so it is refused as DELETE
        r = raw_request(g.port, "POST", "/items/1", {"X-HTTP-Method-Override": "DELETE"}, body=b"")
        assert r.status == 405
        r = raw_request(g.port, "POST", "/items/1", {"X-HTTP-Method": "get"}, body=b"")
        assert r.status == 200 and r.json()["method"] == "GET"
        assert "x-http-method" not in forwarded_headers(r)
        r = raw_request(
            g.port, "POST", "/items/1", {"X-HTTP-Method-Override": "PUT", "X-Method-Override": "GET"}, body=b""
        )
        assert r.status == 400 and r.json()["type"].endswith("/bad-method-override")


@pytest.mark.parametrize(
    "line",
    [
        b"X-A: a\x01b",
        b"X-A: a\x00b",
        b"X-A: a\x7fb",
        b"X-A: a\x1bb",
        b"X-A: a\rb",
        b"X\x01A: b",
        b"X A: b",
        b"X-A: a\r\n b",  # obs-fold
    ],
)
def test_control_characters_from_the_client_never_reach_the_upstream(gw, line):
    out = send_raw(gw.port, b"GET /public HTTP/1.1\r\nHost: t\r\n" + line + b"\r\nConnection: close\r\n\r\n")
    assert out, "no answer"
    status = status_of(out)
    assert status == 400, out[:300]


def test_underscore_spellings_of_gateway_headers_are_dropped(gw):
    """WSGI/CGI servers read `X_Bastion_Subject` as `X-Bastion-Subject` (HTTP_X_BASTION_SUBJECT)."""
    sent = [
        ("X_Bastion_Subject", "admin"),
        ("x_bastion_scopes", "admin"),
        ("X_Original_URL", "/admin"),
        ("X_Forwarded_For", "10.0.0.1"),
        ("X_HTTP_Method_Override", "DELETE"),
        ("X_Custom_Thing", "kept"),
    ]
    r = raw_request(gw.port, "GET", "/public", sent)
    seen = forwarded_headers(r)
    assert [k for k in seen if "_" in k] == ["x_custom_thing"]


def test_trace_is_refused_unless_a_route_names_it(base_config, tmp_path):
    base_config["routes"] = [
        {"path": "/*", "upstream": "up"},
        {"path": "/debug", "upstream": "up", "methods": ["TRACE"]},
    ]
    with run_gateway(base_config, tmp_path) as g:
        assert raw_request(g.port, "TRACE", "/x").status == 405
        assert raw_request(g.port, "TRACE", "/debug").status == 200


def test_a_method_override_parameter_is_refused_unless_honoured(gw, base_config, tmp_path):
    r = raw_request(gw.port, "POST", "/items/1?_method=DELETE", body=b"")
    assert r.status == 400 and r.json()["type"].endswith("/bad-method-override")
    r = raw_request(
        gw.port, "POST", "/items/1", {"Content-Type": "application/x-www-form-urlencoded"}, body=b"a=1&_method=DELETE"
    )
    assert r.status == 400
    r = raw_request(
        gw.port,
        "POST",
        "/items/1",
        {"Content-Type": "multipart/form-data; boundary=b"},
        body=b'--b\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--b--\r\n',
    )
    assert r.status == 400
    assert (
        raw_request(
            gw.port,
            "POST",
            "/items/1",
            {"Content-Type": "application/x-www-form-urlencoded"},
            body=b"name=_method_note",
        ).status
        == 200
    )
    base_config["routes"] = routes()
    base_config["edge"] = {"method_override": True}
    with run_gateway(base_config, tmp_path) as g:
        assert raw_request(g.port, "POST", "/items/1?_method=DELETE", body=b"").status == 405  # routed as DELETE
        r = raw_request(g.port, "POST", "/items/1?_method=GET", body=b"")
        assert r.status == 200 and r.json()["method"] == "GET"
