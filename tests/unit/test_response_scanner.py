"""The response filter's one-pass pre-check (`_Scanner`, hyperscan) and its one-search splice
(`json_splice.find_members`) against what they replaced, kept callable for this: the byte scans
(`ResponseFilter._precheck_scans`, `_may_match_scans`) and `json_splice.member_spans`.

Differential, three ways: on random byte soups made of the pieces the pre-check looks for (names
in any case, split by a Kelvin sign or a backslash, `\\u`, card digits with spaces and dashes
between them, `eyJ`, `-----BEGIN `), the scanner's verdict equals the scans' (a false "clean"
would be a leak; here even a false "maybe" fails, so the test sees any change); on random JSON
documents the filter with the scanner gives the same JSON as the filter with the byte scans, as
the filter without any pre-check and as a reference that parses everything, and no filtered name
or value is left in its text (duplicate members included)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bastion.json_splice import find_members, member_spans, splice, substitute
from bastion.json_stream import JsonRewriter
from bastion.pipeline import PolicyEnv
from bastion.policies.response_filter import (
    _KELVIN,
    _NAMES,
    ResponseFilter,
    ResponseFilterConfig,
    _has_card,
    valid_json,
)
from tests.unit.test_response_prefilter import all_members, dump, reference
from tests.unit.test_response_prefilter import documents as base_documents

FIELDS = ["password", "ssn", "api_key", "token", "secret_key", "secret"]

pytestmark = pytest.mark.skipif(
    ResponseFilter(ResponseFilterConfig(), PolicyEnv()).scanner is None, reason="hyperscan not installed"
)


def policy(mode: str = "remove", scanner: bool = True, prefilter: bool = True, values=None) -> ResponseFilter:
    config = ResponseFilterConfig(fields=FIELDS, mode=mode)
    if values is not None:
        config = ResponseFilterConfig(fields=FIELDS, mode=mode, values=values)
    p = ResponseFilter(config, PolicyEnv())
    if not scanner:
        p.scanner = None  # the byte scans
    if not prefilter:
        p.needles = None  # every answer parsed and walked
    return p


# ---- the scanner's verdict is the byte scans' verdict, on any bytes ----------------------------

PIECES = [
    b'"',
    b"\\",
    b"\\u",
    b"\\U",
    b"u",
    b":",
    b" ",
    b"-",
    b",",
    b"{",
    b"}",
    b"0",
    b"4",
    b"1111",
    b"4111 1111",
    b"1111-1111-",
    b"123456789012",
    b"eyJ",
    b"EYJ",
    b"ey",
    b"J",
    b"-----BEGIN ",
    b"-----BEGIN",
    b"----",
    b"BEGIN ",
    _KELVIN,
    _KELVIN[:2],
    b"\xe2",
    b"\xaa",
    "é".encode(),
    b'"password"',
    b'"PassWord"',
    b'"passwor',
    b'd"',
    b'"to',
    b"KEN",
    b'en"',
    b'"ssn"',
    b'"SSN',
    b'"api_key"',
    b'"API_KEY"',
    b'"secret',
    b"_key",
    b'"secret_KEY"',
    b"secret",
    b"password",
    b'"token"',
]
soups = st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join)


@settings(max_examples=1500, deadline=None)
@given(soups, st.sampled_from([None, [], ["card"], ["jwt"], ["private_key"], ["card", "jwt", "private_key"]]))
@example(b'"to' + _KELVIN + b'en"', None)
@example(b'"pass\\u0077ord"', None)
@example(b"4111 1111-1111  1111 1", ["card"])
@example(b"411111111111", ["card"])  # 12 digits: not yet a card run
def test_scanner_verdict_is_the_byte_scans_verdict(soup, values):
    p = policy(values=values)
    assert p.scanner is not None
    verdict, hay, patterns = p._precheck(soup)
    old_verdict, old_hay, old_patterns = p._precheck_scans(soup)
    assert verdict == old_verdict
    if verdict == _NAMES:
        assert hay == old_hay
        assert sorted(x.pattern for x in patterns) == sorted(x.pattern for x in old_patterns)
    assert p.may_match(soup) == p._may_match_scans(soup, p.needles)
    text = soup.decode("utf-8", "replace")  # the stream pre-checks elements as str
    assert p.may_match(text) == p._may_match_scans(text.encode("utf-8", "surrogatepass"), p.needles)


def test_the_card_pattern_is_the_card_run_check():
    """The scanner's card pattern finds exactly the texts `_values_unescaped` flags (13 digits
    with only spaces and dashes between them), a superset of what `_has_card` filters."""
    p = policy(values=["card"])
    rnd = random.Random(7)
    for _ in range(3000):
        text = "".join(rnd.choice("0123456789 -x") for _ in range(rnd.randrange(40)))
        raw = text.encode()
        assert p.may_match(raw) == p._may_match_scans(raw, p.needles)
        if _has_card(text):
            assert p.may_match(raw)


# ---- find_members is member_spans -------------------------------------------------------------


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base_documents, st.integers(0, 2**32), st.booleans())
def test_find_members_is_member_spans(doc, seed, dups):
    p = policy()
    body = dump(doc, random.Random(seed), dups).encode()
    verdict, hay, patterns = p._precheck(body)
    if verdict != _NAMES:
        return
    spans = member_spans(hay, patterns)
    assert find_members(hay, [p.member_patterns[x] for x in patterns]) == spans


@pytest.mark.parametrize(
    "body",
    [
        b'{"password":1}',
        b'{"a":1 , "PASSWORD" : "x\\"y" ,"b":[1]}',
        b'{"password": {"a": 1}}',
        b'{"x\\"password": 1}',
        b'{"password": [1]}',
        b'{"password":-1.5E+3\n}',
        b'{"password": true,"password":null}',
        b'["password", {"password" :false}]',
    ],
)
def test_find_members_examples(body):
    p = policy()
    verdict, hay, patterns = p._precheck(body)
    assert verdict == _NAMES
    assert find_members(hay, [p.member_patterns[x] for x in patterns]) == member_spans(hay, patterns)


# ---- the filter's output, whole and streamed --------------------------------------------------

values_st = st.sampled_from(
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "41 11 11 11 11 11 11 11",
        "4-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1",
        "x4111111111111111y",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2ln",
        "-----BEGIN EC PRIVATE KEY-----\nabc",
        "-----BEGIN PRIVATE KEY-----",
        "1700000000000",
        "ok",
    ]
)
keys_st = st.sampled_from(
    ["password", "PASSWORD", "Token", "to\u212aen", "secret_key", "SECRET_Key", "secret", "ssn", "id", "a"]
)
documents = (
    st.recursive(
        values_st | st.integers() | st.none(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys_st, inner, max_size=4),
        max_leaves=30,
    )
    | base_documents
)


def strings(doc: Any) -> list[str]:
    """The string values inside containers (a top-level scalar is not filtered, by design)."""
    out: list[str] = []
    stack = [doc] if isinstance(doc, (dict, list)) else []
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.integers(0, 2**32), st.sampled_from(["remove", "mask"]), st.booleans())
@example({"to\u212aen": "x", "password": 1}, 0, "remove", False)
@example({"a": "4111 1111 1111 1111", "password": 1}, 0, "mask", False)
@example({"a": {"password": "p"}, "b": [{"secret": 1}]}, 0, "remove", True)
def test_scanner_filter_equals_the_scans_and_the_full_path(doc, seed, mode, dups):
    body = dump(doc, random.Random(seed), dups).encode()
    new, scans, full = policy(mode), policy(mode, scanner=False), policy(mode, prefilter=False)
    got = new.rewrite_whole(body)
    expected = reference(full, body)
    assert json.loads(got) == json.loads(scans.rewrite_whole(body)) == json.loads(full.rewrite_whole(body)) == expected
    for key, value in all_members(got):  # every member, a duplicate a parse drops included
        if key.lower().replace("\u212a", "k") in FIELDS:
            assert not new.remove and value == new.mask
    for text in strings(json.loads(got)):
        assert text == new.mask or not new.value_sensitive(text)
    if not new.may_match(body):
        assert got is body
    stream = JsonRewriter(new, remove=new.remove, mask=new.mask, element_bytes=16)
    assert json.loads(stream.feed(body) + stream.finish()) == expected


def test_scratch_per_thread():
    """Scans release the GIL, so each thread gets its own scratch space."""
    import threading

    p = policy()
    body = json.dumps({"users": [{"password": "x", "a": i} for i in range(2000)]}).encode()
    expected = p.rewrite_whole(body)
    results: list[bytes] = []

    def run() -> None:
        for _ in range(20):
            results.append(p.rewrite_whole(body))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 80
    assert b"password" not in expected


# ---- substitute (one re.subn per name) is the splice --------------------------------------------


def _substituted(p: ResponseFilter, body: bytes) -> tuple[bytes, int] | None:
    verdict, hay, patterns = p._precheck(body)
    assert verdict == _NAMES
    return substitute(body, hay, [p.substitutions[x] for x in patterns])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.integers(0, 2**32), st.sampled_from(["remove", "mask"]), st.booleans())
def test_substitute_is_the_splice(doc, seed, mode, dups):
    p = policy(mode)
    body = dump(doc, random.Random(seed), dups).encode()
    verdict, hay, patterns = p._precheck(body)
    if verdict != _NAMES or not valid_json(body):
        return
    spans = find_members(hay, [p.member_patterns[x] for x in patterns])
    done = substitute(body, hay, [p.substitutions[x] for x in patterns])
    if done is not None:
        assert spans is not None and done[1] == len(spans)
        assert json.loads(done[0]) == json.loads(splice(body, spans, None if p.remove else p.mask_json))
        assert json.loads(done[0]) == reference(policy(mode, prefilter=False), body)


@pytest.mark.parametrize("mode", ["remove", "mask"])
@pytest.mark.parametrize(
    "body",
    [
        b'{"a":1,"Password":2,"b":3}',  # another case: not matched by the case-exact pattern
        b'{"a":1,"password":2,"b":["password"]}',  # the needle as a value
        b'{"a":"\\"password","password":2,"b":3}',  # the needle after a backslash
        b'{"x \\"password": 1, "b": 2}',  # ... and followed by a member's `:` and value
        b'{"x \\"password": 1, "password": 2, "b": 3}',
        b'{"a":1,"password":{"x":1},"b":3}',  # a container value
        b'{"a":1,"password":[1],"b":3}',
    ],
)
def test_substitute_declines_what_the_count_does_not_prove(body, mode):
    p = policy(mode)
    assert _substituted(p, body) is None
    assert json.loads(p.rewrite_whole(body)) == reference(policy(mode, prefilter=False), body)


@pytest.mark.parametrize(
    ("body", "mode", "expected"),
    [
        (b'{"a":1,"password" : "x\\"y" ,"b":2}', "remove", {"a": 1, "b": 2}),
        (b'[{"password":-1.5E+3,"b":2},{"password":null,"c":[]}]', "remove", [{"b": 2}, {"c": []}]),
        (b'{"password":true}', "mask", {"password": "[FILTERED]"}),
        (b'{"a":1,"password":2}', "mask", {"a": 1, "password": "[FILTERED]"}),
    ],
)
def test_substitute_examples(body, mode, expected):
    p = policy(mode)
    done = _substituted(p, body)
    assert done is not None and json.loads(done[0]) == expected
    assert json.loads(p.rewrite_whole(body)) == expected


def test_the_last_member_of_an_object_is_spliced_instead():
    p = policy()
    body = b'{"a":1,"password":2}'
    assert _substituted(p, body) is None  # no comma after it: the splice takes it
    assert json.loads(p.rewrite_whole(body)) == {"a": 1}


@pytest.mark.parametrize("name", [", ", " x", ":a", "]", "}b", ",", ":true,"])
def test_names_that_may_begin_at_a_closing_quote_turn_the_precheck_off(name):
    """`"name` must open a string wherever it is found: a name beginning with what may follow a
    closing quote could be found across two strings (`", "` in `["x", ":", "}"]`, which the
    splice once cut to `["x}"]`)."""
    p = ResponseFilter(ResponseFilterConfig(fields=[name, "password"]), PolicyEnv())
    assert p.needles is None and p.scanner is None
    for body in (b'["x", ":", "}"]', b'{"a":["x", ":", "}"],"password":1}', b'{"k":true,":":1}'):
        assert json.loads(p.rewrite_whole(body)) == reference(p, body)
