"""Red team, session 4, WebSockets: attacks on the gateway's WebSocket proxy from the outside,
each one a finding that was real before its fix (docs/websockets.md). A recording upstream
(raw ASGI, accepts the first offered subprotocol, echoes) tells whether an attack reached it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import ThreadedUvicorn, run_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


class Recorder:
    """An upstream that records every handshake's headers and every message it receives."""

    def __init__(self) -> None:
        self.handshakes: list[dict[str, str]] = []
        self.messages: list[str | bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        self.handshakes.append({k.decode(): v.decode("latin-1") for k, v in scope["headers"]})
        await receive()
        offered = scope.get("subprotocols") or []
        await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            data = m.get("text") if m.get("text") is not None else m.get("bytes")
            self.messages.append(data)
            await send({"type": "websocket.send", "text": "echo"})


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[Recorder, str]]:
    rec = Recorder()
    with ThreadedUvicorn(rec) as srv:
        yield rec, srv.url


PUBLIC = {
    "schemes": {"bearer": {"type": "jwt", "issuers": [{"algorithms": ["HS256"], "keys": [{"secret": "s" * 40}]}]}},
    "require": [],
}


@pytest.fixture(scope="module")
def gateway(recorder: tuple[Recorder, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _, url = recorder
    config = {
        "upstreams": {"u": {"urls": [url]}},
        "routes": [
            {"path": "/graphql", "upstream": "u", "policies": {"graphql": {"limits": {"max_depth": 3}}}},
            # public, with auth: a GraphQL handshake without a credential waits for its connection_init
            {"path": "/capped/*", "upstream": "u", "websocket": {"max_per_principal": 2}, "policies": {"auth": PUBLIC}},
            {"path": "/*", "upstream": "u"},
        ],
    }
    with run_gateway(config, tmp_path_factory.mktemp("gw")) as gw:
        yield gw.url.replace("http://", "ws://")


DEEP = "subscription { a { b { c { d { e { f } } } } } }"


def _op(kind: str = "subscribe", query: str = DEEP, id_: str = "1") -> str:
    return json.dumps({"id": id_, "type": kind, "payload": {"query": query}})


async def _exchange(url: str, messages: list[str], **kw: Any) -> list[str]:
    """Send `messages`, then collect what comes back until 1 s of silence or the close."""
    seen: list[str] = []
    async with connect(url, open_timeout=10, **kw) as ws:
        for m in messages:
            await ws.send(m)
        try:
            while True:
                seen.append(str(await asyncio.wait_for(ws.recv(), 1.0)))
        except (TimeoutError, ConnectionClosed) as exc:
            if isinstance(exc, ConnectionClosed) and exc.rcvd is not None:
                seen.append(f"close {exc.rcvd.code} {exc.rcvd.reason}")
    return seen


def _deep_reached(rec: Recorder, since: int) -> bool:
    return any(isinstance(m, str) and "e { f" in m for m in rec.messages[since:])


# ---- 1. cross-site WebSocket hijacking through a made-up token subprotocol --------------------------
# Any page can offer `bearer.x` as a subprotocol; before the fix that exempted a cookie-carrying
# handshake from the Origin check, and the victim's cookie reached the upstream.
@pytest.mark.parametrize(
    "subprotocols", [["bearer.x"], ["chat", "bearer.anything"], ["BEARER.x"], ["graphql-transport-ws", "bearer.x"]]
)
def test_token_subprotocol_does_not_exempt_a_foreign_origin(recorder, gateway, subprotocols) -> None:
    rec, _ = recorder
    before = len(rec.handshakes)

    async def attack() -> None:
        async with connect(
            gateway + "/chat",
            origin="https://evil.example",  # type: ignore[arg-type]
            additional_headers={"Cookie": "sid=victim"},
            subprotocols=subprotocols,  # type: ignore[arg-type]
            open_timeout=10,
        ):
            pass

    with pytest.raises(InvalidStatus) as exc:
        asyncio.run(attack())
    assert exc.value.response.status_code == 403
    assert b"cross-site-websocket" in exc.value.response.body
    assert len(rec.handshakes) == before  # the upstream never saw the victim's cookie


def test_same_origin_with_token_subprotocol_still_passes(recorder, gateway) -> None:
    port = gateway.rsplit(":", 1)[1]
    seen = asyncio.run(
        _exchange(
            gateway + "/chat",
            ["hi"],
            origin=f"http://127.0.0.1:{port}",
            additional_headers={"Cookie": "sid=me"},
            subprotocols=["chat", "bearer.x"],
        )
    )
    assert seen[0] == "echo"


# ---- 2. the first message of an early-accepted GraphQL socket skipped every message check -----------
# With no Authorization, no cookie and no token subprotocol, the gateway accepts a GraphQL client
# first to read its connection_init. A `subscribe` sent as that first message was forwarded to the
# upstream without the guard (nor the WAF, nor the size limit) looking at it.
@pytest.mark.parametrize(("protocol", "kind"), [("graphql-transport-ws", "subscribe"), ("graphql-ws", "start")])
def test_operation_sent_as_the_first_message_is_guarded(recorder, gateway, protocol, kind) -> None:
    rec, _ = recorder
    before = len(rec.messages)
    seen = asyncio.run(_exchange(gateway + "/graphql", [_op(kind)], subprotocols=[protocol]))
    assert not _deep_reached(rec, before)
    assert seen and '"type":"error"' in seen[0] and "depth" in seen[0]


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(depth=st.integers(4, 30), protocol=st.sampled_from(["graphql-transport-ws", "graphql-ws"]))
def test_no_too_deep_first_message_reaches_the_upstream(recorder, gateway, depth, protocol) -> None:
    rec, _ = recorder
    before = len(rec.messages)
    query = "subscription " + "{ f " * depth + "}" * depth
    kind = "subscribe" if protocol == "graphql-transport-ws" else "start"
    asyncio.run(_exchange(gateway + "/graphql", [_op(kind, query)], subprotocols=[protocol]))
    assert not any(isinstance(m, str) and query in m for m in rec.messages[before:])


def test_connection_init_then_operation_still_works(recorder, gateway) -> None:
    rec, _ = recorder
    before = len(rec.messages)
    init = json.dumps({"type": "connection_init", "payload": {}})
    seen = asyncio.run(
        _exchange(gateway + "/graphql", [init, _op(query="subscription { a }")], subprotocols=["graphql-transport-ws"])
    )
    assert rec.messages[before:] == [init, _op(query="subscription { a }")]
    assert seen == ["echo", "echo"]


# ---- 3. no GraphQL subprotocol negotiated: operations went unchecked --------------------------------
# gqlgen (and others) speak graphql-ws to a client that offered no subprotocol; the guard only looked
# at sockets whose negotiated subprotocol was graphql-*. Now a JSON `subscribe`/`start` is checked
# on any socket of a guarded route, and a refused one closes it.
@pytest.mark.parametrize("subprotocols", [None, ["chat"], ["graphql-transport-ws2"]])
@pytest.mark.parametrize("kind", ["subscribe", "start"])
def test_operation_on_a_non_graphql_socket_is_guarded(recorder, gateway, subprotocols, kind) -> None:
    rec, _ = recorder
    before = len(rec.messages)
    seen = asyncio.run(
        _exchange(gateway + "/graphql", [json.dumps({"type": "connection_init"}), _op(kind)], subprotocols=subprotocols)
    )
    assert not _deep_reached(rec, before)
    assert seen[-1].startswith("close 1008")


def test_plain_messages_on_a_guarded_route_pass(recorder, gateway) -> None:
    seen = asyncio.run(_exchange(gateway + "/graphql", ["hello", '{"type":"ping"}', "[1,2]"], subprotocols=["chat"]))
    assert seen == ["echo", "echo", "echo"]


# ---- 4. sockets waiting for connection_init were not counted: unbounded accepted sockets --------
# Before the fix one client could hold any number of accepted (101) sockets, each for
# `connection_init_timeout`, without the per-principal cap (nor anything else) counting them.
def test_sockets_waiting_for_connection_init_count_against_the_client(gateway) -> None:
    async def attack() -> tuple[int, list[int]]:
        held = []
        refused = []
        try:
            for _ in range(5):
                try:
                    held.append(
                        await connect(gateway + "/capped/x", subprotocols=["graphql-transport-ws"], open_timeout=10)
                    )  # type: ignore[list-item]
                except InvalidStatus as exc:
                    refused.append(exc.response.status_code)
            return len(held), refused
        finally:
            for ws in held:
                await ws.close()

    n, refused = asyncio.run(attack())
    assert n == 2
    assert refused == [429, 429, 429]

    # released when they close (the gateway sees the disconnects a moment later): accepted again
    async def again() -> list[str]:
        for _ in range(50):
            try:
                return await _exchange(
                    gateway + "/capped/x",
                    [json.dumps({"type": "connection_init"})],
                    subprotocols=["graphql-transport-ws"],
                )
            except InvalidStatus:
                await asyncio.sleep(0.1)
        return []

    assert asyncio.run(again())[:1] == ["echo"]


# ---- 5. keys a case-insensitive server decodes: Go's encoding/json (gqlgen) ------------------------
# Go matches JSON keys to struct fields case-insensitively (with Unicode folding: "ſ" is "s"), the
# last one winning; the guard read only the exact lowercase keys. `{"Type": "start", ...}` was no
# operation to the guard and a `start` to gqlgen; `{"query": harmless, "Query": deep}` was checked
# as the harmless one. A message with a case variant of a protocol key is refused (4400).
_VARIANTS = [
    {"Type": "subscribe", "id": "1", "payload": {"query": DEEP}},
    {"TYPE": "start", "id": "1", "payload": {"query": DEEP}},
    {"type": "subscribe", "id": "1", "payload": {"query": "subscription { a }", "Query": DEEP}},
    {"type": "subscribe", "id": "1", "payload": {"query": "subscription { a }"}, "Payload": {"query": DEEP}},
    {"type": "start", "id": "1", "payload": {"query": "subscription { a }", "QUERY": DEEP}},
    {"type": "complete", "tYpe": "subscribe", "id": "1", "payload": {"query": DEEP}},
    {"type": "subscribe", "id": "1", "payload": {"query": "subscription { a }", "variable\u017f": {"v": "e { f"}}},
]


@pytest.mark.parametrize("message", _VARIANTS)
@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws", None])
def test_case_variant_keys_are_refused(recorder, gateway, message, protocol) -> None:
    rec, _ = recorder
    before = len(rec.messages)
    init = json.dumps({"type": "connection_init"})
    seen = asyncio.run(
        _exchange(gateway + "/graphql", [init, json.dumps(message)], subprotocols=[protocol] if protocol else None)
    )
    assert not _deep_reached(rec, before)
    assert seen[-1].startswith("close 4400")


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    key=st.sampled_from(["type", "payload", "query", "variables"]).flatmap(
        lambda k: st.tuples(*[st.sampled_from(sorted({c, c.upper()} | ({"\u017f"} if c == "s" else set()))) for c in k])
    )
)
def test_no_case_variant_of_a_protocol_key_carries_a_deep_operation(recorder, gateway, key) -> None:
    name = "".join(key)
    if name in ("type", "payload", "query", "variables"):
        return
    rec, _ = recorder
    before = len(rec.messages)
    low = name.casefold()
    message: dict[str, Any] = {"type": "subscribe", "id": "1", "payload": {"query": "subscription { a }"}}
    if low == "type":
        message[name] = "start"
        message["payload"] = {"query": DEEP}
        message["type"] = "ping"
    elif low == "payload":
        message[name] = {"query": DEEP}
    elif low == "query":
        message["payload"][name] = DEEP
    else:
        message["payload"][name] = {"v": "e { f"}
    asyncio.run(_exchange(gateway + "/graphql", [json.dumps(message)], subprotocols=["graphql-ws"]))
    assert not _deep_reached(rec, before)


# ---- 6. an unreachable revocation store kept sockets open, whatever `revocation_fail` said -----------
# The auth policy's `revocation_fail` defaults to `closed` (503 at the handshake); the open socket's
# periodic check treated an unreachable store as "not revoked" and kept going forever.
class Forwarder:
    """A TCP forwarder to Redis in its own thread, that can be cut (store unreachable)."""

    def __init__(self, port: int = 6379) -> None:
        import socket
        import threading

        self.target = port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[Any] = []
        self.cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while not self.cut:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a: Any, b: Any) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with _suppress():
                    s.close()

    def close(self) -> None:
        import socket

        self.cut = True
        for s in [self.sock, *self.conns]:
            with _suppress():
                s.shutdown(socket.SHUT_RDWR)
            with _suppress():
                s.close()


