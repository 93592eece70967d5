"""The response filter's byte pre-check (`ResponseFilter.may_match`) and its byte splice
(`bastion.json_splice`): an answer the pre-check lets through untouched must be one the full
filter would not have changed, and a spliced answer must be the full filter's answer.
Differential: for random documents written with random escapes (`"pass\\u0077ord"`, `\\/`, upper
case, the Kelvin sign) and random duplicate members, the filter with the pre-check and without it
give the same JSON, both equal a reference that parses everything and checks every value, and no
filtered name is left anywhere in the text (a duplicate member included)."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bastion.json_stream import JsonRewriter
from bastion.pipeline import PolicyEnv
from bastion.policies.response_filter import _KELVIN, ResponseFilter, ResponseFilterConfig

FIELDS = ["password", "ssn", "api_key", "token"]


def policy(mode: str = "remove", prefilter: bool = True, fields: list[str] | None = None) -> ResponseFilter:
    p = ResponseFilter(ResponseFilterConfig(fields=fields or FIELDS, mode=mode), PolicyEnv())
    if not prefilter:
        p.needles = None  # may_match is then always True: every answer is parsed and walked
    return p


def reference(p: ResponseFilter, body: bytes) -> Any:
    """Parse everything, check every name and every value."""
    doc, _ = p.filter(json.loads(body), True)
    return doc


def dump(doc: Any, rnd: random.Random, dups: bool = False) -> str:
    """JSON text with random white space and random escapes: \\uXXXX (either case of hex), the
    short ones (\\" \\\\ \\/), and characters written as they are. Half the documents have no
    optional \\u escape at all (one anywhere makes the pre-check parse the answer)."""
    rate = rnd.choice([0.0, 0.0, 0.01, 0.1])

    def s(text: str) -> str:
        out = []
        for ch in text:
            r = rnd.random()
            if ch in '"\\/' and r < 0.7:
                out.append("\\" + ch)
            elif ch in '"\\' or ord(ch) < 0x20 or r < rate:
                code = "%04x" % ord(ch) if ord(ch) < 0x10000 else None
                if code is None:  # a pair of surrogates
                    out.append(json.dumps(ch)[1:-1])
                else:
                    out.append("\\u" + (code.upper() if rnd.random() < 0.5 else code))
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'

    def ws() -> str:
        return rnd.choice(["", "", " ", "\n  "])

    def go(node: Any) -> str:
        if isinstance(node, dict):
            items = list(node.items())
            if dups and items and rnd.random() < 0.5:  # a member written twice: JSON keeps the last
                k, _ = rnd.choice(items)
                items.insert(0, (k, rnd.choice(["x", 1, {"password": "p"}, {"TOKEN": [1]}, ["ssn"]])))
            return "{" + ",".join(ws() + s(k) + ws() + ":" + ws() + go(v) for k, v in items) + ws() + "}"
        if isinstance(node, list):
            return "[" + ",".join(ws() + go(v) for v in node) + ws() + "]"
        if isinstance(node, str):
            return s(node)
        return json.dumps(node)

    return ws() + go(doc) + ws()


keys = st.sampled_from(
    [
        "password",
        "PassWord",
        "pass\u0077ord",
        "pas\u212aword",  # not a name: a Kelvin sign lowers to "k"
        "to\u212aen",  # the Kelvin sign: "token" once lowered
        "TO\u212aEN",
        "api_key",
        "API_KEY",
        "api/key",
        "ssn",
        "SSN",
        "ssn ",
        "passwords",
        "id",
        "name",
        "\u0130d",
        "é",
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
            "4111-1111-1111-1111",
            "card 4111111111111111 here",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2ln",
            "-----BEGIN RSA PRIVATE KEY-----x",
            "1234 5678 9012 3456",
            "1700000000000",
            '"password"',
            "token",
            "ok",
            "\\",
        ]
    )
    | st.text(max_size=20)
)
documents = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5), max_leaves=40
)


def all_members(text: bytes) -> list[tuple[str, Any]]:
    """Every member of every object in `text`, duplicates included."""
    found: list[tuple[str, Any]] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found.extend(pairs)
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return found


def no_filtered_member(text: bytes, p: ResponseFilter) -> None:
    for key, value in all_members(text):  # a duplicate member that a parse drops included
        if key.lower() in FIELDS:
            assert not p.remove and value == p.mask


def check(doc: Any, seed: int, mode: str, dups: bool = False) -> None:
    body = dump(doc, random.Random(seed), dups).encode()
    on, off = policy(mode), policy(mode, prefilter=False)
    got = on.rewrite_whole(body)
    expected = reference(off, body)
    assert json.loads(got) == json.loads(off.rewrite_whole(body)) == expected
    no_filtered_member(got, on)
    # the stream (large answers) pre-checks each element's text: the same answer
    for element in (1, 16, 65536):
        stream = JsonRewriter(on, remove=on.remove, mask=on.mask, element_bytes=element)
        streamed = stream.feed(body) + stream.finish()
        assert json.loads(streamed) == expected
        no_filtered_member(streamed, on)
    if not on.may_match(body):
        assert got is body  # untouched: not even re-serialised


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.integers(0, 2**32), st.sampled_from(["remove", "mask"]))
@example({"pass\u0077ord": 1}, 0, "remove")
@example({"a": [{"to\u212aen": "x"}]}, 0, "remove")
@example({"a": "4111 1111 1111 1111"}, 0, "mask")
def test_prefilter_changes_nothing(doc, seed, mode):
    check(doc, seed, mode)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.integers(0, 2**32), st.sampled_from(["remove", "mask"]))
@example({"a": {"b": 1}}, 0, "remove")
def test_duplicate_members_are_filtered_too(doc, seed, mode):
    """A member written twice: each copy is filtered, whichever path the answer takes."""
    check(doc, seed, mode, dups=True)


@pytest.mark.parametrize(
    "body,expected",
    [
        (b'{"a": 1, "password": "x", "b": 2}', b'{"a": 1,  "b": 2}'),  # the comma after it goes
        (b'{"a": 1, "password": "x"}', b'{"a": 1}'),  # the last one: the comma before it goes
        (b'{"password": "x"}', b"{}"),
        (b'{"a":1,"password":2,"token":3}', b'{"a":1}'),  # neighbours, last of the object
        (b'{"password":2 , "token":3 ,"a":1}', b'{ "a":1}'),  # neighbours, first of the object
        (b'{"x":{"password":2}, "token" : null}', b'{"x":{}}'),
        (b'[{"Api_Key": "a\\"b"}, "token", {"k": "password"}]', b'[{}, "token", {"k": "password"}]'),  # names only
        (b'{"a": {"password": true}, "a": 2}', b'{"a": {}, "a": 2}'),  # a duplicate: still filtered
        (b'{"password": -1.5E+3,\n "ssn": "1"\n}', b"{}"),
    ],
)
def test_splice_examples(body, expected):
    """Answers whose only filtered content is members by name are spliced: the rest of the text
    stays as it came (white space and all)."""
    p = policy()
    assert p._precheck(body)[0] == 1  # _NAMES
    assert p.rewrite_whole(body) == expected
    masked = policy("mask").rewrite_whole(body)
    assert json.loads(masked) == json.loads(policy("mask", prefilter=False).rewrite_whole(body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"x \\"password": 1}',  # the needle's quote is escaped: the name is `x "password`
        b'{"password": {"a": 1}, "b": 2}',  # a container value: not proven by the bytes
        b'{"password": [1, "token"]}',
    ],
)
def test_splice_refuses_what_the_bytes_do_not_prove(body):
    from bastion.json_splice import member_spans

    p = policy()
    verdict, hay, patterns = p._precheck(body)
    assert verdict == 1 and member_spans(hay, patterns) is None
    assert json.loads(p.rewrite_whole(body)) == reference(p, body)


@pytest.mark.parametrize("element", [1, 16, 65536])
def test_a_duplicate_member_is_not_sent_as_it_came_from_the_stream(element):
    body = b'[{"a": {"password": "hunter2"}, "a": 2}, {"b": {"token": "t"}, "b": 1}]'
    p = policy()
    stream = JsonRewriter(p, remove=True, mask=p.mask, element_bytes=element)
    out = stream.feed(body) + stream.finish()
    assert b"hunter2" not in out and b"token" not in out and json.loads(out) == [{"a": 2}, {"b": 1}]


def test_a_duplicate_member_is_not_sent_as_it_came_from_the_full_path():
    """The full path (here because of a \\u escape) writes out the tree it checked: a duplicate
    member the parse dropped is not sent."""
    body = b'{"a": {"pass\\u0077ord": "hunter2"}, "a": 2}'
    assert policy().rewrite_whole(body) == b'{"a":2}'


@pytest.mark.parametrize(
    "body,filtered",
    [
        (b'{"pass\\u0077ord": "x"}', True),  # an escaped name is parsed, and found
        (b'{"PASSWORD": "x"}', True),
        (b'{"to\xe2\x84\xaaen": "x"}', True),  # Kelvin sign: "token" once lowered
        (b'{"a": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2ln"}', True),
        (b'{"a": "4111 1111 1111 1111"}', True),
        (b'{"a": "\\u0034111 1111 1111 1111"}', True),
        (b'{"passwords": "x", "my_password": 1, "note": "password"}', False),
        (b'{"a": "\\n\\/\\"", "b": [1, 2, 3]}', False),
    ],
)
def test_examples(body, filtered):
    p = policy()
    out = p.rewrite_whole(body)
    assert (out != body) is filtered
    assert (out is body) is (not filtered)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1',
        b'{"a": 1}x',
        b"{'a': 1}",
        b"{a: 1}",
        b'{"a": 1,}',
        b'{"a": NaN}',
        b'{"a": "\\x41"}',
        b'{"a": "\x01"}',
        b'{"a": "\xff"}',
        b'\xef\xbb\xbf{"a": 1}',
        '{"a": 1}'.encode("utf-16"),  # Python's json.loads reads it; this gateway refuses it
        '{"password": 1}'.encode("utf-16-le"),
        b'{"password" "x": 1}',
        b'{"password_hash": "x",}',  # the splice's preconditions start with valid JSON
    ],
)
def test_malformed_json_is_still_refused(body):
    from bastion.json_stream import StreamError

    with pytest.raises(StreamError):
        policy().rewrite_whole(body)


_JSONISH = b'{}[]",:\\ 0123456789.eE+-tfnulrsa\x00\x01\x7f\xff\xc3\xa9\t\n/'


@settings(max_examples=500, deadline=None)
@given(documents, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 2), st.integers(0, 40)), max_size=3))
def test_valid_json_accepts_only_what_strict_parsers_accept(doc, edits):
    """`valid_json` (simdjson) against orjson and the standard library on random documents with
    random byte edits: whatever it accepts, both accept."""
    from bastion.policies.response_filter import valid_json

    body = bytearray(dump(doc, random.Random(len(edits))).encode())
    for at, op, ch in edits:
        at = at % (len(body) + 1)
        c = _JSONISH[ch % len(_JSONISH)]
        if op == 0:
            body.insert(at, c)
        elif op == 1 and at < len(body):
            del body[at]
        elif at < len(body):
            body[at] = c
    data = bytes(body)
    if valid_json(data):
        orjson.loads(data)
        json.loads(data.decode("utf-8"))


def test_names_a_byte_search_cannot_find_turn_the_precheck_off():
    assert policy(fields=["a/b"]).needles is None  # may be written "a\/b"
    assert policy(fields=["pässword"]).needles is None  # lower-casing outside ASCII
    p = ResponseFilter(ResponseFilterConfig(fields=["x"], field_patterns=["x-.*"]), PolicyEnv())
    assert p.needles is None and p.may_match(b"{}")


def test_only_the_kelvin_sign_lowers_into_ascii():
    """What `may_match` relies on: outside ASCII, only U+212A lowers to ASCII alone."""
    ascii_only = [cp for cp in range(0x80, 0x110000) if chr(cp).lower().isascii()]
    assert ascii_only == [0x212A]
    assert _KELVIN == "\u212a".encode()


def test_bench_answer_passes_untouched_without_the_field():
    """The bench's 100 KB answer with the filtered field renamed: nothing to parse or rewrite."""
    items = [
        {"id": i, "name": f"user{i}", "email": f"u{i}@example.com", "digest": "$argon2id$v=19$m=65536"}
        for i in range(300)
    ]
    body = orjson.dumps({"users": items})
    p = policy(fields=["password_hash"])
    assert not p.may_match(body)
    assert p.rewrite_whole(body) is body
    assert p.may_match(body.replace(b'"digest"', b'"Password_Hash"'))
