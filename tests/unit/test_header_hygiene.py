"""The choke point before the upstream: a header with a control character or a bad name is
never written, whoever produced it; identity values have exactly one safe encoding."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.config.model import UpstreamConfig
from bastion.gateway.proxy import UnsafeHeader, UpstreamPool, open_upstream
from bastion.http import Request, identity_header_value, unsafe_header

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

names = st.one_of(st.sampled_from([b"x-a", b"authorization", b"x-bastion-subject"]), st.binary(min_size=0, max_size=12))
values = st.one_of(st.sampled_from([b"ok", b"a\tb", b"v\r\nx: y", b"\x00"]), st.binary(max_size=24))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(names, values), max_size=8))
def test_unsafe_header_finds_exactly_the_unwritable_headers(headers):
    bad = [k for k, v in headers if TOKEN.fullmatch(k) is None or CTL.search(v) is not None]
    found = unsafe_header(headers)
    if bad:
        assert found == bad[0][:64]
    else:
        assert found is None


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_identity_values_are_safe_and_decode_back(text):
    try:
        value = identity_header_value(text)
    except ValueError:
        assert any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)
        return
    assert unsafe_header([(b"x-bastion-subject", value)]) is None
    assert value.isascii() and value == value.strip(b" \t")
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):  # lone surrogates cannot round-trip
        assert unquote(value.decode("ascii")) == text


def test_the_choke_point_refuses_before_connecting():
    """The pool points at a closed port: had it tried to connect, the error would be a 502."""
    pool = UpstreamPool("u", UpstreamConfig(urls=["http://127.0.0.1:9"]))

    async def receive():
        return {"type": "http.request", "body": b""}

    req = Request("GET", "/x", b"", [], None, None, False, "http", "t", receive)
    for headers in (
        [(b"x-bastion-subject", b"alice\r\nx-bastion-subject: admin")],
        [(b"bad name", b"v")],
        [(b"x-a", b"\x00")],
    ):
        with pytest.raises(UnsafeHeader):
            asyncio.run(open_upstream(pool, req, list(headers), None))
