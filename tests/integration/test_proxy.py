"""A real gateway in front of a real upstream: what is forwarded, and what is not."""

import socket
import time

import pytest
from helpers import audit_lines, forwarded_headers, raw_request, run_gateway
from upstream_app import STREAM_GATE


@pytest.fixture()
def gw(base_config, tmp_path):
    base_config["routes"] = [{"path": "/*", "upstream": "up"}]
    with run_gateway(base_config, tmp_path) as g:
        yield g


def test_path_query_and_body_reach_the_upstream(gw):
    body = b'{"a": 1}'
    r = raw_request(gw.port, "POST", "/echo/x?b=2&c=%20", {"Content-Type": "application/json"}, body)
    assert r.status == 200
    seen = r.json()
    assert seen["raw_path"] == "/echo/x" and seen["query"] == "b=2&c=%20"
    assert seen["body_len"] == len(body)


def test_normalised_path_is_what_is_forwarded(gw):
    seen = raw_request(gw.port, "GET", "//a/./b/../%63;x=1").json()
    assert seen["raw_path"] == "/a/c"


def test_hop_by_hop_request_headers_removed(gw):
    r = raw_request(
        gw.port,
        "GET",
        "/echo",
        [
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Upgrade", "h2c"),
            ("X-Normal", "yes"),
        ],
    )
    seen = forwarded_headers(r)
    for name in ("x-secret-hop", "keep-alive", "te", "proxy-authorization", "upgrade"):
        assert name not in seen, name
    assert seen["x-normal"] == ["yes"]


def test_hop_by_hop_and_identity_response_headers_removed(gw):
    r = raw_request(gw.port, "GET", "/echo")
    names = {k.lower() for k, _ in r.headers}
    assert "x-upstream-private" not in names  # listed in the upstream's Connection header
    assert "server" not in names and "x-powered-by" not in names
    assert not names & {"x-runtime", "x-debug-token-link", "x-backend-server"}  # red-team review
    assert "keep-alive" not in names
    assert len(r.headers_named("date")) == 1


def test_forwarding_headers_from_an_untrusted_client_are_replaced(gw):
    r = raw_request(
        gw.port,
        "GET",
        "/echo",
        {
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Proto": "https",
            "Forwarded": "for=6.6.6.6",
            "X-Real-IP": "6.6.6.6",
            "Host": "api.example.com",
        },
    )
    seen = forwarded_headers(r)
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["api.example.com"]
    assert seen["forwarded"] == ['for=127.0.0.1;proto=http;host="api.example.com"']
    assert "x-real-ip" not in seen
    assert seen["host"][0].startswith("127.0.0.1:")  # the upstream's own authority


def test_request_id_generated_kept_or_replaced(gw):
    r = raw_request(gw.port, "GET", "/echo")
    rid = r.header("x-request-id")
    assert rid and len(rid) == 32
    assert forwarded_headers(r)["x-request-id"] == [rid]
    r = raw_request(gw.port, "GET", "/echo", {"X-Request-Id": "abc-123.def"})
    assert r.header("x-request-id") == "abc-123.def"
    for bad in ("a b", "x" * 200, "<script>", "a\u00e9".encode().decode("latin-1")):
        r = raw_request(gw.port, "GET", "/echo", {"X-Request-Id": bad})
        assert r.header("x-request-id") != bad
        assert forwarded_headers(r)["x-request-id"] == [r.header("x-request-id")]
    assert r.header("x-response-time").endswith("ms")


