"""Content-Length values of any number of digits, from the client and from the upstream: never a
500 (Python's int() refuses strings of more than 4,300 digits, and llhttp accepts leading zeros),
always an answer the value's reading explains: 400 for the client's, 502 for the upstream's when it
is longer than 18 digits; the request or answer as usual otherwise."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from helpers import run_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


class RawUpstream:
    """Answers every request with `Content-Length: <self.length>` and that many bytes."""

    def __init__(self) -> None:
        self.zeros = 0
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1].strip().lstrip(b"0") or b"0")
                if length:
                    await r.readexactly(length)
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: " + b"0" * self.zeros + b"2\r\n\r\nok")
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    def __enter__(self) -> RawUpstream:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(asyncio.start_server(self.handle, sock=self.sock), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with RawUpstream() as up:
        cfg = {
            "upstreams": {"up": {"urls": [f"http://127.0.0.1:{up.port}"]}},
            "routes": [{"path": "/*", "upstream": "up"}],
        }
        with run_gateway(cfg, tmp_path_factory.mktemp("cl")) as g:
            yield g, up


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), 10) as s:
        s.sendall(data)
        s.settimeout(10)
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(zeros=st.sampled_from([0, 1, 16, 17, 18, 40, 4299, 4400, 9000]), upstream=st.booleans())
def test_content_length_of_any_number_of_digits(gw, zeros, upstream):
    g, up = gw
    up.zeros = zeros if upstream else 0
    cl = (b"0" * (0 if upstream else zeros)) + b"1"
    out = exchange(g.port, b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: " + cl + b"\r\n\r\nx")
    assert out.startswith(b"HTTP/1.1 "), (zeros, upstream, out[:200])
    status = int(out[9:12])
    digits = len(cl) if not upstream else zeros + 1
    if digits > 18:
        assert status == (502 if upstream else 400), out[:300]
        assert b"application/problem+json" in out.lower()
    else:
        assert status == 200, out[:300]
