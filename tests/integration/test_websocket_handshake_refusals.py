"""A handshake the gateway refuses for a reason that does not depend on the credential is refused
at the handshake (an HTTP status, never a 101), whatever subprotocols it offers.

Before the fix, a handshake that offered a GraphQL subprotocol (graphql-transport-ws or
graphql-ws) without a credential was accepted (101) first, to read the credential from its
`connection_init`, and only then checked: an IP-refused client, a foreign Origin, an unknown
route, a bad path all got a socket that was closed afterwards. Generated: the refusal kind, the
offered subprotocols (order, extras, both GraphQL ones), and whether a first message follows.
Raw sockets, so the status line is read as sent."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import ThreadedUvicorn, run_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SECRET = "h" * 40
ISS = "https://issuer.hs.test"
AUTH = {
    "schemes": {
        "bearer": {"type": "jwt", "issuers": [{"issuer": ISS, "algorithms": ["HS256"], "keys": [{"secret": SECRET}]}]}
    }
}


class Recorder:
    """An upstream that counts the handshakes that reach it."""

    def __init__(self) -> None:
        self.handshakes = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        self.handshakes += 1
        await receive()
        offered = scope.get("subprotocols") or []
        await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
        while (await receive())["type"] != "websocket.disconnect":
            pass


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[Recorder, str]]:
    rec = Recorder()
    with ThreadedUvicorn(rec) as srv:
        yield rec, srv.url


@pytest.fixture(scope="module")
def port(recorder: tuple[Recorder, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    _, url = recorder
    config = {
        "upstreams": {"u": {"urls": [url]}},
        "routes": [
            {"path": "/ipdeny/*", "upstream": "u", "policies": {"ip_rules": {"block": ["127.0.0.0/8"]}, "auth": AUTH}},
            {
                "path": "/iphide/*",
                "upstream": "u",
                "policies": {"ip_rules": {"allow": ["10.0.0.0/8"], "status": 404}, "auth": AUTH},
            },
            {
                "path": "/cors/*",
                "upstream": "u",
                "policies": {
                    "cors": {"allow_origins": ["https://app.example"], "block_disallowed": True},
                    "auth": AUTH,
                },
            },
            {"path": "/origin/*", "upstream": "u", "policies": {"auth": AUTH}, "websocket": {"check_origin": "always"}},
            {"path": "/off/*", "upstream": "u", "policies": {"auth": AUTH}, "websocket": False},
            {"path": "/short/*", "upstream": "u", "policies": {"body_limit": {"max_uri_length": 64}, "auth": AUTH}},
            {"path": "/open/*", "upstream": "u", "policies": {"ip_rules": {"block": ["127.0.0.0/8"]}}},
        ],
    }
    with run_gateway(config, tmp_path_factory.mktemp("gw")) as gw:
        yield gw.port


# (target, extra headers, the status expected at the handshake)
REFUSALS = {
    "ip blocked": ("/ipdeny/graphql", [], 403),
    "ip not allowed, answered 404": ("/iphide/graphql", [], 404),
    "cors origin": ("/cors/graphql", [("Origin", "https://evil.example")], 403),
    "websocket origin (check_origin: always)": ("/origin/graphql", [("Origin", "https://evil.example")], 403),
    "websocket: false (auth first: 401)": ("/off/graphql", [], 401),
    "uri too long": ("/short/graphql?" + "x" * 100, [], 414),
    "no route": ("/nowhere/graphql", [], 404),
    "bad path": ("/ipdeny/%252e%252e/graphql", [], 400),
    "ip blocked, route without auth": ("/open/graphql", [], 403),
}


def handshake_status(port: int, target: str, protocols: list[str], headers: list[tuple[str, str]], first: bool) -> int:
    head = [
        f"GET {target} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: " + ", ".join(protocols),
        *(f"{k}: {v}" for k, v in headers),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        if first:  # a masked text frame: {"type":"connection_init"}, sent at once like an eager client
            payload = b'{"type":"connection_init"}'
            mask = b"\x01\x02\x03\x04"
            s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


protocol_offers = st.lists(
    st.sampled_from(["graphql-transport-ws", "graphql-ws", "chat", "v1.json"]), min_size=1, max_size=3, unique=True
).filter(lambda ps: any(p.startswith("graphql") for p in ps))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(REFUSALS)), protocols=protocol_offers, first=st.booleans())
def test_refused_handshake_is_refused_before_any_accept(
    recorder: tuple[Recorder, str], port: int, kind: str, protocols: list[str], first: bool
) -> None:
    rec, _ = recorder
    target, headers, expected = REFUSALS[kind]
    before = rec.handshakes
    assert handshake_status(port, target, protocols, headers, first) == expected
    assert rec.handshakes == before


def test_a_graphql_handshake_without_a_refusal_is_still_accepted_to_read_connection_init(port: int) -> None:
    # the counterpart: nothing refuses before the credential, so the socket is accepted (101) and
    # the credential awaited (the route's auth then decides on the connection_init)
    assert (
        handshake_status(port, "/cors/graphql", ["graphql-transport-ws"], [("Origin", "https://app.example")], True)
        == 101
    )