def test_response_streams_before_the_upstream_finishes(gw):
    """The first part reaches the client while the upstream is held before its last part (an
    event, not a timing: a gateway that buffered the response would never show "part 0")."""
    STREAM_GATE.clear()
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    try:
        s.sendall(b"GET /stream-gated HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"part 0" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        assert b"part 1" not in data
        STREAM_GATE.set()  # now the upstream finishes
        while b"0\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        STREAM_GATE.set()
        s.close()
    assert b"part 0" in data and b"part 1" in data and data.endswith(b"0\r\n\r\n")


def test_large_body_streams_intact(gw, tmp_path):
    import hashlib

    body = bytes(range(256)) * 4096  # 1 MiB, streamed (over the small-body threshold)
    r = raw_request(gw.port, "POST", "/echo", {}, body)
    assert r.status == 200
    assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_request_body_is_forwarded(gw):
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.sendall(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    body = data.split(b"\r\n\r\n", 1)[1]
    assert b'"body_len":11' in body


def test_problem_json_for_no_route_and_wrong_method(base_config, tmp_path):
    base_config["routes"] = [{"path": "/users", "methods": ["GET"], "upstream": "up"}]
    with run_gateway(base_config, tmp_path) as g:
        r = raw_request(g.port, "GET", "/nothing")
        assert r.status == 404 and r.header("content-type") == "application/problem+json"
        doc = r.json()
        assert doc["type"].endswith("/not-found") and doc["status"] == 404
        assert doc["request_id"] == r.header("x-request-id")
        r = raw_request(g.port, "DELETE", "/users")
        assert r.status == 405 and r.header("allow") == "GET, HEAD"
        assert r.json()["title"] == "Method Not Allowed"


def test_upstream_down_is_502(base_config, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    base_config["upstreams"]["down"] = {"urls": [f"http://127.0.0.1:{port}"]}
    base_config["routes"] = [{"path": "/*", "upstream": "down"}]
    with run_gateway(base_config, tmp_path) as g:
        r = raw_request(g.port, "GET", "/x")
        assert r.status == 502
        doc = r.json()
        assert doc["type"].endswith("/upstream-unavailable") and "Traceback" not in r.body.decode()


def test_slow_upstream_is_504(base_config, tmp_path):
    base_config["upstreams"]["up"]["timeouts"] = {"connect": 1, "read": 0.3, "total": 1}
    base_config["routes"] = [{"path": "/*", "upstream": "up"}]
    with run_gateway(base_config, tmp_path) as g:
        t0 = time.monotonic()
        r = raw_request(g.port, "GET", "/slow?s=60", timeout=90)
        assert r.status == 504 and time.monotonic() - t0 < 30  # 0.3 s timeout vs a 60 s upstream
        assert r.json()["type"].endswith("/upstream-timeout")
        assert raw_request(g.port, "GET", "/echo").status == 200  # the gateway is fine after


def test_trusted_proxy_forwarded_for_is_believed(base_config, tmp_path):
    base_config["trusted_proxies"] = ["127.0.0.1/32", "10.0.0.0/8"]
    base_config["routes"] = [{"path": "/*", "upstream": "up"}]
    base_config["policies"]["ip_rules"] = {"block": ["203.0.113.0/24"]}
    with run_gateway(base_config, tmp_path) as g:
        # client 198.51.100.7 -> proxy 10.1.1.1 -> (trusted peer 127.0.0.1)
        r = raw_request(
            g.port,
            "GET",
            "/echo",
            {
                "X-Forwarded-For": "6.6.6.6, 198.51.100.7, 10.1.1.1",
                "X-Forwarded-Proto": "https",
                "X-Request-Id": "trusted-1",
            },
        )
        seen = forwarded_headers(r)
        assert seen["x-forwarded-for"] == ["6.6.6.6, 198.51.100.7, 10.1.1.1, 127.0.0.1"]
        assert seen["x-forwarded-proto"] == ["https"]
        assert r.header("strict-transport-security")  # HTTPS as told by the trusted proxy
        line = next(x for x in audit_lines(tmp_path / "audit.log", "trusted-1") if x["request_id"] == "trusted-1")
        assert line["client_ip"] == "198.51.100.7"
        # the real client behind the trusted proxy is what IP rules see
        r = raw_request(g.port, "GET", "/echo", {"X-Forwarded-For": "203.0.113.9"})
        assert r.status == 403


def test_spoofed_forwarded_for_cannot_dodge_ip_rules(base_config, tmp_path):
    base_config["routes"] = [{"path": "/*", "upstream": "up"}]
    base_config["policies"]["ip_rules"] = {"allow": ["10.0.0.0/8"]}
    with run_gateway(base_config, tmp_path) as g:
        for spoof in ("10.0.0.1", "10.0.0.1, 10.0.0.2", "::ffff:10.0.0.1"):
            r = raw_request(g.port, "GET", "/echo", {"X-Forwarded-For": spoof, "X-Real-IP": spoof})
            assert r.status == 403, spoof
        r = raw_request(g.port, "GET", "/echo", {"Forwarded": "for=10.0.0.1"})
        assert r.status == 403


def test_upstream_connections_are_kept_alive(gw):
    peers = {tuple(raw_request(gw.port, "GET", "/echo").json()["peer"]) for _ in range(10)}
    assert len(peers) == 1  # ten client connections, one upstream connection


def test_a_failing_policy_answers_problem_json_not_a_traceback(base_config, tmp_path, monkeypatch):
    from bastion.policies.cors import Cors

    async def broken(self, req, ctx):
        raise KeyError("a bug in a policy")

    monkeypatch.setattr(Cors, "on_request", broken)
    base_config["policies"]["cors"] = {"allow_origins": ["https://app.example.com"]}
    base_config["routes"] = [{"path": "/*", "upstream": "up"}]
    with run_gateway(base_config, tmp_path) as g:
        r = raw_request(g.port, "GET", "/echo", {"Origin": "https://app.example.com", "X-Request-Id": "boom-1"})
        assert r.status == 500 and r.header("content-type") == "application/problem+json"
        doc = r.json()
        assert doc["type"].endswith("/internal-error") and doc["request_id"] == "boom-1"
        assert "KeyError" not in r.body.decode() and "Traceback" not in r.body.decode()
        lines = audit_lines(tmp_path / "audit.log", "boom-1")
        assert next(x for x in lines if x["request_id"] == "boom-1")["status"] == 500


def test_several_host_headers_are_refused(gw):
    r = raw_request(gw.port, "GET", "/echo", [("Host", "a.example.com"), ("Host", "b.example.com")])
    assert r.status == 400 and "Host" in r.json()["detail"]
