"""Red team (session 6, s6-rt-filter): the response filter's fast paths (hyperscan pre-check,
`json_splice.substitute`, the splice, the full parse, the stream) attacked from outside, through
a real `bastion serve` in front of a real upstream on loopback that answers the bytes generated.

The invariant, on what the client receives: no filtered name or value is readable by any
reasonable JSON reader (orjson, Python's json, a reader that keeps the first of duplicate names,
one that sees every member, a streaming reader when ijson is installed); the answer is valid JSON
equal to the reference (the document parsed, filtered in Python, compared) or a refusal (502
problem+json); never a 500 or a traceback.
"""

from __future__ import annotations

import gzip
import itertools
import json
import sys
from typing import Any

import brotli
import orjson
import pytest
from helpers import ThreadedUvicorn, raw_request, run_gateway
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bastion.policies.response_filter import ResponseFilter, ResponseFilterConfig

try:  # a streaming reader (the bench extra installs it)
    import ijson
except ImportError:  # pragma: no cover
    ijson = None

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----"
CARDS = ["4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "5500 0000 0000 0004", "378282246310005"]

# routes -> response_filter config
ODD_FIELDS = ["user.secret", "$token", "@id", "pin code", "naïve", "pass", "password", "password_hash", "a-b"]
ROUTES: dict[str, dict[str, Any]] = {
    "rm": {},
    "mask": {"mode": "mask"},
    "odd": {"fields": ODD_FIELDS},
    "oddmask": {"fields": ODD_FIELDS, "mode": "mask", "mask": "**"},
    "stream": {"max_bytes": 1024},
}
FILTERS = {r: ResponseFilter(ResponseFilterConfig(**c), None) for r, c in ROUTES.items()}

ANSWERS: dict[str, tuple[int, list[tuple[bytes, bytes]], list[bytes]]] = {}
_ids = itertools.count()


async def bytes_app(scope, receive, send):
    """Answers what `ANSWERS` holds under the path's last segment: headers and body chunks."""
    if scope["type"] != "http":
        return
    status, headers, chunks = ANSWERS.pop(scope["path"].rsplit("/", 1)[-1])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    for i, c in enumerate(chunks):
        await send({"type": "http.response.body", "body": c, "more_body": i < len(chunks) - 1})
    if not chunks:
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rt6filter")
    with ThreadedUvicorn(bytes_app) as upstream:
        cfg = {
            "upstreams": {"up": {"urls": [upstream.url], "timeouts": {"connect": 10, "read": 30, "total": 60}}},
            "policies": {"audit": {"enabled": False}},
            "routes": [
                {"path": f"/{r}/*", "upstream": "up", "policies": {"response_filter": c}} for r, c in ROUTES.items()
            ],
        }
        with run_gateway(cfg, tmp) as g:
            yield g


def send_through(
    gateway,
    route: str,
    body: bytes,
    ctype: bytes | None = b"application/json",
    coding=None,
    chunk=0,
    status=200,
    extra=(),
):
    key = str(next(_ids))
    wire = body
    headers = list(extra)
    if ctype is not None:
        headers.append((b"content-type", ctype))
    if coding == "gzip":
        wire = gzip.compress(body)
        headers.append((b"content-encoding", b"gzip"))
    elif coding == "br":
        wire = brotli.compress(body)
        headers.append((b"content-encoding", b"br"))
    elif coding is not None:  # (header value, encoder)
        name, encode = coding
        wire = encode(body)
        headers.append((b"content-encoding", name))
    if chunk:
        chunks = [wire[i : i + chunk] for i in range(0, len(wire), chunk)]
    else:
        chunks = [wire]
        headers.append((b"content-length", str(len(wire)).encode()))
    ANSWERS[key] = (status, headers, chunks)
    return raw_request(gateway.port, "GET", f"/{route}/{key}", timeout=30)


# ---- readers of what the client got ----------------------------------------------------------


def _all_pairs(pairs):
    return ("__pairs__", pairs)


def every_member(text: bytes) -> Any:
    """A reader that sees every member, duplicates included."""
    return json.loads(text, object_pairs_hook=_all_pairs)


def first_wins(text: bytes) -> Any:
    def hook(pairs):
        out: dict = {}
        for k, v in pairs:
            out.setdefault(k, v)
        return out

    return json.loads(text, object_pairs_hook=hook)


def leaks(doc: Any, flt: ResponseFilter) -> list[str]:
    """Filtered names or values readable in a tree from `every_member`."""
    found = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple):
            for k, v in node[1]:
                if k.lower() in flt.names and (flt.remove or v != flt.mask):
                    found.append(f"name {k!r}")
                if isinstance(v, str) and flt.value_sensitive(v):
                    found.append(f"value {v[:30]!r} of {k!r}")
                stack.append(v)
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and flt.value_sensitive(node):
            found.append(f"value {node[:30]!r}")
    return found


