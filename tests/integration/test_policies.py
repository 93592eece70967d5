"""Each policy allowed and blocked, through a real gateway."""

import json
import socket
import time

import pytest
from helpers import audit_lines, raw_request, run_gateway

# ---- path tricks: the admin area is IP-restricted, everything else is public -----------------

PATH_TRICKS = [
    "/admin",
    "/admin/",
    "/admin/x",
    "/%61dmin/x",
    "/%61%64%6d%69%6e/x",
    "//admin/x",
    "///admin",
    "/admin/.",
    "/admin/./x",
    "/x/../admin/x",
    "/x/%2e%2e/admin",
    "/x/%2E%2E/admin/x",
    "/public/../admin",
    "/admin;x",
    "/admin;x=1/x",
    "/./admin",
    "/admin/x/..",
    "/public/..;/admin",
    "/admin%2fx",
    "/public%2f..%2fadmin",
    "/admin%5cx",
    "/public/%2e%2e%2fadmin",
    "/admin%00",
    "/admin%ff",
    # classes that a lenient upstream reads as /admin (issue 15): case, encoded ';', double encoding,
    # trailing dot/space/tab, `..;`, Unicode that folds to ASCII, encoded '?'
    "/Admin",
    "/ADMIN/x",
    "/%41dmin",
    "/aDmIn/",
    "/admin%3bx",
    "/admin%3Bx/y",
    "/public/%252e%252e/admin",
    "/public/%25%32%65%25%32%65/admin",
    "/admin.",
    "/admin./x",
    "/admin%2e",
    "/admin%20",
    "/admin%09",
    "/admin..;/",
    "/admin..;/x",
    "/%EF%BD%81dmin",
    "/admin%3F",
    "/admin%23x",
    # what other servers read as /admin beyond normalisation (red-team review): ASP.NET cookieless
    # segments, PHP front controllers' PATH_INFO, format suffixes, 8.3 names, accent folding
    "/(S(abc))/admin",
    "/(A(x))/(F(y))/admin/x",
    "/index.php/admin",
    "/app.php/admin/users",
    "/admin.json",
    "/ADMIN.html",
    "/admin.do",
    "/admin.action",
    "/ADMINI~1",
    "/%C3%A0dmin",
    "/adm%C4%B0n",
]


@pytest.fixture()
def admin_gw(base_config, tmp_path):
    base_config["routes"] = [
        {"path": "/*", "upstream": "up"},
        {"path": "/admin/*", "upstream": "up", "policies": {"ip_rules": {"allow": ["10.0.0.0/8"]}}},
    ]
    with run_gateway(base_config, tmp_path) as g:
        yield g


@pytest.mark.parametrize("target", PATH_TRICKS)
def test_path_tricks_never_reach_the_admin_area(admin_gw, target):
    r = raw_request(admin_gw.port, "GET", target)
    assert r.status in (400, 403), (target, r.status, r.body[:200])
    if r.status == 400:
        assert r.json()["type"].endswith("/bad-path")


@pytest.mark.parametrize(
    "target",
    [
        "/administrator",
        "/public/admin",
        "/admins",
        "/static/app.js",
        "/index.php",
        "/users/Jos%C3%A9",
        "/~alice/page",
        "/(note)/x",
    ],
)
def test_lookalikes_go_to_the_public_route_as_themselves(admin_gw, target):
    r = raw_request(admin_gw.port, "GET", target)
    assert r.status == 200
    assert r.json()["raw_path"] == target


@pytest.mark.parametrize("target", ["/ADMIN/x", "/Admin"])
def test_case_sensitive_routes_are_a_choice(base_config, tmp_path, target):
    """`edge.case_sensitive_paths: true` (for APIs that truly distinguish case): `/Admin` is then
    another path, forwarded exactly as routed."""
    base_config["edge"] = {"case_sensitive_paths": True}
    base_config["routes"] = [
        {"path": "/*", "upstream": "up"},
        {"path": "/admin/*", "upstream": "up", "policies": {"ip_rules": {"allow": ["10.0.0.0/8"]}}},
    ]
    with run_gateway(base_config, tmp_path) as g:
        r = raw_request(g.port, "GET", target)
        assert r.status == 200
        assert r.json()["raw_path"] == target
        assert raw_request(g.port, "GET", "/admin/x").status == 403


