"""Issue 22 end to end: no size, encoding or label lets a filtered field through.

A real upstream (below) answers JSON records, each with `password` fields (plain, escaped as
`pass\\u0077ord`, inside arrays of arrays), in every content coding, with Content-Length or
chunked, from 1 KB to 100 MB; bombs, malformed JSON and mislabelled JSON too. The same table runs
through `bastion serve` (GatewayServer on an ephemeral port) and through BastionMiddleware around
the same app (one engine, `bastion.response_body`).
"""

from __future__ import annotations

import functools
import http.client
import logging
import zlib
from typing import Any
from urllib.parse import parse_qs

import brotli
import orjson
import pytest
from helpers import ThreadedUvicorn, audit_lines, names_in, raw_request, run_gateway

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # Python < 3.14
    from backports import zstd  # type: ignore[no-redef]

KB, MB = 1024, 1024 * 1024
FORBIDDEN = {"password", "ssn", "secret"}


# ---------------------------------------------------------------- the upstream
def record(i: int) -> bytes:
    return (
        b'{"id":%d,"name":"user %d","password":"pw-%d","profile":{"pass\\u0077ord":"x","tags":'
        b'[["a",{"ssn":"078-05-1120","ok":1}],[]],"bio":"hello"},"Secret":{"k":[1,2]}}' % (i, i, i)
    )