def reference(doc: Any, flt: ResponseFilter) -> Any:
    """The documented filter on a parsed document (last duplicate wins, as Python's json reads):
    members by (lower-cased) name or with a sensitive string value removed or masked, sensitive
    strings in lists masked in place, a sensitive top-level string masked."""
    remove, mask = flt.remove, flt.mask
    if isinstance(doc, dict):
        out = {}
        for k, v in doc.items():
            if k.lower() in flt.names or (isinstance(v, str) and flt.value_sensitive(v)):
                if not remove:
                    out[k] = mask
                continue
            out[k] = reference(v, flt)
        return out
    if isinstance(doc, list):
        return [mask if isinstance(v, str) and flt.value_sensitive(v) else reference(v, flt) for v in doc]
    if isinstance(doc, str) and flt.value_sensitive(doc):
        return mask
    return doc


def check(gateway, route: str, body: bytes, valid: bool = True, **kw) -> None:
    flt = FILTERS[route]
    r = send_through(gateway, route, body, **kw)
    assert r.status != 500, r.body
    assert b"Traceback" not in r.body
    if r.status == 502:
        assert r.header("content-type") == "application/problem+json", r.headers
        assert not valid, f"a valid answer refused: {body!r} -> {r.body!r}"
        return
    assert r.status == 200, (r.status, r.body)
    got = r.body
    assert leaks(every_member(got), flt) == [], (body, got)
    orjson_doc = None
    try:
        orjson_doc = orjson.loads(got)
    except orjson.JSONDecodeError:
        pass  # integers beyond 64 bits: Python's reader below decides
    if orjson_doc is not None:
        assert reference(orjson_doc, flt) == orjson_doc, (body, got)
    first = first_wins(got)
    assert reference(first, flt) == first, (body, got)
    if ijson is not None and isinstance(json.loads(got), (dict, list)):
        key = None
        for _prefix, event, value in ijson.parse(got):
            if key is not None:  # the value of a filtered name: only the mask (mask mode)
                assert not flt.remove and value == flt.mask, (body, got)
            key = value if event == "map_key" and value.lower() in flt.names else None
            if event == "string":
                assert not flt.value_sensitive(value), (body, got)
    assert valid, f"an invalid answer passed: {body!r} -> {got!r}"
    assert loads_doubles(got) == reference(loads_doubles(body), flt), (body, got)


def _int_or_double(text: str) -> int | float:
    n = int(text)
    return n if -(2**63) <= n < 2**64 else float(text)


def loads_doubles(text: bytes) -> Any:
    """Python's reader with integers beyond 64 bits read as doubles: the full path writes a
    changed answer with orjson, which reads them so (`test_a_big_integer_in_a_filtered_answer`)."""
    return json.loads(text, parse_int=_int_or_double)


# ---- generators --------------------------------------------------------------------------------

NAME_POOL = sorted(
    {*FILTERS["rm"].names, *ODD_FIELDS, "passwords", "pass_word", "tokens", "id", "name", "user", "secretary", "a", "b"}
)


# names the byte paths (substitute, splice) take: no `\\u`, no Kelvin sign, no value pattern
PLAIN_NAMES = [n for n in NAME_POOL if n.isascii() and " " not in n] + [
    "passwordx",
    "xpassword",
    "PASSWORD",
    '"password',
    '\\"token',
    'x"secret',
]


@st.composite
def spelled(draw, name: str, plain: bool = False) -> str:
    """`name` as JSON string text (quotes included), each letter in a random case, `\\u` escape
    or, for k, the Kelvin sign."""
    out = []
    for ch in name:
        how = draw(
            st.sampled_from(
                ["same", "same", "upper"] if plain else ["same", "same", "same", "upper", "u", "U", "kelvin"]
            )
        )
        if how == "upper":
            ch = ch.upper()
        if how == "kelvin" and ch in "kK":
            out.append("\u212a")
        elif how in ("u", "U") and ch.isascii():
            esc = f"\\u{ord(ch):04x}"
            out.append(esc.upper().replace("\\U", "\\u") if how == "U" else esc)
        else:
            out.append(json.dumps(ch, ensure_ascii=False)[1:-1])
    return '"' + "".join(out) + '"'