def test_forwarded_path_equals_routed_path_for_every_trick(admin_gw, tmp_path):
    for target in ("/x/../public/y", "//public//y", "/public/%79", "/public;a/y"):
        r = raw_request(admin_gw.port, "GET", target)
        assert r.json()["raw_path"] == "/public/y", target


# ---- IP rules ----------------------------------------------------------------------------------


def test_ip_block_and_allow(base_config, tmp_path):
    base_config["routes"] = [
        {"path": "/blocked/*", "upstream": "up", "policies": {"ip_rules": {"block": ["127.0.0.0/8"]}}},
        {"path": "/hidden/*", "upstream": "up", "policies": {"ip_rules": {"allow": ["192.0.2.0/24"], "status": 404}}},
        {"path": "/open/*", "upstream": "up", "policies": {"ip_rules": {"allow": ["127.0.0.1", "::1"]}}},
    ]
    with run_gateway(base_config, tmp_path) as g:
        r = raw_request(g.port, "GET", "/blocked/x")
        assert r.status == 403 and r.json()["type"].endswith("/ip-forbidden")
        assert raw_request(g.port, "GET", "/hidden/x").status == 404
        assert raw_request(g.port, "GET", "/open/x").status == 200


def test_ip_rules_over_ipv6(base_config, tmp_path):
    base_config["listeners"] = [{"host": "::1", "port": 0}]
    base_config["routes"] = [
        {"path": "/v6/*", "upstream": "up", "policies": {"ip_rules": {"allow": ["::1/128"]}}},
        {"path": "/v4/*", "upstream": "up", "policies": {"ip_rules": {"allow": ["127.0.0.0/8"]}}},
    ]
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.fail("IPv6 loopback is not available on this machine")
    with run_gateway(base_config, tmp_path) as g:
        assert raw_request(g.port, "GET", "/v6/x", host="::1").status == 200
        assert raw_request(g.port, "GET", "/v4/x", host="::1").status == 403


# ---- body limit --------------------------------------------------------------------------------


@pytest.fixture()
def small_body_gw(base_config, tmp_path):
    base_config["policies"]["body_limit"] = {"max_bytes": 1000, "max_uri_length": 200}
    base_config["routes"] = [{"path": "/*", "upstream": "up"}]
    with run_gateway(base_config, tmp_path) as g:
        yield g


def test_body_under_the_limit_passes(small_body_gw):
    r = raw_request(small_body_gw.port, "POST", "/echo", {}, b"x" * 1000)
    assert r.status == 200 and r.json()["body_len"] == 1000


def test_content_length_over_the_limit_is_413_without_reading(small_body_gw):
    s = socket.create_connection(("127.0.0.1", small_body_gw.port))
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
    data = s.recv(65536)  # answered although not a byte of the body was sent
    s.close()
    assert data.startswith(b"HTTP/1.1 413")
    assert b"application/problem+json" in data


def test_chunked_body_growing_past_the_limit_is_413(small_body_gw):
    s = socket.create_connection(("127.0.0.1", small_body_gw.port))
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    data = b""
    try:
        for _ in range(20):
            s.sendall(b"100\r\n" + b"y" * 256 + b"\r\n")
            time.sleep(0.01)
        s.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.settimeout(5)
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    s.close()
    assert data.startswith(b"HTTP/1.1 413"), data[:100]


def test_uri_too_long(small_body_gw):
    r = raw_request(small_body_gw.port, "GET", "/echo?q=" + "a" * 300)
    assert r.status == 414


def test_slow_client_body_gets_408(base_config, tmp_path):
    base_config["listeners"] = [{"host": "127.0.0.1", "port": 0, "client_body_timeout": 0.5}]
    base_config["routes"] = [{"path": "/*", "upstream": "up"}]
    with run_gateway(base_config, tmp_path) as g:
        s = socket.create_connection(("127.0.0.1", g.port))
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-a-little")
        s.settimeout(30)  # the 0.5 s body deadline, not this socket timeout, must end the wait
        data = s.recv(65536)
        s.close()
        assert data.startswith(b"HTTP/1.1 408")


# ---- CORS --------------------------------------------------------------------------------------


