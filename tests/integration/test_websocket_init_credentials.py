"""A `connection_init` is forwarded to the upstream as the client wrote it, and GraphQL servers
read a credential from its payload (Apollo's connectionParams, graphql-ws' context). Found from
outside (session 5): a socket authenticated by one token (an Authorization header, a token
subprotocol, or the connection_init itself) could carry another, never checked, in the payload —
under another key, under `headers`, in another case — and the upstream received it; a token the
gateway refused on a public route reached the upstream inside the payload.

Now: a second, different credential closes the socket (4400 `ambiguous-credentials`, as two
credentials over HTTP are a 400); a refused one is taken out of the payload before it is
forwarded. Generated: where the checked token travels, which key carries the other one."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from helpers import ThreadedUvicorn, run_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

SECRET = "i" * 40
ISS = "https://issuer.init.test"
AUTH = {
    "schemes": {
        "bearer": {"type": "jwt", "issuers": [{"issuer": ISS, "algorithms": ["HS256"], "keys": [{"secret": SECRET}]}]}
    }
}


def token(sub: str) -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISS, "sub": sub, "iat": now, "exp": now + 600}, SECRET, algorithm="HS256")


ALICE, MALLORY = token("alice"), token("mallory")


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        offered = scope.get("subprotocols") or []
        await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            self.messages.append(m.get("text") or "")
            await send({"type": "websocket.send", "text": "ack"})


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[Recorder, str]]:
    rec = Recorder()
    with ThreadedUvicorn(rec) as srv:
        yield rec, srv.url


@pytest.fixture(scope="module")
def gateway(recorder: tuple[Recorder, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _, url = recorder
    config = {
        "upstreams": {"u": {"urls": [url]}},
        "routes": [
            {"path": "/private/*", "upstream": "u", "policies": {"auth": AUTH}},
            {"path": "/public/*", "upstream": "u", "policies": {"auth": {**AUTH, "require": []}}},
        ],
    }
    with run_gateway(config, tmp_path_factory.mktemp("gw")) as gw:
        yield f"ws://127.0.0.1:{gw.port}"


def encode(init: dict[str, Any], form: str = "text") -> str | bytes:
    """The message as sent: plain text, a binary frame (graphql-ws reads it as text), or with its
    `type` value written with a JSON escape (any JSON reader decodes it)."""
    text = json.dumps(init)
    if form == "escaped":
        text = text.replace('"connection_init"', '"connection\\u005finit"')
    return text.encode() if form == "binary" else text


async def exchange(url: str, init: dict[str, Any], form: str = "text", **kw: Any) -> list[str]:
    seen: list[str] = []
    async with connect(url, subprotocols=kw.pop("subprotocols", ["graphql-transport-ws"]), open_timeout=10, **kw) as ws:
        await ws.send(encode(init, form))
        try:
            while True:
                seen.append(str(await asyncio.wait_for(ws.recv(), 1.0)))
        except (TimeoutError, ConnectionClosed) as exc:
            if isinstance(exc, ConnectionClosed) and exc.rcvd is not None:
                seen.append(f"close {exc.rcvd.code} {exc.rcvd.reason}")
    return seen


def placed(key: str, value: str) -> dict[str, Any]:
    if key.lower().startswith("headers."):
        outer, inner = key.split(".", 1)
        return {outer: {inner: value}}
    return {key: value}


KEYS = [
    "Authorization",
    "authorization",
    "AUTHORIZATION",
    "authToken",
    "token",
    "accessToken",
    "access_token",
    "headers.Authorization",
    "Headers.authorization",
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    via=st.sampled_from(["header", "subprotocol", "init"]),
    key=st.sampled_from(KEYS),
    bare=st.booleans(),
    form=st.sampled_from(["text", "binary", "escaped"]),
)
def test_a_second_credential_in_connection_init_closes_the_socket(
    recorder: tuple[Recorder, str], gateway: str, via: str, key: str, bare: bool, form: str
) -> None:
    if via == "init":
        form = "text"  # (the credential read before the handshake is checked comes from a text frame)
    rec, _ = recorder
    other = MALLORY if bare else "Bearer " + MALLORY
    payload = placed(key, other)
    kw: dict[str, Any] = {}
    if via == "header":
        kw["additional_headers"] = {"Authorization": "Bearer " + ALICE}
    elif via == "subprotocol":
        kw["subprotocols"] = ["graphql-transport-ws", "bearer." + ALICE]
    else:  # the checked one first in the payload, the other beside it
        payload = {"authToken": ALICE, **{k: v for k, v in payload.items() if k.lower() != "authtoken"}}
        if key == "authToken":
            payload["token"] = other
    before = len(rec.messages)
    seen = asyncio.run(exchange(gateway + "/private/x", {"type": "connection_init", "payload": payload}, form, **kw))
    assert seen == ["close 4400 ambiguous-credentials"], seen
    assert not any(MALLORY in m for m in rec.messages[before:])


def test_the_same_credential_twice_is_fine(recorder: tuple[Recorder, str], gateway: str) -> None:
    init = {"type": "connection_init", "payload": {"Authorization": "Bearer " + ALICE}}
    seen = asyncio.run(exchange(gateway + "/private/x", init, additional_headers={"Authorization": "Bearer " + ALICE}))
    assert seen == ["ack"]


@pytest.mark.parametrize("key", ["Authorization", "token", "headers.Authorization"])
def test_a_refused_credential_is_taken_out_of_the_payload(
    recorder: tuple[Recorder, str], gateway: str, key: str
) -> None:
    rec, _ = recorder
    forged = jwt.encode({"iss": ISS, "sub": "root", "exp": int(time.time()) + 60}, "x" * 40, algorithm="HS256")
    before = len(rec.messages)
    init = {"type": "connection_init", "payload": {**placed(key, "Bearer " + forged), "lang": "en"}}
    seen = asyncio.run(exchange(gateway + "/public/x", init))
    assert seen == ["ack"]  # a public route: the socket goes on, anonymous
    forwarded = json.loads(rec.messages[before])
    assert forged not in rec.messages[before] and forwarded["payload"]["lang"] == "en", forwarded