STRINGS = st.one_of(
    st.sampled_from(
        [
            "x",
            "",
            "password",
            'say "password": 1',
            '\\"token\\":',
            "\\",
            "a\\",
            '"',
            "\u00e9\u4e2d\U0001f600",
            "\ufeff",
            JWT,
            "Bearer " + JWT,
            PEM,
            "4111 1111",
            "1111 1111",
            "1700000000000",
            "12345678901234567890123456",
            "password_hash",
        ]
        + CARDS
    ),
    st.text(max_size=8),
)
PLAIN_NUMBERS = st.sampled_from(
    ["0", "-0", "1", "-1", "1e5", "1E+2", "-0.5e-3", "123456789012345678901234567890", "2.5"]
)
NUMBERS = st.sampled_from(
    ["0", "-0", "1", "-1", "1e5", "1E+2", "-0.5e-3", "123456789012345678901234567890", "1.0000000000000000001"]
    + ["9223372036854775808", "-9223372036854775809", "4111111111111111", "1e308", "0.0"]
)


PLAIN_STRINGS = st.one_of(
    st.sampled_from(["x", "", "password", 'say "password": 1', '\\"token\\":', "\\", "a\\", '"', "\u00e9", "1 2"]),
    st.text(alphabet='ab"\\:,{}[] PASWORDpasword_', max_size=10),
)


@st.composite
def string_text(draw, plain: bool = False) -> str:
    s = draw(PLAIN_STRINGS if plain else STRINGS)
    text = json.dumps(s, ensure_ascii=not plain and draw(st.booleans()))
    if draw(st.booleans()):
        text = text.replace("/", "\\/")
    return text


def ws(draw) -> str:
    return draw(st.sampled_from(["", "", "", " ", "\n", " \t\r\n "]))


@st.composite
def value_text(draw, depth: int = 0, plain: bool = False) -> str:
    kinds = ["string", "number", "literal"] + (["object", "array"] * 2 if depth < 4 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "string":
        return draw(string_text(plain))
    if kind == "number":
        return draw(PLAIN_NUMBERS if plain else NUMBERS)
    if kind == "literal":
        return draw(st.sampled_from(["true", "false", "null"]))
    if kind == "array":
        items = draw(st.lists(value_text(depth + 1, plain), max_size=4))
        return "[" + ws(draw) + ("," + ws(draw)).join(items) + ws(draw) + "]"
    return draw(object_text(depth + 1, plain))


@st.composite
def object_text(draw, depth: int = 0, plain: bool = False) -> str:
    members = []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.sampled_from(PLAIN_NAMES if plain else NAME_POOL))
        key = draw(spelled(name, plain)) if draw(st.booleans()) else json.dumps(name, ensure_ascii=False)
        value = draw(value_text(depth, plain))
        members.append(ws(draw) + key + ws(draw) + ":" + ws(draw) + value + ws(draw))
    if members and draw(st.integers(0, 4)) == 0:  # a duplicate
        members.append(draw(st.sampled_from(members)))
    return "{" + ",".join(members) + (ws(draw) if not members else "") + "}"


@st.composite
def document(draw, plain: bool = False) -> bytes:
    top = draw(st.sampled_from(["object", "object", "array", "value"]))
    if top == "object":
        text = draw(object_text(0, plain))
    elif top == "array":
        text = "[" + ",".join(draw(st.lists(object_text(1, plain), max_size=4))) + "]"
    else:
        text = draw(value_text(3, plain))
    text = ws(draw) + text + ws(draw)
    return text.encode("utf-8")


ROUTE = st.sampled_from(list(ROUTES))
SETTINGS = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def _pad(body: bytes) -> bytes:
    """The same document beyond 1,024 bytes (the `stream` route's `max_bytes`): white space."""
    return body + b" " * 1100


@SETTINGS
@given(body=document(), route=ROUTE, big=st.booleans())
def test_generated_answers_leak_nothing(gateway, body, route, big):
    if big:
        body = _pad(body)
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        assume(False)
    assume(not (isinstance(doc, str) and FILTERS[route].value_sensitive(doc)))  # TOP_LEVEL_REASON
    check(gateway, route, body)


@SETTINGS
@given(body=document(plain=True), route=ROUTE, big=st.booleans(), chunk=st.sampled_from([0, 1, 5, 64]))
def test_generated_plain_answers_leak_nothing(gateway, body, route, big, chunk):
    """Answers the byte paths take (names as plain bytes in any case, scalar and container values,
    names inside strings after escaped quotes and backslashes, duplicates)."""
    if big:
        body = _pad(body)
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        assume(False)
    check(gateway, route, body, chunk=chunk)


