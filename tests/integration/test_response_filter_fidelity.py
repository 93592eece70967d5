"""Red team (session 5, rt1): an answer the response filter leaves unchanged reaches the client
byte for byte, and a JSON text UTF-8 cannot carry is refused as problem+json, through a real
`bastion serve` and a real upstream.

Found from outside: the full path (taken by any answer with a run of 13 digits, such as a
millisecond timestamp, as it might hold a card number) wrote every answer out again with orjson,
changed or not, and orjson writes numbers back as doubles: `1000000000000000000000` reached the
client as `1e+21`, `0.10000000000000000001` as `0.1`, a 30-digit id as `1.2345678901234568e+29`.
And `"\\ud800"` (a lone surrogate escape) was answered 500 (an UnicodeEncodeError in the stream);
the stream, for answers over `max_bytes`, rounded decimals of unchanged elements the same way.
"""

from __future__ import annotations

import orjson
import pytest
from helpers import ThreadedUvicorn, raw_request, run_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.json_stream import JsonRewriter
from bastion.policies.response_filter import ResponseFilter, ResponseFilterConfig

TS = b'"ts":1700000000000'  # 13 digits: the value pre-check cannot clear the answer


async def echo_app(scope, receive, send):
    """Answers the hex-decoded query string as an application/json body."""
    if scope["type"] != "http":
        return
    body = bytes.fromhex(scope["query_string"].decode())
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def file_app(path):
    """A static file server that answers Range requests (Starlette's FileResponse)."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse
    from starlette.routing import Route

    async def users(request):
        return FileResponse(path, media_type="application/json")

    return Starlette(routes=[Route("/users", users)])


USERS = b'{"users":[{"name":"ann","password":"hunter2"}]}'


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fidelity")
    (tmp / "users.json").write_bytes(USERS)
    with ThreadedUvicorn(echo_app) as upstream, ThreadedUvicorn(file_app(tmp / "users.json")) as files:
        cfg = {
            "upstreams": {"up": {"urls": [upstream.url]}, "files": {"urls": [files.url]}},
            "policies": {"audit": {"enabled": False}, "response_filter": {}},
            "routes": [{"path": "/r", "upstream": "up"}, {"path": "/users", "upstream": "files"}],
        }
        with run_gateway(cfg, tmp) as g:
            yield g


@pytest.mark.parametrize("ranges", ["bytes=35-43", "bytes=-12", "bytes=0-9,35-43", "bytes=35-"])
def test_a_byte_range_of_a_filtered_answer_is_not_delivered(gateway, ranges):
    """Found from outside: `Range: bytes=35-43` got `"hunter2"` (206, itself a JSON text), and two
    ranges a multipart/byteranges answer (not JSON: not filtered) with the raw bytes."""
    assert USERS[35:44] == b'"hunter2"'
    r = raw_request(gateway.port, "GET", "/users", {"Range": ranges})
    assert b"hunter2" not in r.body and b"nter2" not in r.body
    assert r.status == 200
    assert orjson.loads(r.body) == {"users": [{"name": "ann"}]}


def through(gateway, body: bytes):
    return raw_request(gateway.port, "GET", "/r?" + body.hex())


NUMBERS = [
    b"1000000000000000000000",  # 1e21: beyond 64 bits
    b"123456789012345678901234567890",
    b"-98765432109876543210987",
    b"0.10000000000000000001",  # more digits than a double holds
    b"3.141592653589793238462643383279",
    b"1E2",
    b"1.0e-5",
    b"0.000001000",
    b"1e400",  # beyond a double: orjson refuses it, the stream reads it as infinity
    b"-1e-400",
]


@pytest.mark.parametrize("colon", [b"", b',"url":"http://h:80/a:b"'])  # a `:` in a string: the slower count
@pytest.mark.parametrize("number", NUMBERS)
def test_an_unfiltered_answer_keeps_its_numbers(gateway, number, colon):
    body = b'{"amount":' + number + b"," + TS + colon + b',"items":[' + number + b"]}"
    r = through(gateway, body)
    assert r.status == 200
    assert r.body == body


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":{"n":"4111 1111 1111 1111"},"a":1,' + TS + b"}",
        b'{"a":"4111-1111-1111-1111","a":1}',
        b'[{"k":"4111111111111111","k":"x"},' + b"123456789012345678901234567890" + b"]",
        b'{"a":{"n":"4111 1111 1111 1111"},"a":"12:00","t:":1,' + TS + b"}",  # `:` in strings too
    ],
)
def test_a_card_in_a_dropped_duplicate_is_still_filtered(gateway, body):
    r = through(gateway, body)
    assert r.status == 200
    assert b"4111" not in r.body
    orjson.loads(r.body)


@pytest.mark.parametrize("body", [b'{"a":"\\ud800"}', b'["\\udc00\\ud800"]'])
def test_a_lone_surrogate_escape_with_nothing_to_filter_passes_as_it_came(gateway, body):
    """Valid JSON by RFC 8259's grammar; nothing in it can be filtered (it was a 500)."""
    r = through(gateway, body)
    assert r.status == 200
    assert r.body == body


