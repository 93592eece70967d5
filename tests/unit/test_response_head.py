"""The response head the listener writes (`gateway/cycle.py`, `CoalescingCycle._write_head`):
generated header lists, written by the gateway's serialiser and by uvicorn's own `send`. Where
every name is an RFC 9110 token and no value holds a control character (HTAB aside), both write
the same bytes and frame the body the same way; otherwise the gateway's refuses the head before
anything is written (uvicorn lets non-token names such as empty or non-ASCII ones through)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from bastion.gateway.cycle import CoalescingCycle, HeadFirst

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class Wire:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def cycle(cls: type, wire: Any, method: str, keep_alive: bool, loop: asyncio.AbstractEventLoop) -> Any:
    transport = HeadFirst(wire, loop) if cls is CoalescingCycle else wire
    return cls(
        scope={"method": method, "type": "http"},
        transport=transport,
        flow=FlowControl(wire),
        logger=None,
        access_logger=None,
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: None,
    )


async def write_head(cls: type, message: dict, method: str, keep_alive: bool) -> tuple[Any, bytes, Any]:
    wire = Wire()
    c = cycle(cls, wire, method, keep_alive, asyncio.get_running_loop())
    try:
        await c.send(message)
    except RuntimeError as exc:
        return c, wire.data, exc
    await asyncio.sleep(0)  # the held head's flush (no body follows in this test)
    return c, wire.data, None


framing = st.sampled_from(
    [
        (b"content-length", b"12"),
        (b"Content-Length", b"0"),
        (b"transfer-encoding", b"chunked"),
        (b"Transfer-Encoding", b"gzip"),
        (b"connection", b"close"),
        (b"Connection", b"keep-alive, Close"),
        (b"connection", b"upgrade"),
    ]
)
names = st.one_of(
    st.sampled_from([b"content-type", b"X-Request-Id", b"set-cookie", b"x_b", b"", b"bad name", b"caf\xc3\xa9"]),
    st.binary(max_size=10),
)
values = st.one_of(st.sampled_from([b"ok", b"a\tb", b"v\r\nx: y", b"\x00", b"\x7f", b"\xff"]), st.binary(max_size=16))
headers = st.lists(st.one_of(framing, st.tuples(names, values)), max_size=10)


@settings(max_examples=600, deadline=None)
@given(
    headers,
    st.sampled_from([200, 204, 304, 404, 502]),
    st.sampled_from(["GET", "HEAD", "POST"]),
    st.booleans(),
    st.booleans(),
)
def test_the_head_is_uvicorns_or_refused(headers, status, method, keep_alive, as_tuple):
    message = {"type": "http.response.start", "status": status, "headers": tuple(headers) if as_tuple else headers}

    async def both() -> tuple:
        return await write_head(CoalescingCycle, message, method, keep_alive), await write_head(
            RequestResponseCycle, message, method, keep_alive
        )

    (ours, ours_out, ours_exc), (theirs, theirs_out, theirs_exc) = asyncio.run(both())
    safe = all(TOKEN.fullmatch(k) is not None and CTL.search(v) is None for k, v in headers)
    if not safe:
        assert ours_exc is not None and ours_out == b"" and not ours.response_started
        return
    assert theirs_exc is None and ours_exc is None
    assert ours_out == theirs_out
    assert (ours.chunked_encoding, ours.expected_content_length, ours.keep_alive) == (
        theirs.chunked_encoding,
        theirs.expected_content_length,
        theirs.keep_alive,
    )


@pytest.mark.parametrize(
    "header",
    [
        (b"x-a", b"v\r\nset-cookie: evil=1"),
        (b"x-a", b"v\nx"),
        (b"x-a", b"v\rx"),
        (b"x-a", b"v\x00"),
        (b"x-a\r\nx-b", b"v"),
        (b"x a", b"v"),
        (b"", b"v"),
        (b"x-\xc3\xa9", b"v"),
        (b"x:a", b"v"),
    ],
)
def test_injection_is_refused_before_anything_is_written(header):
    message = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0"), header]}
    c, out, exc = asyncio.run(write_head(CoalescingCycle, message, "GET", True))
    assert isinstance(exc, RuntimeError) and out == b"" and not c.response_started