@functools.lru_cache(maxsize=4)
def document(size: int) -> tuple[bytes, int]:
    n = max(1, size // len(record(0)))
    return b'{"count":%d,"items":[' % n + b",".join(record(i) for i in range(n)) + b"]}", n


def encode(data: bytes, coding: str) -> bytes:
    if coding == "gzip":
        c = zlib.compressobj(1, zlib.DEFLATED, 31)
        return c.compress(data) + c.flush()
    if coding == "deflate":
        return zlib.compress(data, 1)
    if coding == "br":
        return brotli.compress(data, quality=1)
    if coding == "zstd":
        return zstd.compress(data, 1)
    return data


@functools.lru_cache(maxsize=8)
def encoded(size: int, coding: str) -> bytes:
    return encode(document(size)[0], coding)


@functools.lru_cache(maxsize=1)
def bomb() -> bytes:
    return encode(b"[" + b" " * (256 * MB), "gzip")  # 256 MiB of white space in ~250 KB


async def body_app(scope, receive, send):
    if scope["type"] != "http":
        return
    q = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
    path = scope["path"]
    size = int(q.get("size", "1024"))
    coding = q.get("enc", "identity")
    status = int(q.get("status", "200"))
    ctype = q.get("ctype", "application/json")
    if path.endswith("/bomb"):
        body, coding = bomb(), "gzip"
    elif path.endswith("/malformed"):
        body = encode(document(size)[0][:-2] + b', {"password": "leak"', coding)  # cut, never closed
    elif path.endswith("/text"):
        body = b"[INFO] password=hunter2 (a log line, not JSON)"
    else:
        body = encoded(size, coding)
    headers = [] if ctype == "none" else [(b"content-type", ctype.encode())]
    if coding != "identity":
        headers.append((b"content-encoding", coding.encode()))
    if q.get("validators"):  # what describes the upstream's bytes
        headers += [(b"etag", b'"v1"'), (b"content-digest", b"sha-256=:eA==:"), (b"content-md5", b"eA==")]
    chunked = q.get("mode") == "chunked"
    if not chunked:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    step = 64 * KB if chunked else len(body) or 1
    for i in range(0, len(body), step):
        await send({"type": "http.response.body", "body": body[i : i + step], "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def routes(upstream: str | None) -> list[dict[str, Any]]:
    up = {"upstream": upstream} if upstream else {}
    return [
        {"path": "/f/*", **up, "policies": {"response_filter": {"fields": ["password", "ssn", "secret"]}}},
        {
            "path": "/small/*",
            **up,
            "policies": {
                "response_filter": {"fields": ["password", "ssn", "secret"]},
                "response_body": {"max_buffered_bytes": 64 * KB},
            },
        },
        {
            "path": "/pass/*",
            **up,
            "policies": {
                "response_filter": {"fields": ["password", "ssn", "secret"]},
                "response_body": {"on_unfilterable": "pass"},
            },
        },
        {
            "path": "/nosniff/*",
            **up,
            "policies": {"response_filter": {"fields": ["password"]}, "response_body": {"sniff_json": False}},
        },
        {
            "path": "/enc/*",
            **up,
            "policies": {
                "field_encryption": {"keys": [{"id": "k1", "source": "env:RB_KEY"}], "encrypt_response": ["count"]}
            },
        },
    ]


@pytest.fixture(scope="module")
def body_upstream():
    with ThreadedUvicorn(body_app) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(body_upstream, tmp_path_factory):
    import os

    os.environ.setdefault("RB_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
    tmp = tmp_path_factory.mktemp("rb")
    cfg = {
        "upstreams": {"up": {"urls": [body_upstream.url], "timeouts": {"connect": 2, "read": 60, "total": 300}}},
        "policies": {"audit": {"output": str(tmp / "audit.log")}},
        "routes": routes("up"),
    }
    with run_gateway(cfg, tmp) as g:
        g.audit = tmp / "audit.log"  # type: ignore[attr-defined]
        yield g


@pytest.fixture(scope="module")
def middleware():
    import os

    from bastion.middleware import BastionMiddleware

    os.environ.setdefault("RB_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
    app = BastionMiddleware(body_app, {"policies": {"audit": {"enabled": False}}, "routes": routes(None)})
    with ThreadedUvicorn(app) as server:
        yield server


@pytest.fixture(params=["gateway", "middleware"])
def port(request) -> int:
    return request.getfixturevalue(request.param).port


# ---------------------------------------------------------------- checks
def get(port: int, target: str, headers: dict[str, str] | None = None, timeout: float = 120):
    return raw_request(port, "GET", target, headers, timeout=timeout)


def assert_filtered(r, size: int) -> None:
    assert r.status == 200, r.body[:300]
    assert r.header("content-encoding") is None  # sent as identity, whatever the upstream used
    if r.header("content-length") is not None:
        assert int(r.header("content-length")) == len(r.body)
    doc = orjson.loads(r.body)  # the client sees valid JSON
    n = document(size)[1]
    assert doc["count"] == n and len(doc["items"]) == n and doc["items"][-1]["name"] == f"user {n - 1}"
    assert not names_in(doc) & FORBIDDEN
    assert doc["items"][0]["profile"] == {"tags": [["a", {"ok": 1}], []], "bio": "hello"}
    assert b"pw-" not in r.body


# ---------------------------------------------------------------- the table
@pytest.mark.parametrize("mode", ["cl", "chunked"])
@pytest.mark.parametrize("coding", ["identity", "gzip", "deflate", "br", "zstd"])
@pytest.mark.parametrize("size", [1 * KB, 100 * KB, 3 * MB])
def test_every_size_coding_and_framing_is_filtered(port, size, coding, mode):
    assert_filtered(get(port, f"/f/gen?size={size}&enc={coding}&mode={mode}"), size)


@pytest.mark.parametrize("coding,mode", [("identity", "chunked"), ("gzip", "cl"), ("zstd", "chunked")])
def test_ten_megabytes(port, coding, mode):
    assert_filtered(get(port, f"/f/gen?size={10 * MB}&enc={coding}&mode={mode}"), 10 * MB)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("coding,mode", [("identity", "cl"), ("gzip", "chunked"), ("br", "cl")])
def test_a_hundred_megabytes(port, coding, mode):
    assert_filtered(get(port, f"/f/gen?size={100 * MB}&enc={coding}&mode={mode}", timeout=600), 100 * MB)


def test_small_hold_streams_the_answer_chunked(gateway):
    r = get(gateway.port, f"/small/gen?size={2 * MB}&mode=cl")
    assert r.header("content-length") is None and r.header("transfer-encoding") == "chunked"
    assert_filtered(r, 2 * MB)


def refused(r, reason: str) -> None:
    assert r.status == 502 and r.header("content-type") == "application/problem+json"
    doc = r.json()
    assert doc["type"].endswith("/unfilterable-response") and doc["reason"] == reason
    assert b"password" not in r.body and b"hunter2" not in r.body and b"leak" not in r.body


def test_a_decompression_bomb_is_refused(port, caplog):
    with caplog.at_level(logging.WARNING, logger="bastion.response_body"):
        refused(get(port, "/f/bomb"), "too-large")
    assert "too-large" in caplog.text


@pytest.mark.parametrize("coding", ["identity", "gzip"])
def test_malformed_json_is_refused(port, coding, caplog):
    with caplog.at_level(logging.WARNING, logger="bastion.response_body"):
        refused(get(port, f"/f/malformed?size={50 * KB}&enc={coding}"), "malformed")
    assert "malformed" in caplog.text and "leak" not in caplog.text  # logged, without the body


def test_malformed_after_the_head_went_out_cuts_the_connection(port):
    """A 5 MB stream that breaks at its end: its head is out, so the connection is cut without
    the chunked terminator (no client takes it for a whole answer), and nothing leaks."""
    with pytest.raises(http.client.IncompleteRead) as info:
        get(port, f"/small/malformed?size={5 * MB}&mode=chunked")
    partial = info.value.partial
    assert len(partial) > 64 * KB and b"password" not in partial and b"pw-" not in partial


@pytest.mark.parametrize("coding", ["compress", "x-unknown", "gzip,foo"])
def test_an_unknown_coding_is_refused(port, coding):
    refused(get(port, f"/f/gen?enc={coding}"), "unsupported")


def test_unknown_coding_and_malformed_pass_when_the_route_opts_in(port):
    r = get(port, "/pass/gen?enc=x-unknown")
    assert r.status == 200 and r.header("content-encoding") == "x-unknown" and b"pw-0" in r.body
    r = get(port, f"/pass/malformed?size={2 * KB}")
    assert r.status == 200 and b'"password": "leak"' in r.body  # exactly as the upstream sent it


def test_bodies_over_the_buffer_of_a_whole_body_policy_are_refused(port):
    small = get(port, "/enc/gen?size=2048&enc=gzip")
    assert small.status == 200 and small.json()["count"] != document(2048)[1]  # encrypted
    assert small.json()["count"].startswith("enc:v1:k1:")
    refused(get(port, f"/enc/gen?size={3 * MB}"), "too-large")


@pytest.mark.parametrize("ctype", ["text/plain", "text/html", "none"])
def test_mislabelled_json_is_sniffed(port, ctype):
    assert_filtered(get(port, f"/f/gen?size={3 * KB}&ctype={ctype}&enc=br"), 3 * KB)
    assert_filtered(get(port, f"/f/gen?size={3 * MB}&ctype={ctype}&mode=chunked"), 3 * MB)
    unsniffed = get(port, f"/nosniff/gen?size={3 * KB}&ctype={ctype}")
    assert unsniffed.status == 200 and b'"password":"pw-0"' in unsniffed.body  # sniff_json: false


def test_text_that_is_not_json_passes(port):
    r = get(port, "/f/text?ctype=text/plain")
    assert r.status == 200 and r.body.startswith(b"[INFO] password=")


def test_a_huge_5xx_is_masked_without_being_held(port):
    r = get(port, f"/f/gen?size={20 * MB}&status=500&mode=chunked&enc=gzip")
    assert r.status == 500 and r.header("content-type") == "application/problem+json"
    assert r.json()["type"].endswith("/upstream-error") and b"pw-" not in r.body


def test_the_audit_line_counts_and_the_refusal_is_recorded(gateway):
    get(gateway.port, "/f/gen?size=1024", {"X-Request-Id": "rb-count"})
    get(gateway.port, "/f/malformed?size=1024", {"X-Request-Id": "rb-refused"})
    lines = {x["request_id"]: x for x in audit_lines(gateway.audit, "rb-refused")}
    n = document(1024)[1]
    assert lines["rb-count"]["filtered_fields"] == 4 * n  # password, pass\u0077ord, ssn, Secret
    assert lines["rb-refused"]["status"] == 502


@pytest.mark.parametrize("coding", ["identity", "gzip"])
def test_a_filtered_answer_loses_the_etag_and_digests_of_the_old_bytes(port, coding):
    r = get(port, f"/f/gen?size={2 * KB}&enc={coding}&validators=1")
    assert_filtered(r, 2 * KB)
    assert r.header("etag") is None and r.header("content-digest") is None and r.header("content-md5") is None
    r = get(port, "/f/text?ctype=text/plain&validators=1")  # not JSON: passes as it came
    assert r.status == 200 and b"hunter2" in r.body
    assert r.header("etag") == '"v1"' and r.header("content-digest") == "sha-256=:eA==:"
