"""`NativeProtocol` (gateway/native.py) against `EdgeProtocol` (uvicorn's httptools protocol
under the same edge limits, gateway/edge.py) on generated raw request streams.

Each stream (pipelined requests: odd methods, paths and headers, Content-Length and chunked
bodies, HTTP/1.0, `Connection: close`, `Expect: 100-continue`, sometimes a stray byte put in
at a random place, sometimes plain random bytes) is cut at random offsets and fed, piece by
piece, to one connection of each protocol, each on a transport that records what is written
and honours pause_reading (a paused connection gets no data, as a socket's would not). Both
must hand the app the same requests (method, path, raw path, query, version, headers, body)
and write the same bytes, and close (or not) the same way.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from typing import Any

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from uvicorn.server import ServerState

from bastion.gateway.edge import EdgeLimits, protocol_for

LIMITS = EdgeLimits(max_header_count=12, max_header_bytes=400)


class Wire:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.eof = False
        self.paused = False

    def write(self, data: bytes) -> None:
        assert not self.closed or self.eof, "written after close"
        self.written += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.7", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def set_protocol(self, protocol: Any) -> None:  # pragma: no cover - no websocket here
        raise AssertionError("no upgrade expected")


def make_app(seen: list[Any]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        mode = zlib.crc32(scope["raw_path"]) % 6
        body = b""
        if mode != 5:  # mode 5 answers without reading the body
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    body += b"<disconnect>"
                    break
                body += message["body"]
                if not message["more_body"]:
                    break
        seen.append(
            (
                scope["method"],
                scope["path"],
                scope["raw_path"],
                scope["query_string"],
                scope["http_version"],
                list(scope["headers"]),
                body,
            )
        )
        answer = b"%d:%d" % (len(seen), len(body))
        if mode == 0:
            headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(answer))]
        elif mode == 1:  # chunked: no length
            headers = [(b"X-Mode", b"chunked")]
        elif mode == 2:
            headers = [(b"content-length", b"%d" % len(answer)), (b"Connection", b"close")]
        elif mode == 3:
            raise RuntimeError("the app fails before answering")
        elif mode == 4:  # the length of both body messages
            headers = [(b"content-length", b"%d" % (len(answer) * 2))]
        else:
            headers = [(b"content-length", b"%d" % len(answer))]
        await send({"type": "http.response.start", "status": 200 + mode, "headers": headers})
        await send({"type": "http.response.body", "body": answer, "more_body": True})
        await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": answer if mode == 4 else b"", "more_body": mode == 4})
        if mode == 4:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def feed(server: str, pieces: list[bytes]) -> tuple[list[Any], bytes, bool, bool]:
    seen: list[Any] = []
    config = uvicorn.Config(
        make_app(seen),
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=False,
        proxy_headers=False,
    )
    config.load()
    proto = protocol_for(LIMITS, server=server)(
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    wire = Wire()
    proto.connection_made(wire)

    async def settle() -> None:
        for _ in range(30):
            await asyncio.sleep(0)

    for piece in pieces:
        await settle()
        if wire.paused or wire.closed:
            break  # a socket delivers nothing more to a paused or closed connection
        proto.data_received(piece)
    await settle()
    closed, eof = wire.closed, wire.eof
    proto.connection_lost(None)
    await settle()
    return seen, bytes(wire.written), closed, eof


TOKEN = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~", min_size=1, max_size=12
)
VALUE = st.binary(max_size=24).map(lambda b: bytes(c for c in b if c not in b"\r\n"))
PATH = st.lists(
    st.sampled_from(["/", "a", "b", "%2F", "%41", "..", "x y", "?", "q=1", "&", "#f", "%", "é", ";", "//"]),
    max_size=6,
).map(lambda parts: ("/" + "".join(parts)).encode("utf-8"))


@st.composite
def request(draw: Any) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"get"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    lines = [method + b" " + draw(PATH) + b" " + version]
    headers = draw(st.lists(st.tuples(TOKEN, VALUE), max_size=6))
    if draw(st.booleans()):
        lines.append(b"Host: gw")
    for name, value in headers:
        lines.append(name.encode() + b": " + value)
    if draw(st.integers(0, 5)) == 0:
        lines.append(b"Connection: close")
    if draw(st.integers(0, 5)) == 0:
        lines.append(b"Connection: keep-alive")
    if draw(st.integers(0, 5)) == 0:
        lines.append(b"Expect: 100-continue")
    framing = draw(st.sampled_from(["none", "none", "length", "chunked", "both"]))
    body = b""
    if framing in ("length", "both"):
        payload = draw(st.binary(max_size=80))
        lines.append(b"Content-Length: %d" % len(payload))
        body = payload
    if framing in ("chunked", "both"):
        lines.append(b"Transfer-Encoding: chunked")
        chunks = draw(st.lists(st.binary(min_size=1, max_size=30), max_size=4))
        body = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@st.composite
def stream(draw: Any) -> list[bytes]:
    if draw(st.integers(0, 9)) == 0:
        data = draw(st.binary(min_size=1, max_size=200))
    else:
        data = b"".join(draw(st.lists(request(), min_size=1, max_size=4)))
        if draw(st.integers(0, 4)) == 0:  # one stray byte somewhere
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(st.binary(min_size=1, max_size=1)) + data[at:]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=6))))
    pieces, prev = [], 0
    for cut in [*cuts, len(data)]:
        if cut > prev:
            pieces.append(data[prev:cut])
            prev = cut
    return pieces


def run_both(pieces: list[bytes]) -> None:
    old = asyncio.run(feed("uvicorn", pieces))
    new = asyncio.run(feed("native", pieces))
    assert new[0] == old[0], "the app saw different requests"
    assert new[1] == old[1], "different bytes written"
    assert new[2:] == old[2:], "closed differently"


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    logger = logging.getLogger("uvicorn.error")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # the failing app's tracebacks
    edge = logging.getLogger("bastion.edge")
    edge_level = edge.level
    edge.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)
    edge.setLevel(edge_level)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream())
def test_same_requests_and_answers_as_edge_protocol(pieces: list[bytes]) -> None:
    run_both(pieces)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\nHEAD /c HTTP/1.1\r\n\r\n",
        b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",  # a bad chunk
        b"POST /u HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
        b"GET / HTTP/1.0\r\n\r\nGET /after-close HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /after HTTP/1.1\r\n\r\n",  # 1.0: closed anyway
        b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 13 + b"\r\n",  # 431: too many header lines
        b"GET / HTTP/1.1\r\nX-Long: " + b"v" * 500 + b"\r\n\r\n",  # 431: too large
        b"GET /ok HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nX-Long: " + b"v" * 500 + b"\r\n\r\n",
        b"GET /ok HTTP/1.1\r\n\r\n\x00garbage",
        b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
        b"POST /big HTTP/1.1\r\nContent-Length: 200000\r\n\r\n" + b"b" * 200000,
    ],
)
def test_known_streams(data: bytes) -> None:
    for size in (len(data), 1, 7) if len(data) < 1000 else (len(data), 4096, 70000):
        run_both([data[i : i + size] for i in range(0, len(data), size)])


def test_reading_resumes_when_a_queued_request_is_answered() -> None:
    """/n4's and /n16's apps never call receive(): reading, paused while /n16 was queued behind
    /n4, must resume when the answers are out, or /b never arrives."""
    run_both([b"GET /n4 HTTP/1.1\r\n\r\nGET /n16 HTTP/1.1\r\n\r\n", b"GET /b HTTP/1.1\r\n\r\n"])
    assert (
        len(
            asyncio.run(
                feed("native", [b"GET /n4 HTTP/1.1\r\n\r\nGET /n16 HTTP/1.1\r\n\r\n", b"GET /b HTTP/1.1\r\n\r\n"])
            )[0]
        )
        == 3
    )
