"""The streaming JSON filter against a reference: for any document, any chunking and any
element size, the output parses, equals the simple recursive filter, and no filtered name survives."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import orjson
import pytest
from helpers import names_in
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bastion.json_stream import JsonRewriter, StreamError
from bastion.pipeline import PolicyEnv
from bastion.policies.response_filter import ResponseFilter, ResponseFilterConfig

FIELDS = ["password", "ssn", "secret"]


def make_policy(mode: str = "remove", values: bool = True) -> ResponseFilter:
    cfg = ResponseFilterConfig(
        fields=FIELDS, field_patterns=["x-.*-token"], mode=mode, values=["card", "private_key", "jwt"] if values else []
    )
    return ResponseFilter(cfg, PolicyEnv())


def reference(doc: Any, policy: ResponseFilter) -> Any:
    """The filter as one recursive function over a parsed document: what the stream must equal."""
    names = {f.lower() for f in FIELDS}

    def sensitive_name(k: str) -> bool:
        k = k.lower()
        return k in names or re.fullmatch("x-.*-token", k) is not None

    def sensitive_value(v: Any) -> bool:
        return isinstance(v, str) and policy.check_values and policy.value_sensitive(v)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if sensitive_name(k) or sensitive_value(v):
                    if not policy.remove:
                        out[k] = policy.mask
                    continue
                out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [policy.mask if sensitive_value(v) else walk(v) for v in node]
        return node

    if sensitive_value(doc):  # the whole answer one sensitive string: masked, as in a list
        return policy.mask
    return walk(doc)


def dump(doc: Any, rnd: random.Random) -> str:
    """JSON text with random white space and random \\u escapes in names and strings."""

    def s(text: str) -> str:
        out = []
        for ch in text:
            if ch in '"\\' and rnd.random() < 0.5:
                out.append("\\" + ch)  # the short escapes \" and \\ too
            elif ch in '"\\' or ord(ch) < 0x20 or rnd.random() < 0.15:
                out.append("\\u%04x" % ord(ch) if ord(ch) < 0x10000 else orjson.dumps(ch).decode()[1:-1])
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'

    def ws() -> str:
        return rnd.choice(["", "", " ", "\n  ", "\t"])

    def go(node: Any) -> str:
        if isinstance(node, dict):
            return "{" + ws() + ",".join(ws() + s(k) + ws() + ":" + ws() + go(v) + ws() for k, v in node.items()) + "}"
        if isinstance(node, list):
            return "[" + ws() + ",".join(ws() + go(v) + ws() for v in node) + "]"
        if isinstance(node, str):
            return s(node)
        return orjson.dumps(node).decode()

    return ws() + go(doc) + ws()


def run(policy: ResponseFilter, data: bytes, cuts: list[int], element: int) -> bytes:
    stream = JsonRewriter(policy, remove=policy.remove, mask=policy.mask, element_bytes=element)
    out, last = [], 0
    for c in sorted(set(c % (len(data) + 1) for c in cuts)):
        out.append(stream.feed(data[last:c]))
        last = c
    out.append(stream.feed(data[last:]))
    out.append(stream.finish())
    return b"".join(out)


keys = st.sampled_from(
    [
        "password",
        "Password",
        "PASSWORD",
        "ssn",
        "secret",
        "name",
        "id",
        "x-api-token",
        "x-token",
        "passwords",
        "pass",
        "note",
        "é",
        "😀",
        'a"b',
        "c\\",
        '\\"',
    ]
) | st.text(max_size=6)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(
        [
            "4111 1111 1111 1111",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2ln",
            "-----BEGIN RSA PRIVATE KEY-----x",
            "1234 5678 9012 3456",
            "ok",
            'q"',
            "\\",
            '\\\\"',
        ]
    )
    | st.text(max_size=20)
)
documents = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5), max_leaves=40
)


def check(doc: Any, seed: int, cuts: list[int], element: int, mode: str) -> None:
    policy = make_policy(mode)
    text = dump(doc, random.Random(seed)).encode()
    out = run(policy, text, cuts, element)
    got = orjson.loads(out)  # valid JSON
    assert got == reference(orjson.loads(text), policy)
    if mode == "remove":
        assert not names_in(got) & {"password", "ssn", "secret", "x-api-token"}
    # the whole-body path (orjson) gives the same answer
    whole = policy.rewrite_whole(text)
    assert orjson.loads(whole) == got


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    documents,
    st.integers(0, 2**32),
    st.lists(st.integers(0, 10_000), max_size=8),
    st.sampled_from([1, 8, 64, 65536]),
    st.sampled_from(["remove", "mask"]),
)
@example({"a": [[{"pass\u0077ord": 1}]]}, 0, [3, 5], 1, "remove")
@example([[["x", {"ssn": [1, 2]}], [{"secret": {"a": [1]}}]]], 1, [1, 2, 3, 4, 5, 6], 1, "remove")
@example({"password": {"password": [{"password": 1}]}, "ok": 1}, 2, [10], 1, "mask")
def test_stream_equals_reference(doc, seed, cuts, element, mode):
    check(doc, seed, cuts, element, mode)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    documents,
    st.integers(0, 2**32),
    st.lists(st.integers(0, 10_000), max_size=16),
    st.sampled_from([1, 2, 8, 64, 65536]),
    st.sampled_from(["remove", "mask"]),
)
def test_stream_equals_reference_long(doc, seed, cuts, element, mode):
    check(doc, seed, cuts, element, mode)


def test_escaped_names_are_filtered_decoded():
    policy = make_policy()
    body = b'{"pass\\u0077ord": "x", "n": [{"S\\u0053N": 1, "ok": "\\u0041"}]}'
    for element in (1, 65536):
        assert orjson.loads(run(policy, body, [], element)) == {"n": [{"ok": "A"}]}


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1',
        b'{"a" 1}',
        b"[1, 2,]",
        b'{"a": tru}',
        b"{'a': 1}",
        b"[1] [2]",
        b'{"a": NaN}',
        b"[01]",
        b'{"a": "\x01"}',
        b"\xff[]",
        b'{"a":1}}',
    ],
)
@pytest.mark.parametrize("element", [1, 65536])
def test_malformed_json_is_an_error(body, element):
    with pytest.raises(StreamError) as info:
        run(make_policy(), body, [2], element)
    assert info.value.kind == "malformed"


def test_limits_on_depth_and_string_length():
    policy = make_policy()
    deep = b"[" * 2000 + b"]" * 2000
    with pytest.raises(StreamError) as info:
        JsonRewriter(policy, remove=True, mask="", element_bytes=16, max_depth=100).feed(deep)
    assert info.value.kind == "too-large"
    long = b'["' + b"a" * 5000
    with pytest.raises(StreamError) as info:
        JsonRewriter(policy, remove=True, mask="", element_bytes=16, max_string=1024).feed(long)
    assert info.value.kind == "too-large"
    # deep, but within the limit: fine, and the C scanner's recursion limit is not in the way
    deep = b"[" * 5000 + b'{"password":1}' + b"]" * 5000
    stream = JsonRewriter(policy, remove=True, mask="", max_depth=10_000)
    out = stream.feed(deep[:7000]) + stream.feed(deep[7000:]) + stream.finish()
    assert out == b"[" * 5000 + b"{}" + b"]" * 5000


def test_empty_body_passes():
    stream = JsonRewriter(make_policy(), remove=True, mask="")
    assert stream.feed(b"  ") + stream.finish() == b""


# --- numbers a double cannot hold --------------------------------------------------------------
long_numbers = (
    st.integers(min_value=-(10**40), max_value=10**40)
    | st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(lambda d: d.is_finite())
    | st.sampled_from(["1e400", "-1E-400", "0.1000000000000000055511151231257827", "123456789.123456789"])
)


def _exact_text(node: Any) -> str:
    if isinstance(node, dict):
        return "{" + ",".join(orjson.dumps(k).decode() + ":" + _exact_text(v) for k, v in node.items()) + "}"
    if isinstance(node, list):
        return "[" + ",".join(_exact_text(v) for v in node) + "]"
    if node is None or (isinstance(node, str) and not node[:1].isdigit() and not node.startswith("-")):
        return orjson.dumps(node).decode()
    text = str(node)  # an int, a Decimal, or a number written as text above
    return text if "." in text or "e" in text.lower() or text.lstrip("-").isdigit() else text + ".0"


def _exactly(text: str | bytes) -> Any:
    import decimal
    import json

    return json.loads(text, parse_float=decimal.Decimal)


exact_documents = st.recursive(
    long_numbers | st.sampled_from(["ok", None]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    exact_documents,
    st.lists(st.integers(0, 10_000), max_size=6),
    st.sampled_from([1, 8, 65536]),
    st.sampled_from(["remove", "mask"]),
)
@example({"password": 1, "n": 100000000000000000001}, [], 65536, "remove")
@example([{"Pass\u0077ord": 1, "n": [-98765432109876543210987]}], [], 1, "mask")
def test_filtered_answers_keep_every_number_exactly(doc, cuts, element, mode):
    """Generated: documents holding integers beyond 64 bits, decimals of any length and exponents
    beyond a double's range. Whatever is filtered, through the stream (any chunking and element
    size) and the whole-body path, every number that is sent is the number that came, digit for
    digit (read back with Decimal), and the filtered names are gone."""
    policy = make_policy(mode)
    text = _exact_text(doc).encode()
    want = reference(_exactly(text), policy)
    for out in (run(policy, text, cuts, element), policy.rewrite_whole(text)):
        assert _exactly(out) == want, (text, out)


# --- sequences of JSON texts (NDJSON, JSON Lines, json-seq) --------------------------------------
separators = st.sampled_from(["\n", "\r\n", "\x1e", "\n\x1e", " ", "\n\n", "\t"])


def read_sequence(text: str) -> tuple[list[Any], list[str]]:
    """The texts of a sequence and what stands between them (a reader that splits nothing)."""
    decoder = json.JSONDecoder()
    values, gaps, pos = [], [], 0
    seps = re.compile(r"[ \t\n\r\x1e]*")
    while True:
        end = seps.match(text, pos).end()
        gaps.append(text[pos:end])
        if end >= len(text):
            return values, gaps
        value, pos = decoder.raw_decode(text, end)
        values.append(value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(separators, documents), min_size=1, max_size=6),
    separators,
    st.integers(0, 2**32),
    st.lists(st.integers(0, 10_000), max_size=8),
    st.sampled_from([1, 8, 64, 65536]),
    st.sampled_from(["remove", "mask"]),
)
def test_a_sequence_is_filtered_text_by_text(records, last, seed, cuts, element, mode):
    """Generated: JSON texts joined by the separators of NDJSON, JSON Lines and json-seq (RS),
    fed in any chunking. Every text comes out equal to the reference filter of that text, the
    separators come out as they came, and no filtered name survives."""
    policy = make_policy(mode)
    rnd = random.Random(seed)
    text = "".join(sep + dump(doc, rnd) for sep, doc in records) + last
    stream = JsonRewriter(policy, remove=policy.remove, mask=policy.mask, element_bytes=element, sequence=True)
    data = text.encode()
    out, prev = [], 0
    for c in sorted(set(c % (len(data) + 1) for c in cuts)):
        out.append(stream.feed(data[prev:c]))
        prev = c
    out.append(stream.feed(data[prev:]) + stream.finish())
    values, gaps = read_sequence(b"".join(out).decode())
    sent, sent_gaps = read_sequence(text)
    assert values == [reference(v, policy) for v in sent]
    assert gaps == sent_gaps
    if mode == "remove":
        assert not set().union(*(names_in(v) for v in values)) & {"password", "ssn", "secret", "x-api-token"}


def test_a_sequence_sends_each_text_when_its_line_ends():
    """A live NDJSON stream: a record is sent once its line is complete, not when the next one
    arrives (the retry rule waits for the buffer to double otherwise)."""
    policy = make_policy()
    stream = JsonRewriter(policy, remove=True, mask=policy.mask, sequence=True)
    assert stream.feed(b'{"a":1,"pass') == b""
    assert stream.feed(b'word":2,"b":[1,2,3]}\n') == b'{"a":1,"b":[1,2,3]}\n'
    assert stream.feed(b'{"c":3}') == b'{"c":3}'  # (complete at its brace)
    assert stream.feed(b"\n12") == b"\n"  # (a number may go on: it waits for its end)
    assert stream.feed(b"\n") == b"12\n"
    assert stream.finish() == b""


def test_one_text_is_not_a_sequence():
    policy = make_policy()
    stream = JsonRewriter(policy, remove=True, mask=policy.mask)
    with pytest.raises(StreamError):
        stream.feed(b'{"a":1}\n{"b":2}')
        stream.finish()