@pytest.fixture()
def cors_gw(base_config, tmp_path):
    base_config["policies"]["cors"] = {
        "allow_origins": ["https://app.example.com", "https://*.example.org"],
        "allow_methods": ["GET", "POST", "PUT"],
        "allow_headers": ["content-type", "authorization"],
        "expose_headers": ["x-request-id"],
        "allow_credentials": True,
        "max_age": 300,
    }
    base_config["routes"] = [
        {"path": "/*", "upstream": "up"},
        {
            "path": "/strict/*",
            "upstream": "up",
            "policies": {"cors": {"allow_origins": ["https://only.example.net"], "block_disallowed": True}},
        },
        {"path": "/nocors/*", "upstream": "up", "policies": {"cors": {"enabled": False}}},
    ]
    with run_gateway(base_config, tmp_path) as g:
        yield g


def preflight(port, origin, method="PUT", headers="content-type", path="/echo"):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return raw_request(port, "OPTIONS", path, h)


def test_preflight_from_allowed_origin(cors_gw):
    r = preflight(cors_gw.port, "https://app.example.com")
    assert r.status == 204
    assert r.header("access-control-allow-origin") == "https://app.example.com"
    assert r.header("access-control-allow-credentials") == "true"
    assert "PUT" in r.header("access-control-allow-methods")
    assert r.header("access-control-allow-headers") == "content-type"
    assert r.header("access-control-max-age") == "300"
    assert "Origin" in r.header("vary")


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com.evil.com",
        "https://evilexample.org",
        "https://example.org",
        "null",
        "http://app.example.com",
    ],
)
def test_preflight_from_disallowed_origin_gets_no_acao(cors_gw, origin):
    r = preflight(cors_gw.port, origin)
    assert r.status == 403 and r.header("access-control-allow-origin") is None


def test_preflight_for_disallowed_method_or_header(cors_gw):
    r = preflight(cors_gw.port, "https://app.example.com", method="DELETE")
    assert r.status == 403 and r.header("access-control-allow-origin") is None
    r = preflight(cors_gw.port, "https://app.example.com", headers="content-type, x-evil")
    assert r.status == 403 and "x-evil" in r.json()["detail"]


def test_actual_request_from_allowed_pattern_origin(cors_gw):
    r = raw_request(cors_gw.port, "GET", "/echo", {"Origin": "https://sub.example.org"})
    assert r.status == 200
    assert r.header("access-control-allow-origin") == "https://sub.example.org"
    assert r.header("access-control-expose-headers") == "x-request-id"
    assert "Origin" in r.header("vary")


def test_upstream_reflection_is_dropped_for_disallowed_origin(cors_gw):
    r = raw_request(cors_gw.port, "GET", "/cors-reflect", {"Origin": "https://app.example.com.evil.com"})
    assert r.status == 200
    assert r.header("access-control-allow-origin") is None
    assert r.header("access-control-allow-credentials") is None
    assert "Origin" in r.header("vary")


def test_block_disallowed_origin_on_strict_route(cors_gw):
    assert raw_request(cors_gw.port, "GET", "/strict/x", {"Origin": "https://app.example.com"}).status == 403
    r = raw_request(cors_gw.port, "GET", "/strict/x", {"Origin": "https://only.example.net"})
    assert r.status == 200 and r.header("access-control-allow-origin") == "https://only.example.net"
    assert raw_request(cors_gw.port, "GET", "/strict/x").status == 200  # no Origin: not a browser call


def test_cors_disabled_on_a_route_leaves_upstream_headers(cors_gw):
    r = raw_request(cors_gw.port, "GET", "/nocors/cors-reflect", {"Origin": "https://x.test"})
    # the route opted out: the gateway neither adds nor strips CORS headers
    assert r.header("access-control-allow-origin") == "https://x.test"


# ---- security headers --------------------------------------------------------------------------


def test_security_headers_on_proxied_and_gateway_responses(cors_gw):
    for r in (raw_request(cors_gw.port, "GET", "/echo"), raw_request(cors_gw.port, "GET", "/x%2f")):
        assert r.header("x-content-type-options") == "nosniff"
        assert r.header("x-frame-options") == "DENY"
        assert "default-src 'none'" in r.header("content-security-policy")
        assert r.header("referrer-policy") == "no-referrer"
        assert r.header("strict-transport-security") is None  # plain HTTP here


def test_no_store_when_credentials_were_sent(cors_gw):
    r = raw_request(cors_gw.port, "GET", "/cache")
    assert r.header("cache-control") == "public, max-age=600"
    r = raw_request(cors_gw.port, "GET", "/cache", {"Authorization": "Bearer abc"})
    assert r.header("cache-control") == "no-store"
    r = raw_request(cors_gw.port, "GET", "/cache", {"Cookie": "sid=1"})
    assert r.header("cache-control") == "no-store"


