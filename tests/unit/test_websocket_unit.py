"""gateway/websocket.py in isolation: generated inputs and the invariants the relay relies on."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.config.model import RouteConfig, WebSocketConfig
from bastion.gateway.websocket import (
    GRAPHQL_PROTOCOLS,
    SocketGuard,
    _init_token,
    _sendable,
    http_scope,
    offered_protocols,
)
from bastion.http import Request
from bastion.pipeline import Context, Pipeline

_token_chars = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1)
_protocols = st.lists(st.sampled_from(["chat.v1", "graphql-transport-ws", "graphql-ws", "mqtt", "x"]), max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    protocols=_protocols,
    tokens=st.lists(_token_chars, max_size=3),
    prefix=st.sampled_from(["bearer.", "Bearer.", "BEARER."]),
)
def test_token_subprotocols_never_offered_on(protocols, tokens, prefix):
    """Invariant: whatever mix of subprotocols and token entries a client offers, the list the
    gateway offers onwards holds no token, and every token becomes one Authorization header."""
    entries = protocols + [prefix + t for t in tokens]
    header = ", ".join(entries).encode()
    offered, found = offered_protocols([(b"sec-websocket-protocol", header)])
    assert not any(p.lower().startswith("bearer.") for p in offered)
    assert offered == [p for p in protocols]
    assert found == tokens
    scope = http_scope(
        {"type": "websocket", "path": "/", "headers": [(b"sec-websocket-protocol", header)]}, found, None
    )
    auth = [v for k, v in scope["headers"] if k == b"authorization"]
    assert auth == [b"Bearer " + t.encode() for t in tokens]
    assert scope["type"] == "http" and scope["method"] == "GET" and scope["bastion.websocket"] is True


def test_handshake_scheme_is_http_or_https():
    for ws, http in (("ws", "http"), ("wss", "https")):
        assert http_scope({"type": "websocket", "path": "/", "headers": [], "scheme": ws}, [], None)["scheme"] == http


@given(st.integers(min_value=-10, max_value=70000))
def test_sendable_close_codes(code):
    """Never a code RFC 6455 forbids on the wire (1005, 1006, 1015, out of range)."""
    out = _sendable(code)
    assert out not in (1005, 1006, 1015)
    assert 1000 <= out < 5000
    if 1000 <= code < 5000 and code not in (1005, 1006, 1015):
        assert out == code


def test_init_token_shapes():
    assert _init_token({"Authorization": "Bearer abc"}) == "Bearer abc"
    assert _init_token({"authToken": "abc"}) == "Bearer abc"
    assert _init_token({"headers": {"Authorization": "Bearer x"}}) == "Bearer x"
    assert _init_token({"other": "abc"}) is None
    assert _init_token("Bearer abc") is None
    assert _init_token({"token": 5}) is None


def test_route_websocket_false_shorthand():
    assert RouteConfig(path="/x", websocket=False).websocket.enabled is False
    assert RouteConfig(path="/x").websocket.enabled is True


async def _no_receive():
    return {}


def _guard(max_bytes: int, subprotocol: str | None = None) -> SocketGuard:
    req = Request("GET", "/", b"", [], None, None, False, "http", "h", _no_receive)
    cfg = WebSocketConfig(max_message_bytes=max_bytes, messages_per_second=None)
    return SocketGuard(req, Context(), Pipeline([]), cfg, subprotocol, "r")


@settings(max_examples=200, deadline=None)
@given(data=st.one_of(st.text(max_size=300), st.binary(max_size=300)), limit=st.integers(1, 400))
def test_size_limit_counts_wire_bytes(data, limit):
    """Invariant: a message passes iff its UTF-8 (or binary) length is within the limit, both ways."""
    guard = _guard(limit)
    size = len(data.encode() if isinstance(data, str) else data)
    verdict = asyncio.run(guard.check_in(data))
    assert (verdict.action == "pass") == (size <= limit)
    if verdict.action == "close":
        assert verdict.code == 1009
    assert (guard.check_out(data).action == "pass") == (size <= limit)


def test_per_connection_rate_uses_the_token_bucket():
    req = Request("GET", "/", b"", [], None, None, False, "http", "h", _no_receive)
    cfg = WebSocketConfig(messages_per_second="3/second burst 3")
    guard = SocketGuard(req, Context(), Pipeline([]), cfg, None, "r")

    async def go():
        return [(await guard.check_in("m")).action for _ in range(5)]

    actions = asyncio.run(go())
    assert actions[:3] == ["pass"] * 3 and actions[3] == "close"


def test_graphql_socket_non_json_closes_only_when_hooks_exist():
    from bastion.pipeline import Policy

    class HookPolicy(Policy):
        name = "hook"
        priority = 1

        async def on_ws_message(self, req, ctx, message):
            return None

    req = Request("GET", "/", b"", [], None, None, False, "http", "h", _no_receive)
    cfg = WebSocketConfig(messages_per_second=None)
    hooked = SocketGuard(req, Context(), Pipeline([HookPolicy(cfg, None)]), cfg, GRAPHQL_PROTOCOLS[0], "r")  # type: ignore[arg-type]
    verdict = asyncio.run(hooked.check_in("not json"))
    assert (verdict.action, verdict.code) == ("close", 4400)
    plain = SocketGuard(req, Context(), Pipeline([]), cfg, GRAPHQL_PROTOCOLS[0], "r")
    assert asyncio.run(plain.check_in("not json")).action == "pass"
