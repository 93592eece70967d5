"""WebSockets: a wss:// upstream under the upstream's TLS settings, and the per-principal message
rate shared by all of a principal's sockets through the Redis rate-limit store."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid

import pytest
import uvicorn
from helpers import run_gateway
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .test_tls import make_cert
from .test_websocket import token, upstream_app


@contextlib.contextmanager
def tls_upstream(cert, key):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        upstream_app, log_config=None, access_log=False, lifespan="off", ssl_certfile=str(cert), ssl_keyfile=str(key)
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    thread = threading.Thread(target=lambda: asyncio.run(server.serve([sock])), daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_wss_upstream_with_its_tls_settings(tmp_path):
    good = tmp_path / "good"
    other = tmp_path / "other"
    good.mkdir()
    other.mkdir()
    cert, key = make_cert(good)
    other_cert, _ = make_cert(other)
    with tls_upstream(cert, key) as port:
        url = f"https://localhost:{port}"
        cfg = {
            "upstreams": {
                "good": {"urls": [url], "ca_file": str(cert)},
                "wrong": {"urls": [url], "ca_file": str(other_cert)},
            },
            "routes": [{"path": "/good/*", "upstream": "good"}, {"path": "/wrong/*", "upstream": "wrong"}],
        }
        with run_gateway(cfg, tmp_path) as gw:

            async def go():
                async with connect(f"ws://127.0.0.1:{gw.port}/good/x") as ws:
                    await ws.send("over tls")
                    assert await ws.recv() == "over tls"
                with pytest.raises(InvalidStatus) as info:  # the upstream's certificate is not trusted
                    async with connect(f"ws://127.0.0.1:{gw.port}/wrong/x"):
                        pass
                assert info.value.response.status_code == 502

            run(go())


def test_principal_message_rate_across_sockets_in_redis(ws_upstream_url, redis_url, tmp_path):
    from .test_websocket import AUTH

    cfg = {
        "upstreams": {"ws": {"urls": [ws_upstream_url]}},
        "routes": [
            {
                "path": "/*",
                "upstream": "ws",
                "policies": {"auth": AUTH},
                "websocket": {"principal_messages": "6/minute", "messages_per_second": None, "store": redis_url},
            }
        ],
    }
    sub = "p-" + uuid.uuid4().hex[:8]  # a fresh key in the shared Redis
    hdr = {"Authorization": f"Bearer {token(sub=sub)}"}
    with run_gateway(cfg, tmp_path) as gw:

        async def go():
            a = await connect(f"ws://127.0.0.1:{gw.port}/a", additional_headers=hdr)
            b = await connect(f"ws://127.0.0.1:{gw.port}/b", additional_headers=hdr)
            for i in range(3):  # six messages over two sockets: the principal's budget
                for ws in (a, b):
                    await ws.send(str(i))
                    assert await ws.recv() == str(i)
            await a.send("seventh")
            with pytest.raises(ConnectionClosed) as closed:
                await a.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "principal-message-rate")
            await b.close()

        run(go())


@pytest.fixture(scope="module")
def ws_upstream_url():
    from helpers import ThreadedUvicorn

    with ThreadedUvicorn(upstream_app) as server:
        yield server.url


def test_open_sockets_keep_their_place_in_the_connection_caps(ws_upstream_url, tmp_path):
    """An upgraded connection still holds a file descriptor: it counts against
    max_connections_per_ip until it closes (then its place is free again)."""
    cfg = {
        "listeners": [{"host": "127.0.0.1", "port": 0, "max_connections_per_ip": 2}],
        "upstreams": {"ws": {"urls": [ws_upstream_url]}},
        "routes": [{"path": "/*", "upstream": "ws"}],
    }
    with run_gateway(cfg, tmp_path) as gw:
        gate = gw.server.gates[0]

        async def settle(n: int) -> int:
            for _ in range(100):  # the gateway notices closes asynchronously
                if gate.per_client.get("127.0.0.1", 0) == n:
                    break
                await asyncio.sleep(0.02)
            return gate.per_client.get("127.0.0.1", 0)

        async def go():
            a = await connect(f"ws://127.0.0.1:{gw.port}/a")
            b = await connect(f"ws://127.0.0.1:{gw.port}/b")
            assert await settle(2) == 2
            with pytest.raises(InvalidStatus) as info:  # a third connection from the address
                async with connect(f"ws://127.0.0.1:{gw.port}/c"):
                    pass
            assert info.value.response.status_code == 503
            await a.close()
            assert await settle(1) == 1
            c = await connect(f"ws://127.0.0.1:{gw.port}/c")
            await c.send("again")
            assert await c.recv() == "again"
            await b.close()
            await c.close()
            assert await settle(0) == 0

        run(go())


def test_handshake_trace_spans_and_propagation(ws_upstream_url, tmp_path):
    """The handshake is the request's span (its policies as children); the upstream connection a
    client span whose context the upstream receives in `traceparent`."""
    import json

    from bastion.policies.tracing import TracingConfig, provider_for

    from .test_tracing import finished

    name = f"bastion-ws-{tmp_path.name}"
    cfg = {
        "upstreams": {"ws": {"urls": [ws_upstream_url]}},
        "policies": {"tracing": {"exporter": "memory", "service_name": name}},
        "routes": [{"path": "/traced/*", "upstream": "ws"}],
    }
    memory = provider_for(TracingConfig(exporter="memory", service_name=name)).memory
    with run_gateway(cfg, tmp_path) as gw:
        memory.clear()

        async def go():
            async with connect(f"ws://127.0.0.1:{gw.port}/traced/x") as ws:
                await ws.send("headers")
                return dict(json.loads(await ws.recv())["headers"])

        seen = run(go())
        spans = {s.name: s for s in finished(memory, lambda ss: any(x.name == "GET /traced/*" for x in ss))}
    root = spans["GET /traced/*"]
    upstream = spans["websocket upstream ws"]
    assert upstream.parent.span_id == root.context.span_id
    assert "policy request_id" in spans
    trace_id, span_id = seen["traceparent"].split("-")[1:3]
    assert trace_id == format(root.context.trace_id, "032x")
    assert span_id == format(upstream.context.span_id, "016x")


def test_wss_to_a_tls_listener(ws_upstream_url, tmp_path):
    """wss:// to the gateway: the handshake is an https request (X-Forwarded-Proto, HSTS on the 101)."""
    import json
    import ssl

    cert, key = make_cert(tmp_path)
    cfg = {
        "listeners": [{"host": "127.0.0.1", "port": 0, "tls": {"cert": str(cert), "key": str(key)}}],
        "upstreams": {"ws": {"urls": [ws_upstream_url]}},
        "routes": [{"path": "/*", "upstream": "ws"}],
    }
    with run_gateway(cfg, tmp_path) as gw:

        async def go():
            ctx = ssl.create_default_context(cafile=str(cert))
            async with connect(f"wss://localhost:{gw.port}/x", ssl=ctx) as ws:
                await ws.send("headers")
                seen = dict(json.loads(await ws.recv())["headers"])
                return seen, ws.response.headers

        seen, answer = run(go())
    assert seen["x-forwarded-proto"] == "https"
    assert answer["strict-transport-security"].startswith("max-age=")