@SETTINGS
@given(
    body=document(),
    route=ROUTE,
    ctype=st.sampled_from(
        [
            b"application/json",
            b"application/json; charset=utf-8",
            b"application/problem+json",
            b"application/vnd.x+json",
        ]
        + [b"APPLICATION/JSON", b"text/plain", None]
    ),
    coding=st.sampled_from([None, "gzip", "br"]),
    chunk=st.sampled_from([0, 1, 2, 3, 7, 64, 1000]),
)
def test_transport_variants_leak_nothing(gateway, body, route, ctype, coding, chunk):
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        assume(False)
    assume(not (isinstance(doc, str) and FILTERS[route].value_sensitive(doc)))  # TOP_LEVEL_REASON
    if ctype in (b"text/plain", None) and body.lstrip(b" \t\r\n")[:1] not in (b"{", b"["):
        assume(False)  # not sniffed as JSON: passes (docs/policies.md, response_body)
    del doc
    check(gateway, route, body, ctype=ctype, coding=coding, chunk=chunk)


INVALID = [
    b'{"password":"x",}',
    b'{"password":"x"',
    b'{"password":"x"}}',
    b'{"password":"x"} x',
    b'{"a":1,"password":\'x\'}',
    b'{password:"x"}',
    b'{"password":"x","a":01}',
    b'{"password":"x","a":NaN}',
    b'{"a":"\x01","password":1}',
    b'{"pass\\u0077ord":"x",}',
    b'{"password":"x"}\x00',
    b'{"a":"\xff","password":"x"}',
    b'\xef\xbb\xbf{"password":"x"}',
    '{"password":"x"}'.encode("utf-16"),
    b'{"password":"x" /*c*/}',
    b'{"a":"b\\"password":"x"}',
    b'{"a":"\\q","password":"x"}',
    b'{"a":"\xed\xa0\x80","password":"x"}',  # a surrogate written in UTF-8
    b'{"a":"\xc0\xa2,"password":"x"}',  # an overlong quote
    b'{"a":"x"\x00,"password":"x"}',
    b'{"password":"x"\n',
    b'{"password"  "x", "a":1}',
    b'{"password":"x" "a":1}',
    b'{"password":1,,"a":1}',
    b'{"password":-,"a":1}',
    b'{"password":1.,"a":1}',
    b'{"password":tru,"a":1}',
]


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("body", INVALID, ids=range(len(INVALID)))
def test_invalid_json_near_names_is_refused(gateway, route, body):
    for big in (False, True):
        check(gateway, route, _pad(body) if big else body, valid=False)


TOP_LEVEL_REASON = (
    "a JSON text that is one string is sent as it came whatever its value: ResponseFilter._walk looks "
    "only inside objects and arrays, JsonRewriter._place value-checks array items only. Fixing the "
    "one-piece path alone made it disagree with the stream (tests/unit differential properties failed), "
    "and the stream is outside response_filter.py / json_splice.py: left to the lead (mask it, as in a list)"
)


@pytest.mark.parametrize("value", [JWT, CARDS[1], PEM], ids=["jwt", "card", "pem"])
@pytest.mark.parametrize("route", ["rm", "mask", "stream"])
def test_a_sensitive_top_level_string_is_masked(gateway, value, route):
    """Found from outside: `"eyJ..."` (a token endpoint's answer), a card number, a PEM key."""
    body = json.dumps(value).encode()
    check(gateway, route, _pad(body) if route == "stream" else body)


@pytest.mark.parametrize("coding", [None, "gzip"])
def test_a_bom_before_sniffed_json_does_not_pass_unfiltered(gateway, coding):
    """A `text/plain` (or untyped) answer is sniffed as JSON when it starts with `{` or `[`; with
    a UTF-8 byte order mark first it is not, and passes as it came, while Python's json.loads
    (bytes), requests' `.json()` and browsers' `Response.json()` all skip the mark and read it."""
    body = b'\xef\xbb\xbf{"password":"hunter2"}'
    assert json.loads(body) == {"password": "hunter2"}  # a reasonable JSON reader reads it
    for ctype in (b"text/plain", None):
        for chunk in (0, 1, 2):  # (1 and 2: the mark split over reads)
            r = send_through(gateway, "rm", body, ctype=ctype, coding=coding, chunk=chunk)
            assert b"hunter2" not in r.body, (ctype, chunk, r.status, r.body)
            assert r.status in (200, 502), r.status
    # and a text answer that merely starts with the mark passes as it came
    r = send_through(gateway, "rm", b"\xef\xbb\xbfhello {password}", ctype=b"text/plain", coding=coding, chunk=1)
    assert r.status == 200 and r.body == b"\xef\xbb\xbfhello {password}"


