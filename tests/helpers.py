"""Real servers on ephemeral ports, and a raw HTTP client that sends paths verbatim."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
import yaml

T = TypeVar("T")

STARTUP_SECONDS = 120.0
"""How long a test waits for something it started (a subprocess, a gateway, an upstream) to
serve. Generous on purpose: the tests run on loaded machines, and there a plain
`python -m bastion.cli --help` took 8-12 s (2 cores, load average 17, session 5). The wait ends as
soon as the thing serves, or at once when the process has exited."""

PROCESS_SECONDS = 300.0
"""The hang net of a `subprocess.run` of the CLI: `bastion check` needs 2.5 s of CPU, and took
over 60 s of wall time at load average 28 (session 5). Passing runs never wait for it."""


def wait_for(condition: Callable[[], T], timeout: float = 60.0, interval: float = 0.02, what: str = "") -> T:
    """Wait for a state change: `condition()`'s first truthy value, polled every `interval`
    seconds; AssertionError after `timeout`. The deadline is generous on purpose (a loaded CI
    machine), and a test that waits on it never depends on how fast the machine is."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


class LoopbackServer:
    """A raw TCP server on 127.0.0.1 and a free port, for upstreams that write exact bytes: each
    connection is served by `serve(conn)` on a thread of its own; `connections` counts them."""

    def __init__(self, backlog: int = 64) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()


class ThreadedUvicorn:
    """An ASGI app served by uvicorn in a thread, on 127.0.0.1 and a free port.

    Idle keep-alive connections stay open for `keepalive` seconds (uvicorn's default is 5): the
    gateway's pool reuses them, and a POST sent on one the upstream was closing that very moment
    fails 502 (it is not replayed). On a loaded machine that race was lost once in two runs of
    the suite; the tests of that race use their own upstreams."""

    def __init__(self, app: Any, host: str = "127.0.0.1", keepalive: float = 600) -> None:
        self.sock = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
        )
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", timeout_keep_alive=int(keepalive)
        )
        self.server = uvicorn.Server(config)
        self.server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve([self.sock])), daemon=True)

    def __enter__(self) -> ThreadedUvicorn:
        self.thread.start()
        wait_for(
            lambda: self.server.started or not self.thread.is_alive(), STARTUP_SECONDS, 0.01, "the upstream to start"
        )
        if not self.server.started:
            raise RuntimeError("upstream did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class RunningGateway:
    server: Any
    port: int
    config_path: Path
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def run_gateway(config: dict[str, Any] | str, tmp_path: Path) -> Iterator[RunningGateway]:
    """Start `GatewayServer` from a config (dict or YAML text) on a free port, in a thread."""
    from bastion.gateway.server import GatewayServer

    if isinstance(config, dict):
        config = dict(config)
        config.setdefault("listeners", [{"host": "127.0.0.1", "port": 0}])
        text = yaml.safe_dump(config)
    else:
        text = config
    path = tmp_path / f"bastion-{time.monotonic_ns()}.yaml"
    path.write_text(text)
    bound: list[tuple[str, int]] = []
    ready = threading.Event()

    def on_ready(addrs: list[tuple[str, int]]) -> None:
        bound.extend(addrs)
        ready.set()

    server = GatewayServer(str(path), watch=False, on_ready=on_ready)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(install_signals=False))
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(STARTUP_SECONDS) or errors:
        raise RuntimeError(f"gateway did not start: {errors}")
    try:
        yield RunningGateway(server, bound[0][1], path, thread)
    finally:
        server.stop()
        thread.join(15)


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def headers_named(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(
    port: int,
    method: str,
    target: str,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    host: str = "127.0.0.1",
    timeout: float = 10,
) -> RawResponse:
    """One request with the target sent exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        items = list(headers.items() if isinstance(headers, dict) else (headers or []))
        conn.putrequest(method, target, skip_accept_encoding=True, skip_host=any(k.lower() == "host" for k, _ in items))
        for k, v in items:
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return RawResponse(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


def forwarded_headers(resp: RawResponse) -> dict[str, list[str]]:
    """The headers the test upstream says it received."""
    out: dict[str, list[str]] = {}
    for k, v in resp.json()["headers"]:
        out.setdefault(k, []).append(v)
    return out


def audit_lines(path: Path, until_request_id: str | None = None, timeout: float = 30.0) -> list[dict]:
    """The audit log's lines, waiting (lines are flushed in batches) for one request id."""
    deadline = time.time() + timeout
    while True:
        lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        if until_request_id is None or any(x["request_id"] == until_request_id for x in lines):
            return lines
        if time.time() > deadline:
            raise AssertionError(f"no audit line for {until_request_id} in {path}")
        time.sleep(0.05)


def names_in(doc: Any) -> set[str]:
    """Every object key anywhere in a JSON document, lower-cased (to assert a field is gone)."""
    found: set[str] = set()
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            found.update(k.lower() for k in node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


async def _no_body() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


def plain_request(path: str = "/", *, method: str = "GET", host: str = "h", query: bytes = b"") -> Any:
    """A `bastion.http.Request` as the gateway builds it for a plain request from no client
    address, with no headers and no body (for unit tests of policies and sinks)."""
    from bastion.http.messages import Request

    return Request(
        method=method,
        path=path,
        query=query,
        headers=[],
        client_ip=None,
        peer_ip=None,
        peer_trusted=False,
        scheme="http",
        host=host,
        receive=_no_body,
    )
