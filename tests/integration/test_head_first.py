"""One write per answer (`gateway/cycle.py`): the head is held for the body only within one turn
of the event loop. An upstream that sends its head and then holds the body: the client must get
the head while the body is still held (no timing: the upstream releases the body only once the
client has read the head)."""

from __future__ import annotations

import socket
import threading

from helpers import run_gateway


class HeadThenHold:
    """A raw upstream: answers the head at once, the body only when `release` is set."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.release = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n")
        self.release.wait(10)
        conn.sendall(b"hello")
        conn.close()


def test_a_late_body_does_not_hold_the_head(tmp_path):
    up = HeadThenHold()
    config = {
        "upstreams": {"up": {"urls": [f"http://127.0.0.1:{up.port}"], "timeouts": {"read": 20, "total": 30}}},
        "policies": {"audit": {"enabled": False}},
        "routes": [{"path": "/*", "upstream": "up"}],
    }
    with run_gateway(config, tmp_path) as gw:
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=8)
        try:
            s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)  # a held head would time out here (the body waits for us)
                assert chunk
                head += chunk
            assert head.startswith(b"HTTP/1.1 200") and b"content-length: 5" in head.lower()
            assert not head.split(b"\r\n\r\n", 1)[1]  # the body is not there yet
            up.release.set()
            rest = head.split(b"\r\n\r\n", 1)[1]
            while len(rest) < 5:
                chunk = s.recv(4096)
                assert chunk
                rest += chunk
            assert rest == b"hello"
        finally:
            up.release.set()
            s.close()