@pytest.mark.parametrize("body", [b'{"a":"x\\udc00y","password":"p"}', b'[{"a":"\\ud800","b":{"token":"p"}}]'])
def test_a_lone_surrogate_escape_in_a_filtered_answer_is_refused_as_problem_json(gateway, body):
    """The filtered answer must be written out again, and UTF-8 cannot hold a lone surrogate."""
    r = through(gateway, body)
    assert r.status == 502
    assert r.header("content-type") == "application/problem+json"
    assert b'"p"' not in r.body


# ---------------------------------------------------------------- the class, in process
_FILTER = ResponseFilter(ResponseFilterConfig(), None)
_big = st.one_of(
    st.integers(min_value=2**64, max_value=10**40).map(lambda n: str(n).encode()),
    st.integers(min_value=-(10**40), max_value=-(2**63) - 1).map(lambda n: str(n).encode()),
    st.from_regex(rb"\A-?[1-9][0-9]{0,3}\.[0-9]{18,30}\Z"),
)
_names = st.sampled_from(["id", "amount", "n", "wei", "a b", "x"])


@st.composite
def _documents(draw) -> bytes:
    members = draw(st.lists(st.tuples(_names, _big), min_size=1, max_size=6, unique_by=lambda m: m[0]))
    inner = b",".join(b'"%s":%s' % (n.encode(), v) for n, v in members)
    return b'{"ts":1700000000000,"o":{' + inner + b'},"l":[' + b",".join(v for _, v in members) + b"]}"


@given(_documents())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_an_answer_with_nothing_filtered_is_sent_as_it_came(body):
    assert _FILTER.rewrite_whole(body) == body


@given(_documents(), st.integers(min_value=1, max_value=64))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_stream_sends_an_unchanged_element_as_it_came(body, step):
    """Answers over `max_bytes` go through the stream: an element with nothing filtered keeps its text."""
    doc = b"[" + body + b"," + body + b"]"
    stream = JsonRewriter(_FILTER, remove=True, mask=_FILTER.mask)
    out = b"".join(stream.feed(doc[i : i + step]) for i in range(0, len(doc), step)) + stream.finish()
    assert out == doc


@pytest.mark.parametrize(
    "doc",
    [
        b'[{"a":{"n":"4111 1111 1111 1111"},"a":1,' + TS + b"}]",
        b'[{"x":{"a":{"password":"p"},"a":2},' + TS + b"}]",
    ],
)
def test_the_stream_still_rewrites_an_element_with_a_dropped_duplicate(doc):
    stream = JsonRewriter(_FILTER, remove=True, mask=_FILTER.mask)
    out = stream.feed(doc) + stream.finish()
    assert b"4111" not in out and b'"p"' not in out
    orjson.loads(out)