@pytest.mark.parametrize("ctype", [b"text/json", b"application/x-json", b"application/json, text/plain"])
def test_other_json_types(gateway, ctype):
    """JSON served under a type neither declared JSON nor sniffed."""
    r = send_through(gateway, "rm", b'{"password":"hunter2","a":1}', ctype=ctype)
    assert b"hunter2" not in r.body, (ctype, r.status, r.body)


def test_many_records_split_card_numbers(gateway):
    """Card numbers split over records, names in every record, beyond `max_bytes`."""
    recs = []
    for i in range(200):
        recs.append({"id": i, "part": "4111 1111", "rest": "1111 1111", "Password": f"pw{i}", "n": 2**62 + i})
    body = json.dumps(recs).encode()
    for route in ("rm", "stream", "mask"):
        check(gateway, route, body)
        check(gateway, route, body, chunk=5)


UNUSUAL = [
    b'{"user.secret":1,"user":{"secret":2},"usersecret":3}',
    b'{"$token":"x","$TOKEN":1,"token":2}',
    b'{"@id":7,"@ID":{"a":1},"id":3}',
    b'{"pin code":1,"pin  code":2,"PIN CODE":[1]}',
    b'{"na\xc3\xafve":1,"NA\xc3\x8fVE":2,"naive":3}',
    b'{"pass":1,"password":2,"password_hash":3,"passwords":4,"pass_word":5}',
    b'{"a-b":"x","a_b":"y"}',
    b'{"x":"\\"pass\\":1","pass" : "\\\\" ,"y":["pass",{"pass":[]}]}',
    b'[{"pass":1},{"PASS":2},{"pa\\u0073s":3},{"p":"pass"}]',
]


@pytest.mark.parametrize("route", ["odd", "oddmask"])
@pytest.mark.parametrize("body", UNUSUAL, ids=range(len(UNUSUAL)))
def test_unusual_field_names(gateway, route, body):
    check(gateway, route, body)
    check(gateway, route, _pad(body))


@pytest.mark.parametrize(
    "body", [b'{"password":1,"n":100000000000000000001}', b'[{"Pass\\u0077ord":1,"n":[-98765432109876543210987]}]']
)
def test_a_big_integer_in_a_filtered_answer_keeps_its_digits(gateway, body):
    r = send_through(gateway, "rm", body)
    assert r.status == 200
    doc = json.loads(r.body)
    assert "password" not in names_of(doc)
    assert [v for v in _numbers(doc)] == [v for v in _numbers(json.loads(body)) if v != 1]


def names_of(doc: Any) -> set[str]:
    if isinstance(doc, dict):
        return {k.lower() for k in doc} | {n for v in doc.values() for n in names_of(v)}
    if isinstance(doc, list):
        return {n for v in doc for n in names_of(v)}
    return set()


def _numbers(doc: Any) -> list[Any]:
    if isinstance(doc, dict):
        return [n for v in doc.values() for n in _numbers(v)]
    if isinstance(doc, list):
        return [n for v in doc for n in _numbers(v)]
    return [doc] if isinstance(doc, int | float) and not isinstance(doc, bool) else []


SECRET = b'{"a":1,"password":"hunter2","n":[{"Token":"t0ps3cret"}]}'


@pytest.mark.parametrize("status", [201, 203, 400, 401, 404, 409, 422, 500, 503])
def test_other_statuses_are_filtered(gateway, status):
    r = send_through(gateway, "rm", SECRET, status=status)
    assert b"hunter2" not in r.body and b"t0ps3cret" not in r.body, (status, r.status, r.body)
    assert r.status != 500 or status == 500