def test_no_store_when_an_api_key_of_its_own_name_was_accepted(base_config, tmp_path):
    """An API key in a header (or query parameter) the auth policy names is a credential too: the
    answer it unlocked must not sit in a shared cache, though `X-Shop-Key` is no standard name."""
    from bastion.auth.apikeys import hash_key

    key = "shop-key-0123456789abcdef"
    entry = {"id": "k1", "hash": hash_key(key), "owner": "alice", "scopes": []}
    base_config["policies"]["auth"] = {
        "schemes": {"k": {"type": "api_key", "header": "X-Shop-Key", "query_param": "shop_key", "keys": [entry]}},
        "allow_query_key": True,
    }
    base_config["routes"] = [{"path": "/*", "upstream": "up"}]
    with run_gateway(base_config, tmp_path) as g:
        assert raw_request(g.port, "GET", "/cache").status == 401  # no key: refused, nothing cached
        r = raw_request(g.port, "GET", "/cache", {"X-Shop-Key": key})
        assert r.status == 200 and r.header("cache-control") == "no-store"
        r = raw_request(g.port, "GET", f"/cache?shop_key={key}")
        assert r.status == 200 and r.header("cache-control") == "no-store"


def test_security_headers_configurable(base_config, tmp_path):
    base_config["policies"]["security_headers"] = {
        "frame_options": "SAMEORIGIN",
        "referrer_policy": None,
        "extra": {"Permissions-Policy": "camera=()"},
    }
    base_config["routes"] = [{"path": "/*", "upstream": "up"}]
    with run_gateway(base_config, tmp_path) as g:
        r = raw_request(g.port, "GET", "/echo")
        assert r.header("x-frame-options") == "SAMEORIGIN"
        assert r.header("referrer-policy") is None
        assert r.header("permissions-policy") == "camera=()"


# ---- audit -------------------------------------------------------------------------------------


def test_audit_line_per_request_with_secrets_redacted(admin_gw, tmp_path):
    secret_token = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.c2lnbmF0dXJl"
    raw_request(
        admin_gw.port,
        "GET",
        f"/echo?access_token={secret_token}&page=2&API_KEY=sk_live_123",
        {
            "Authorization": f"Bearer {secret_token}",
            "Cookie": "session=hunter2",
            "X-API-Key": "sk_live_123",
            "X-Request-Id": "audit-test-1",
        },
    )
    raw_request(admin_gw.port, "GET", "/admin/x", {"X-Request-Id": "audit-test-2"})
    audit_lines(tmp_path / "audit.log", "audit-test-2")
    audit_lines(tmp_path / "audit.log", "audit-test-1")
    text = (tmp_path / "audit.log").read_text()
    assert secret_token not in text and "hunter2" not in text and "sk_live_123" not in text
    lines = {json.loads(line)["request_id"]: json.loads(line) for line in text.splitlines()}
    ok, blocked = lines["audit-test-1"], lines["audit-test-2"]
    assert ok["status"] == 200 and ok["method"] == "GET" and ok["path"] == "/echo"
    assert ok["query"] == "access_token=[REDACTED]&page=2&API_KEY=[REDACTED]"
    assert ok["client_ip"] == "127.0.0.1" and ok["route"] == "/*" and ok["bytes_out"] > 0
    assert ok["duration_ms"] >= ok["upstream_ms"] >= 0
    # to the microsecond, as round(ms, 3) wrote them (gateway/app.py's inline `_ms`)
    for key in ("duration_ms", "upstream_ms"):
        assert len(repr(ok[key]).partition(".")[2]) <= 3, ok[key]
    assert blocked["status"] == 403 and blocked["stopped_by"] == "ip_rules"
    assert blocked["reason"] == "client address is not in the allowed networks"
    assert blocked["route"] == "/admin/*"


def test_audit_records_unrouted_and_bad_requests(admin_gw, tmp_path):
    raw_request(admin_gw.port, "GET", "/a%2fb", {"X-Request-Id": "audit-bad-path"})
    lines = audit_lines(tmp_path / "audit.log", "audit-bad-path")
    line = next(x for x in lines if x["request_id"] == "audit-bad-path")
    assert line["status"] == 400 and line["stopped_by"] == "router" and line["reason"] == "bad-path"
