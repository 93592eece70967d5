"""The shared decoding path: every coding round-trips through an encoder we did not write, output
is bounded whatever the input, and broken streams are refused, never passed."""

import gzip
import zlib

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.content_coding import CodingError, Decoder, decode_body, parse_codings, zstd

ENCODERS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,  # RFC 9110: zlib-wrapped
    "deflate-raw": lambda b: (lambda c: c.compress(b) + c.flush())(zlib.compressobj(wbits=-15)),
    "br": brotli.compress,
    "zstd": zstd.compress,
}


def encode(data: bytes, codings: list[str]) -> bytes:
    for c in codings:
        data = ENCODERS[c](data)
    return data


def header_name(c: str) -> str:
    return "deflate" if c == "deflate-raw" else c


@settings(max_examples=150, deadline=None)
@given(
    st.binary(max_size=200_000),
    st.lists(st.sampled_from(sorted(ENCODERS)), min_size=1, max_size=3),
    st.integers(1, 70_000),
)
def test_round_trip_in_any_chunking(data, codings, cut):
    body = encode(data, codings)
    dec = Decoder([header_name(c) for c in codings], max_output=10**9)
    out = b"".join(dec.feed(body[i : i + cut]) for i in range(0, len(body), cut))
    dec.finish()
    assert out == data


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=5000), st.sampled_from(sorted(ENCODERS)), st.data())
def test_truncated_streams_are_refused(data, coding, draw):
    body = encode(data, [coding])
    cut = draw.draw(st.integers(1, len(body) - 1)) if len(body) > 1 else 0
    with pytest.raises(CodingError):
        decode_body(body[:cut], [header_name(coding)], max_output=10**9)


@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_a_bomb_is_stopped_at_the_limit_not_after_it(coding):
    bomb = encode(b"\0" * (64 * 1024 * 1024), [coding])  # 64 MiB of zeros, tens of KiB coded
    dec = Decoder([header_name(coding)], max_output=4 * 1024 * 1024, max_ratio=10**9)
    produced = 0
    with pytest.raises(CodingError) as err:
        for i in range(0, len(bomb), 4096):
            produced += len(dec.feed(bomb[i : i + 4096]))
    assert err.value.kind == "too-large"
    assert produced <= 4 * 1024 * 1024


def test_ratio_limit():
    bomb = gzip.compress(b"a" * (8 * 1024 * 1024))
    with pytest.raises(CodingError) as err:
        decode_body(bomb, ["gzip"], max_output=10**9, max_ratio=100)
    assert err.value.kind == "too-large"


def test_codings_are_parsed_in_order_and_unknown_ones_refused():
    assert parse_codings([b"gzip, BR", None, b"identity", b"x-gzip"]) == ["gzip", "br", "gzip"]
    with pytest.raises(CodingError) as err:
        parse_codings([b"gzip, compress"])
    assert err.value.kind == "unsupported"


@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_garbage_is_refused(coding):
    with pytest.raises(CodingError):
        decode_body(b"this is not compressed at all, not even a little" * 3, [header_name(coding)], max_output=10**9)


def test_empty_body_decodes_to_empty():
    for c in ("gzip", "deflate", "br", "zstd"):
        assert decode_body(b"", [c], max_output=10) == b""


def test_brotli_output_past_the_slice_is_not_lost():
    """Regression (issue 22): brotli 1.2 holds output back past `output_buffer_limit` while
    `can_accept_more_data()` says True; a 100 KB JSON answer used to end "early"."""
    data = b"".join(b'{"id":%d,"name":"user %d"}' % (i, i) for i in range(20_000))
    enc = brotli.compress(data, quality=1)
    assert decode_body(enc, ["br"], max_output=10**9) == data
    dec = Decoder(["br"], max_output=10**9)
    out = b"".join(dec.feed(enc[i : i + 4096]) for i in range(0, len(enc), 4096))
    dec.finish()
    assert out == data