@pytest.mark.parametrize(
    "coding",
    [
        (b"GZIP", gzip.compress),
        (b"x-gzip", gzip.compress),
        (b"gzip, gzip", lambda b: gzip.compress(gzip.compress(b))),
        (b"identity", lambda b: b),
        (b"identity, gzip", gzip.compress),
        (b"deflate", lambda b: __import__("zlib").compress(b)),
        (b"br", brotli.compress),
        (b"gzip", lambda b: gzip.compress(b) + b"garbage"),
        (b"gzip", lambda b: gzip.compress(b)[:-4]),
        (b"compress", lambda b: b),
        (b"", lambda b: b),
    ],
    ids=range(11),
)
def test_content_codings(gateway, coding):
    for route in ("rm", "stream"):
        r = send_through(gateway, route, _pad(SECRET) if route == "stream" else SECRET, coding=coding)
        assert r.status in (200, 502), (coding, r.status, r.body)
        assert b"hunter2" not in r.body and b"t0ps3cret" not in r.body, (coding, r.status, r.body)
        assert b"Traceback" not in r.body
        if r.status == 200:
            assert orjson.loads(r.body) == {"a": 1, "n": [{}]}
        else:
            assert r.header("content-type") == "application/problem+json"


@pytest.mark.parametrize(
    "extra",
    [
        [(b"content-type", b"application/json")],  # two Content-Type headers, the same
        [(b"x-content-type-options", b"nosniff")],
        [(b"content-disposition", b"attachment; filename=a.json")],
        [(b"transfer-encoding", b"chunked")],
    ],
    ids=range(4),
)
def test_header_variants(gateway, extra):
    r = send_through(gateway, "rm", SECRET, extra=extra, chunk=3)
    assert b"hunter2" not in r.body and b"t0ps3cret" not in r.body, (extra, r.status, r.body)


def test_a_big_answer_with_names_at_every_level(gateway):
    """Beyond the stream's 64 KB element: the walker descends; names before and after a long
    string, at the top level, duplicated, in mixed case, chunked finely."""
    filler = "x" * 70_000
    body = (
        '{"PASSWORD":"a","big":{"s":"%s","password" : "b","inner":[{"Token":"c","s":"%s"}]},'
        '"password":"d","list":["%s",{"secret":{"k":"e"}}],"password":"f"}' % (filler, filler, filler)
    ).encode()
    for route in ("rm", "mask", "stream"):
        for chunk in (0, 1000, 4096, 65536):
            check(gateway, route, body, chunk=chunk)


@pytest.mark.parametrize("body", [b'{"password":"hunter2"}\n{"a":1}\n', b'[{"password":"hunter2"}] []'])
@pytest.mark.parametrize("ctype", [b"text/plain", b"application/x-ndjson", b"application/jsonl", None])
def test_sniffed_json_lines_are_filtered_or_refused(gateway, body, ctype):
    """A sequence of JSON texts (JSON Lines, texts separated by white space), served as text,
    untyped or declared NDJSON / JSON Lines, which a streaming reader (ijson multiple_values, any
    NDJSON client) reads value by value: each text is filtered (it passed as "not JSON")."""
    r = send_through(gateway, "rm", body, ctype=ctype)
    assert b"hunter2" not in r.body, (r.status, r.body)
    assert r.status == 200, (r.status, r.body)


@pytest.mark.parametrize("name", [b"password", b"pass\\u0077ord"])
@pytest.mark.parametrize("depth", [100, 253, 254, 255, 300, 511, 513, 1023, 1025, 5000])
def test_deep_nesting_is_filtered_or_refused(gateway, depth, name):
    """Found from outside: between 255 and 1,024 levels, an answer the full path filtered (any
    `\\u` escape sends it there) was a 500 — orjson reads 1,024 levels but writes only 254."""
    body = b'{"a":' * depth + b'{"' + name + b'":"hunter2","a":1}' + b"}" * depth
    for route in ("rm", "stream"):
        r = send_through(gateway, route, _pad(body) if route == "stream" else body)
        assert r.status in (200, 502), (depth, r.status)
        assert b"hunter2" not in r.body
        if r.status == 200:
            limit = sys.getrecursionlimit()
            sys.setrecursionlimit(max(limit, 4 * depth))
            try:
                assert "password" not in names_of(json.loads(r.body))
            finally:
                sys.setrecursionlimit(limit)
        else:
            assert r.header("content-type") == "application/problem+json"


@pytest.mark.parametrize(
    "body",
    [
        b'{"\\"password":"x","b":1}',  # a name holding a quote: `"password":` appears after `\\`
        b'{"a\\\\\\"token" : 2 ,"token":3}',
        b'[{"\\"secret":{"k":1},"n":2}]',
    ],
    ids=range(3),
)
@pytest.mark.parametrize("route", ["rm", "mask", "odd"])
def test_a_needle_after_an_escaped_quote_is_not_a_member(gateway, route, body):
    check(gateway, route, body)
