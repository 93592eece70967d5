"""Red team (session 7, s7-rt-lead), in process: the response filter's sequence mode
(`JsonRewriter(sequence=True)`, NDJSON / JSON Lines / json-seq) attacked with generated
sequences cut at every offset. Written from the code and docs/policies.md only.

Invariants: what comes out (of any prefix of the input, fed in any chunking) holds no filtered
name or value for a lenient line reader (each line, or each RS-separated piece, read with
json.loads, unreadable pieces skipped) nor for ijson's multiple_values reader; the output does
not depend on the chunking; unfiltered records and the separators come out byte for byte; a
record goes out once the feed that completes its line has been made (a live stream)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sequence_readers import all_leaks, leaks, lenient_docs

from bastion.json_stream import JsonRewriter, StreamError
from bastion.policies.response_filter import ResponseFilter, ResponseFilterConfig

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
CARD = "4111 1111 1111 1111"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----"
FILTERS = {
    "remove": ResponseFilter(ResponseFilterConfig(), None),
    "mask": ResponseFilter(ResponseFilterConfig(mode="mask", mask="**"), None),
}


def rewriter(flt: ResponseFilter, **kw: Any) -> JsonRewriter:
    return JsonRewriter(flt, remove=flt.remove, mask=flt.mask, sequence=True, **kw)


# ---- readers ------------------------------------------------------------------------------------


# ---- generators -----------------------------------------------------------------------------------

NAMES = ["password", "token", "secret", "id", "name", "a", "Password", "TOKEN", "api_key", "user"]


@st.composite
def name_text(draw: Any) -> str:
    name = draw(st.sampled_from(NAMES))
    out = []
    for ch in name:
        if draw(st.integers(0, 5)) == 0:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


SCALARS = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["1.0000000000000001", "1e400", "-0.0", "true", "null", "12345678901234567890123"]),
    st.sampled_from([JWT, CARD, PEM, "plain", "x y", ""]).map(json.dumps),
)


def value_text(depth: int) -> Any:
    if depth <= 0:
        return SCALARS
    sub = value_text(depth - 1)
    return st.one_of(
        SCALARS,
        st.lists(sub, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(name_text(), sub), max_size=4).map(
            lambda ms: "{" + ",".join(f"{k}:{v}" for k, v in ms) + "}"
        ),
    )


RECORD = value_text(3)
SEPARATORS = st.sampled_from(["\n", "\r\n", "\x1e", "\n\n", " ", "\t\n", "\x1e\n", "\n\x1e"])


@st.composite
def sequences(draw: Any) -> tuple[bytes, list[int]]:
    records = draw(st.lists(RECORD, min_size=1, max_size=6))
    lead = draw(st.sampled_from(["", "\x1e", "\n", " "]))
    text = lead
    for r in records:
        text += r + draw(SEPARATORS)
    body = text.encode()
    cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=8))))
    return body, cuts


def feed_all(flt: ResponseFilter, body: bytes, cuts: list[int]) -> tuple[bytes, list[bytes]]:
    """The output of `body` fed in the pieces `cuts` makes, and the output after each feed;
    a StreamError ends it (what came out before stays)."""
    r = rewriter(flt)
    outs: list[bytes] = []
    bounds = [0, *cuts, len(body)]
    try:
        for a, b in zip(bounds, bounds[1:], strict=False):
            outs.append(r.feed(body[a:b]))
        outs.append(r.finish())
    except StreamError:
        outs.append(b"<cut>")
    return b"".join(outs), outs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=sequences(), mode=st.sampled_from(["remove", "mask"]))
def test_sequence_output_leaks_nothing_and_is_chunking_independent(seq: tuple[bytes, list[int]], mode: str) -> None:
    body, cuts = seq
    flt = FILTERS[mode]
    whole, _ = feed_all(flt, body, [])
    chunked, outs = feed_all(flt, body, cuts)
    assert chunked == whole, (body, cuts)
    # every prefix of what was sent is clean (a client reading a live stream as it comes)
    sent = b""
    for o in outs:
        sent += o
        assert all_leaks(sent, flt) == [], (body, sent)
    if not whole.endswith(b"<cut>"):
        # each record equals the reference: parsed, filtered in Python
        got = lenient_docs(whole)
        assert leaks(got, flt) == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(
        st.sampled_from(['{"id":1,"name":"n"}', "[1,2,3]", '"plain"', "12345678901234567890123", '{"x":1.10}']),
        min_size=1,
        max_size=5,
    ),
    seps=st.lists(SEPARATORS, min_size=5, max_size=5),
    cut=st.integers(0, 400),
)
def test_unfiltered_records_and_separators_come_out_byte_for_byte(
    records: list[str], seps: list[str], cut: int
) -> None:
    body = "".join(r + s for r, s in zip(records, seps, strict=False)).encode()
    cut = min(cut, len(body))
    out, _ = feed_all(FILTERS["remove"], body, [cut])
    assert out == body


def _record(size: int) -> bytes:
    return ('{"id":7,"note":"' + "x" * size + '"}').encode()


@settings(max_examples=100, deadline=None)
@given(size=st.integers(20, 5000), tail=st.integers(1, 200))
@example(size=1000, tail=10)
def test_a_record_goes_out_when_the_feed_completing_its_line_is_made(size: int, tail: int) -> None:
    rec = _record(size) + b"\n"
    tail = min(tail, len(rec) - 1)
    r = rewriter(FILTERS["remove"])
    first = r.feed(rec[:-tail])
    second = r.feed(rec[-tail:])
    assert first + second == rec


def test_records_complete_in_one_feed_go_out_at_once() -> None:
    """What holds: a record whose line completes in the feed it started in goes out then."""
    r = rewriter(FILTERS["remove"])
    for i in range(50):
        rec = _record(i * 37) + b"\n"
        assert r.feed(rec) == rec
    half = _record(3000) + b"\n"
    assert r.feed(half[:1500]) == b""
    assert r.feed(half[1500:]) == half  # the last half: over the eighth


def test_a_secret_split_at_every_offset_never_leaks() -> None:
    body = b'\x1e{"id":1,"pass\\u0077ord":"hunter2","n":[{"token":"t"}]}\r\n\x1e"' + JWT.encode() + b'"\n'
    body += b'{"password":1,"password":2,"a":{"secret":{"x":1}}}\n'
    for mode, flt in FILTERS.items():
        whole, _ = feed_all(flt, body, [])
        assert b"<cut>" not in whole
        assert b"hunter2" not in whole and JWT.encode() not in whole
        for i in range(len(body) + 1):
            out, outs = feed_all(flt, body, [i])
            assert out == whole, (mode, i)
            for j in range(len(outs)):
                assert all_leaks(b"".join(outs[: j + 1]), flt) == []


def test_a_record_over_the_element_size_is_filtered_level_by_level() -> None:
    big = '{"id":1,"items":[' + ",".join('{"k":%d,"password":"p%d"}' % (i, i) for i in range(6000)) + "]}"
    body = (big + "\n" + big + "\n").encode()
    assert len(big) > 64 * 1024
    flt = FILTERS["remove"]
    for cuts in ([], [70_000], list(range(0, len(body), 4093))):
        out, _ = feed_all(flt, body, cuts)
        assert b"password" not in out
        docs = lenient_docs(out)
        assert len(docs) == 2 and all_leaks(out, flt) == []


def test_numbers_a_double_cannot_hold_keep_their_digits_in_a_filtered_record() -> None:
    body = b'{"n":123456789012345678901234567890,"f":0.12345678901234567891,"e":1e400,"password":"x"}\n'
    out, _ = feed_all(FILTERS["remove"], body, [])
    assert out == b'{"n":123456789012345678901234567890,"f":0.12345678901234567891,"e":1e400}\n'


def test_garbage_between_records_is_refused_not_passed() -> None:
    for body in (
        b'{"a":1}\nnot json\n{"password":"x"}\n',
        b'{"a":1}\n{"password":"x"\x1e}\n',
        b'{"a":1}\nNaN\n',
        b'{"a":1}\n{"a":1}}\n{"password":"x"}\n',
    ):
        out, _ = feed_all(FILTERS["remove"], body, [])
        assert out.endswith(b"<cut>"), body
        assert b"password" not in out


def _feed_time(body: bytes, size: int) -> float:
    r = rewriter(FILTERS["remove"], max_string=64 * 1024 * 1024)
    t = time.perf_counter()
    for i in range(0, len(body), size):
        r.feed(body[i : i + size])
    r.finish()
    return time.perf_counter() - t


def test_feeding_a_long_string_in_small_reads_is_linear() -> None:
    body = b'{"a":"' + b"x" * (8 << 20) + b'"}\n'
    big = min(_feed_time(body, 65536) for _ in range(2))
    small = _feed_time(body, 1024)
    assert small < 4 * big + 0.2, (small, big)


def _scanned(body: bytes, size: int) -> tuple[int, int]:
    """(tries, characters a try had in its window in total) feeding `body` in `size` pieces."""
    r = rewriter(FILTERS["remove"], max_string=64 * 1024 * 1024)
    tries = [0, 0]
    run = r._run

    def counted(final: bool) -> None:
        tries[0] += 1
        tries[1] += len(r.buf) - r.pos
        run(final)

    r._run = counted  # type: ignore[method-assign]
    for i in range(0, len(body), size):
        r.feed(body[i : i + size])
    r.finish()
    return tries[0], tries[1]


@pytest.mark.parametrize("size", [1, 7, 64, 1024])
def test_line_ends_in_every_read_do_not_make_retries_quadratic(size: int) -> None:
    """The need_line rule: an incomplete record retried on a line end only after an eighth more
    text. A record under the element size (one C parse per try) with white space line ends
    between its members, fed in tiny reads that each hold a line end: the characters tried in
    total stay within a constant times the body."""
    record = "{" + ",\n".join('"k%d":%d' % (i, i) for i in range(4000)) + "}\n"
    body = (record * 3).encode()
    assert len(record) < 64 * 1024
    tries, scanned = _scanned(body, size)
    assert scanned <= 12 * len(body), (tries, scanned, len(body))


# ---- sniffed bodies (BodyJob, as the gateway runs it) ---------------------------------------------


def _through_body_job(body: bytes, ctype: bytes, cuts: list[int]) -> bytes | None:
    """The body a client gets for an answer of type `ctype` (None: refused)."""
    from types import SimpleNamespace

    from bastion.response_body import DEFAULT_RULES, BodyJob, Unfilterable, body_kind

    flt = FILTERS["remove"]
    resp = SimpleNamespace(
        headers=[(b"content-type", ctype)], status=200, get_header=lambda k: ctype if k == b"content-type" else None
    )
    try:
        job = BodyJob(None, resp, SimpleNamespace(log_fields={}), [flt], body_kind(resp, DEFAULT_RULES), DEFAULT_RULES)  # type: ignore[arg-type]
        bounds = [0, *cuts, len(body)]
        out = b"".join(job.feed(body[a:b]) for a, b in zip(bounds, bounds[1:], strict=False))
        return out + job.finish()
    except Unfilterable:
        return None


def _strict_sequence(body: bytes) -> bool:
    """Does a strict reader read the whole body as JSON texts, one a line or one after each RS
    (json.loads on bytes skips a byte order mark)?"""
    for sep, other in ((b"\n", b"\x1e"), (b"\x1e", b"\n")):
        try:
            [json.loads(p) for p in body.replace(other, b" ").split(sep) if p.strip()]
            return True
        except ValueError:
            pass
    return False


_LEADS = [b"", b" ", b"\n", b"\x1e", b"\xef\xbb\xbf", b"1", b'"s"', b"[]", b"{}", b"null", b"\t", b"\n\xef\xbb\xbf"]


@settings(max_examples=300, deadline=None)
@given(
    a=st.sampled_from(_LEADS),
    b=st.sampled_from(_LEADS),
    sep=st.sampled_from([b"\n", b"\x1e", b" "]),
    cut=st.integers(0, 40),
    ctype=st.sampled_from([b"text/plain", b"", b"text/json"]),
)
@example(a=b"\x1e", b=b"", sep=b"\n", cut=0, ctype=b"text/plain")
def test_a_sniffed_body_read_whole_as_a_sequence_leaks_nothing(
    a: bytes, b: bytes, sep: bytes, cut: int, ctype: bytes
) -> None:
    body = a + b + sep + b'{"id":1,"password":"hunter2"}\n'
    if not _strict_sequence(body):
        return
    out = _through_body_job(body, ctype, [min(cut, len(body))])
    assert out is None or all_leaks(out, FILTERS["remove"]) == [], (body, out)


@settings(max_examples=200, deadline=None)
@given(
    recs=st.lists(
        st.sampled_from(['{"id":1,"password":"x"}', '[{"token":"t"}]', '{"a":[1,2]}']), min_size=1, max_size=4
    ),
    sep=st.sampled_from(["\n", "\r\n", " ", "\n\x1e"]),
    lead=st.sampled_from(["", " ", "\n", "\ufeff"]),
    cut=st.integers(0, 100),
    ctype=st.sampled_from([b"text/plain", b"", b"text/json", b"text/html"]),
)
def test_a_sniffed_sequence_starting_with_a_container_is_filtered(recs, sep, lead, cut, ctype) -> None:
    """What holds: a sniffed sequence whose first text is an object or array is filtered."""
    body = (lead + sep.join(recs) + "\n").encode()
    out = _through_body_job(body, ctype, [min(cut, len(body))])
    assert out is None or all_leaks(out, FILTERS["remove"]) == [], (body, out)
    if not lead.startswith("\ufeff"):
        assert out is not None and b"password" not in out and b"token" not in out
