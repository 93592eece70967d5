"""Idle pooled connections and the upstream's keep-alive timeout.

An upstream closes an idle connection at its own keep-alive timeout; a request written as that
close crosses it is lost. A replayable request (idempotent, body in memory) is retried on a new
connection; a POST cannot be. The upstream here makes that race deterministic: a request arriving
on a connection idle longer than its keep-alive timeout is read and answered by a close. Time is
the subject of these tests (how long a connection sat idle), so they wait on the clock.
"""

from __future__ import annotations

import asyncio

import pytest

from bastion.net.http1 import ConnectionPool, UpstreamProtocolError

from .test_upstream_client import OK, fetch, run

KEEPALIVE = 0.4  # the upstream's keep-alive timeout


class KeepAliveUpstream:
    def __init__(self) -> None:
        self.connections = 0
        self.lost: list[bytes] = []  # requests that met the "close"
        self.eof_seen = 0  # connections the client closed itself

    async def handle(self, reader, writer) -> None:
        self.connections += 1
        loop = asyncio.get_running_loop()
        last = loop.time()
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.eof_seen += 1
                    return
                n = 0
                if b"content-length:" in head.lower():
                    n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(n)
                if loop.time() - last > KEEPALIVE:
                    self.lost.append(head.split(b" ", 1)[0])
                    return  # the close crossed this request
                writer.write(OK)
                await writer.drain()
                last = loop.time()
        finally:
            writer.close()

    async def __aenter__(self) -> KeepAliveUpstream:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()


async def _idle_then(pool: ConnectionPool, method: str, body: bytes | None) -> tuple[int, bytes]:
    assert (await fetch(pool))[2] == b"ok"
    await asyncio.sleep(KEEPALIVE + 0.1)  # idle past the upstream's keep-alive timeout
    status, _, data = await fetch(pool, method, b"/", body, [(b"host", b"x"), (b"content-length", b"2")])
    return status, data


def test_a_post_never_takes_a_connection_idle_past_the_window():
    async def main():
        async with KeepAliveUpstream() as up:
            pool = ConnectionPool("127.0.0.1", up.port, unsafe_reuse_within=0.2)
            assert await _idle_then(pool, "POST", b"{}") == (200, b"ok")
            await pool.close()
            return up.connections, up.lost

    assert run(main()) == (2, [])  # a new connection; nothing lost


def test_without_the_window_the_post_is_lost():
    """The control: the old behaviour (any idle connection for any request) loses the POST."""

    async def main():
        async with KeepAliveUpstream() as up:
            pool = ConnectionPool("127.0.0.1", up.port, unsafe_reuse_within=60)
            with pytest.raises(UpstreamProtocolError):
                await _idle_then(pool, "POST", b"{}")
            await pool.close()
            return up.lost

    assert run(main()) == [b"POST"]


def test_a_replayable_request_reuses_and_is_retried():
    async def main():
        async with KeepAliveUpstream() as up:
            pool = ConnectionPool("127.0.0.1", up.port, unsafe_reuse_within=0.2)
            assert (await fetch(pool))[2] == b"ok"
            await asyncio.sleep(KEEPALIVE + 0.1)
            assert (await fetch(pool, "PUT", b"/", b"{}", [(b"host", b"x"), (b"content-length", b"2")]))[2] == b"ok"
            await pool.close()
            return up.connections, up.lost

    assert run(main()) == (2, [b"PUT"])  # reused, met the close, replayed on a new one


def test_a_post_reuses_a_connection_idle_within_the_window():
    async def main():
        async with KeepAliveUpstream() as up:
            pool = ConnectionPool("127.0.0.1", up.port, unsafe_reuse_within=5)
            assert (await fetch(pool))[2] == b"ok"
            assert (await fetch(pool, "POST", b"/", b"{}", [(b"host", b"x"), (b"content-length", b"2")]))[2] == b"ok"
            await pool.close()
            return up.connections

    assert run(main()) == 1


def test_connections_idle_past_idle_timeout_are_closed_not_reused():
    async def main():
        async with KeepAliveUpstream() as up:
            pool = ConnectionPool("127.0.0.1", up.port, idle_timeout=0.2)
            assert (await fetch(pool))[2] == b"ok"
            await asyncio.sleep(0.3)
            assert (await fetch(pool))[2] == b"ok"
            closed_by_pool = await _until(lambda: up.eof_seen >= 1)  # before the pool is closed
            await pool.close()
            return up.connections, up.lost, closed_by_pool

    assert run(main()) == (2, [], True)


async def _until(condition, seconds: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True