def _suppress() -> Any:
    import contextlib

    return contextlib.suppress(OSError)


def test_unreachable_revocation_store_closes_the_socket(recorder, tmp_path, redis_url) -> None:
    import time

    import jwt

    _, url = recorder
    fwd = Forwarder(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    secret = "r" * 40
    config = {
        "upstreams": {"u": {"urls": [url]}},
        "routes": [{"path": "/*", "upstream": "u", "websocket": {"revocation_check": 0.3}}],
        "policies": {
            "auth": {
                "revocation_store": f"redis://127.0.0.1:{fwd.port}/0",
                "schemes": {
                    "j": {
                        "type": "jwt",
                        "issuers": [
                            {"algorithms": ["HS256"], "keys": [{"secret": secret}], "required_claims": ["exp", "sub"]}
                        ],
                    }
                },
            }
        },
    }
    token = jwt.encode({"sub": "alice", "jti": "j1", "iat": int(time.time()), "exp": int(time.time()) + 600}, secret)

    async def session() -> str:
        async with connect(
            gw.url.replace("http://", "ws://") + "/x", additional_headers={"Authorization": "Bearer " + token}
        ) as ws:
            await ws.send("hi")
            assert await ws.recv() == "echo"
            fwd.close()  # the store goes away while the socket is open
            try:
                async with asyncio.timeout(20):
                    while True:
                        await ws.recv()
            except ConnectionClosed as exc:
                return f"{exc.rcvd.code} {exc.rcvd.reason}" if exc.rcvd else "no close frame"
            return "still open"

    try:
        with run_gateway(config, tmp_path) as gw:
            assert asyncio.run(session()) == "4401 revocation-unavailable"
    finally:
        fwd.close()


# ---- 7. a connection_init credential of any size became a header of the upstream's handshake --------
# The listener bounds a request head (431), but a 100 kB `authorization` in connection_init was
# lifted into an Authorization header and sent to the upstream, whose handshake then hung until
# the gateway's open timeout. (The credential is lifted only on routes with the auth policy: on others
# the connection_init is a message like any other, forwarded as sent.)
def test_oversized_connection_init_credential_is_refused(recorder, gateway) -> None:
    rec, _ = recorder
    before = len(rec.handshakes)
    init = json.dumps({"type": "connection_init", "payload": {"authorization": "Bearer " + "a" * 100_000}})
    seen = asyncio.run(_exchange(gateway + "/capped/x", [init], subprotocols=["graphql-transport-ws"]))
    assert seen == ["close 4400 connection_init credential too large"]
    assert len(rec.handshakes) == before


# ---- 8. an ambient Authorization (Basic, ...) exempted a cookie handshake from the Origin check --------
# A browser sends cached Basic/Digest/Negotiate credentials by itself, with the cookies, on a
# WebSocket opened by any page: they are no proof that the page is the site's own.
@pytest.mark.parametrize(
    "authorization", ["Basic dTpw", "basic dTpw", "Digest username=u", "Negotiate YII=", "NTLM TlRM"]
)
def test_ambient_authorization_does_not_exempt_a_foreign_origin(recorder, gateway, authorization) -> None:
    rec, _ = recorder
    before = len(rec.handshakes)

    async def attack() -> None:
        async with connect(
            gateway + "/chat",
            origin="https://evil.example",  # type: ignore[arg-type]
            additional_headers={"Cookie": "sid=victim", "Authorization": authorization},
            open_timeout=10,
        ):
            pass

    with pytest.raises(InvalidStatus) as exc:
        asyncio.run(attack())
    assert exc.value.response.status_code == 403
    assert len(rec.handshakes) == before


def test_bearer_header_still_exempts_a_foreign_origin(recorder, gateway) -> None:
    seen = asyncio.run(
        _exchange(
            gateway + "/chat",
            ["hi"],
            origin="https://evil.example",
            additional_headers={"Cookie": "sid=me", "Authorization": "Bearer t"},
        )
    )
    assert seen[0] == "echo"
