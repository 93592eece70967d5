"""Request transfer codings through a real gateway (both server layers): only `chunked` is
applied, so any other coding in a request's Transfer-Encoding (`gzip, chunked`) is refused 501
(RFC 9112 6.1) before any policy reads the body and before the upstream sees anything. Without
the check the parser de-chunks, `gzip` is dropped with the hop-by-hop header, and the upstream and
every policy (WAF, validation) read the coded bytes as the body."""

from __future__ import annotations

import gzip
import hashlib
import socket

import orjson
import pytest
from helpers import run_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LAYERS = ["native", "uvicorn"]


@pytest.fixture(scope="module")
def gws(upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("te")
    out = {}
    stack = []
    for layer in LAYERS:
        cfg = {
            "upstreams": {"up": {"urls": [upstream.url], "timeouts": {"connect": 10, "read": 30, "total": 60}}},
            "routes": [{"path": "/*", "upstream": "up"}],
            "listeners": [{"host": "127.0.0.1", "port": 0, "server": layer}],
        }
        cm = run_gateway(cfg, tmp)
        out[layer] = cm.__enter__().port
        stack.append(cm)
    yield out
    for cm in stack:
        cm.__exit__(None, None, None)


def exchange(port: int, data: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)


def request(te_lines: list[bytes], body: bytes) -> bytes:
    head = b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    head += b"".join(b"Transfer-Encoding: " + line + b"\r\n" for line in te_lines)
    return head + b"\r\n" + chunked(body)


@pytest.mark.parametrize("layer", LAYERS)
def test_gzip_then_chunked_is_refused_and_never_forwarded(gws, upstream, layer):
    coded = gzip.compress(b'{"q": "1 union select password from users"}')
    status, body = exchange(gws[layer], request([b"gzip, chunked"], coded))
    assert status == 501 and b"transfer-coding-not-implemented" in body


@pytest.mark.parametrize("layer", LAYERS)
def test_plain_chunked_still_goes_through(gws, layer):
    status, body = exchange(gws[layer], request([b"Chunked"], b"hello"))
    assert status == 200
    seen = orjson.loads(body)
    assert seen["body_sha256"] == hashlib.sha256(b"hello").hexdigest()


CODINGS = st.sampled_from(["chunked", "CHUNKED", "gzip", "deflate", "identity", "br", "x-zip", "chunked;a=1"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(st.lists(CODINGS, min_size=1, max_size=3), min_size=1, max_size=2),
    spaces=st.sampled_from(["", " ", "\t"]),
    layer=st.sampled_from(LAYERS),
)
def test_only_exactly_chunked_reaches_the_upstream(gws, lines, spaces, layer):
    """Invariant over generated Transfer-Encoding values (one or two lines, any case, spacing,
    parameters): a 2xx means the codings were exactly `chunked` and the upstream got the body
    de-chunked; anything else is refused (400 by the parser or 501 by the gateway)."""
    te = [(b"," + spaces.encode()).join(c.encode() for c in codings) for codings in lines]
    codings = [c.strip().lower() for codings in lines for c in codings]
    status, body = exchange(gws[layer], request(te, b"payload"))
    if codings == ["chunked"]:
        assert status == 200 and orjson.loads(body)["body_sha256"] == hashlib.sha256(b"payload").hexdigest()
    else:
        assert status in (400, 501), (te, status, body[:200])
