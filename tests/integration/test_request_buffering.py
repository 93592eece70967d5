"""Request bodies are read whole before the upstream is contacted: slow or broken bodies hold the
client's own (capped) connection, never one of the upstream pool's, and a malformed chunked body
is answered 400 at once."""

from __future__ import annotations

import hashlib
import os
import socket

import pytest
from helpers import forwarded_headers, raw_request, run_gateway


@pytest.fixture()
def gw(upstream, tmp_path):
    cfg = {
        "upstreams": {
            "up": {"urls": [upstream.url], "max_connections": 2, "timeouts": {"connect": 1, "read": 2, "total": 3}}
        },
        "listeners": [{"host": "127.0.0.1", "port": 0, "client_body_timeout": 5}],
        "policies": {"body_limit": {"max_bytes": 8 * 1024 * 1024}},
        "routes": [{"path": "/*", "upstream": "up"}],
    }
    with run_gateway(cfg, tmp_path) as g:
        yield g


def test_trickling_bodies_do_not_take_the_upstream_pool(gw):
    """Six clients stall in their chunked bodies; the pool has two connections. Were bodies
    streamed, the innocent request would wait for a pool slot and get 504."""
    stalled = []
    try:
        for _ in range(6):
            s = socket.create_connection(("127.0.0.1", gw.port))
            s.sendall(b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            stalled.append(s)
        for _ in range(3):
            assert raw_request(gw.port, "GET", "/ok").status == 200
    finally:
        for s in stalled:
            s.close()


@pytest.mark.parametrize(
    "chunks",
    [
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\n0\n\n",
        b"3\r\nhello\r\n0\r\n\r\n",
        b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    ],
)
def test_a_malformed_chunked_body_is_answered_400_at_once(gw, chunks):
    with socket.create_connection(("127.0.0.1", gw.port), timeout=4) as s:
        s.sendall(b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
        head = s.recv(200)
    assert head.startswith(b"HTTP/1.1 400"), head


def test_a_large_chunked_body_is_spooled_and_forwarded_whole_with_a_length(gw):
    body = os.urandom(3 * 1024 * 1024)  # over the in-memory part: spooled to a temporary file
    with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for i in range(0, len(body), 100_000):
            piece = body[i : i + 100_000]
            s.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
        s.sendall(b"0\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    import json

    seen = json.loads(payload)
    assert seen["body_len"] == len(body) and seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    names = {k.lower() for k, _ in seen["headers"]}
    assert "transfer-encoding" not in names and "content-length" in names


def test_a_small_body_still_arrives_as_sent(gw):
    r = raw_request(gw.port, "POST", "/echo", {"Content-Type": "application/json"}, body=b'{"a": 1}')
    assert r.status == 200 and r.json()["body_len"] == 8
    assert forwarded_headers(r)["content-length"] == ["8"]
