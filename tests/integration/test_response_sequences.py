"""Sequences of JSON texts (NDJSON, JSON Lines, RFC 7464 json-seq) through a real gateway: every
record is filtered, and a live stream keeps streaming — a record reaches the client while the
upstream is still holding back the next one."""

from __future__ import annotations

import http.client
import json
import threading

import pytest
from helpers import ThreadedUvicorn, run_gateway

RELEASE = threading.Event()
SECOND = threading.Event()  # set by the upstream when it sends the second record


async def live(scope, receive, send):
    """/live: two NDJSON records; the second only once the test has read the first (or 20 s)."""
    if scope["type"] != "http":
        return
    ctype = b"application/x-ndjson" if scope["path"] == "/live" else b"application/json-seq"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]})
    rs = b"\x1e" if ctype == b"application/json-seq" else b""
    await send({"type": "http.response.body", "body": rs + b'{"id":1,"password":"hunter2"}\n', "more_body": True})
    import asyncio

    for _ in range(200):
        if RELEASE.is_set():
            break
        await asyncio.sleep(0.1)
    SECOND.set()
    await send({"type": "http.response.body", "body": rs + b'{"id":2,"token":"t0ps3cret"}\n', "more_body": False})


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with ThreadedUvicorn(live) as upstream:
        cfg = {
            "upstreams": {"up": {"urls": [upstream.url]}},
            "policies": {"audit": {"enabled": False}},
            "routes": [{"path": "/*", "upstream": "up", "policies": {"response_filter": {}}}],
        }
        with run_gateway(cfg, tmp_path_factory.mktemp("seq")) as g:
            yield g


@pytest.mark.parametrize("path", ["/live", "/seq"])
def test_a_live_sequence_is_filtered_record_by_record(gateway, path):
    RELEASE.clear()
    SECOND.clear()
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        first = resp.readline() if path == "/live" else resp.read1(64)
        # the first record arrived while the upstream still holds the second
        assert not SECOND.is_set(), "the first record was held until the second was sent"
        assert b"hunter2" not in first
        assert json.loads(first.strip(b"\x1e\n")) == {"id": 1}, first
        RELEASE.set()
        rest = resp.read()
    finally:
        RELEASE.set()
        conn.close()
    assert b"t0ps3cret" not in rest
    records = [json.loads(r.strip(b"\x1e")) for r in (first + rest).split(b"\n") if r.strip(b"\x1e")]
    assert records == [{"id": 1}, {"id": 2}]
    if path == "/seq":
        assert (first + rest).count(b"\x1e") == 2  # the record separators kept
