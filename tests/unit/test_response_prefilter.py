"""The response filter's byte pre-check (`ResponseFilter.may_match`): an answer it lets through
untouched must be one the full filter would not have changed. Differential: for random documents
written with random escapes (`"pass\\u0077ord"`, `\\/`, upper case, the Kelvin sign), the filter
with the pre-check and without it give byte-identical output, and both equal a reference that
parses everything and checks every value."""

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


def dump(doc: Any, rnd: random.Random) -> str:
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
            return "{" + ",".join(ws() + s(k) + ws() + ":" + ws() + go(v) for k, v in node.items()) + ws() + "}"
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


def check(doc: Any, seed: int, mode: str) -> None:
    body = dump(doc, random.Random(seed)).encode()
    on, off = policy(mode), policy(mode, prefilter=False)
    got = on.rewrite_whole(body)
    assert got == off.rewrite_whole(body)  # byte for byte
    expected = reference(off, body)
    assert json.loads(got) == expected
    # the stream (large answers) pre-checks each element's text: the same answer
    for element in (1, 16, 65536):
        stream = JsonRewriter(on, remove=on.remove, mask=on.mask, element_bytes=element)
        assert json.loads(stream.feed(body) + stream.finish()) == expected
    if not on.may_match(body):
        assert got is body  # untouched: not even re-serialised


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.integers(0, 2**32), st.sampled_from(["remove", "mask"]))
@example({"pass\u0077ord": 1}, 0, "remove")
@example({"a": [{"to\u212aen": "x"}]}, 0, "remove")
@example({"a": "4111 1111 1111 1111"}, 0, "mask")
def test_prefilter_changes_nothing(doc, seed, mode):
    check(doc, seed, mode)


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


def test_malformed_json_is_still_refused_when_nothing_could_match():
    from bastion.json_stream import StreamError

    with pytest.raises(StreamError):
        policy().rewrite_whole(b'{"a": 1')


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
