"""bastion.bodies: the one way request bodies reach the policies that inspect them."""

from __future__ import annotations

import asyncio
import gzip

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.bodies import (
    BodyRefused,
    check_json_unique,
    content_type,
    parse_content_type,
    parse_xml,
    read_body,
    sniff,
    wide_text,
)
from bastion.http import Request
from bastion.pipeline import Context


def request(headers: list[tuple[bytes, bytes]], body: bytes = b"", body_limit: int | None = None) -> Request:
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(
        method="POST",
        path="/",
        query=b"",
        headers=headers,
        client_ip=None,
        peer_ip=None,
        peer_trusted=False,
        scheme="http",
        host="h",
        receive=receive,
        body_limit=body_limit,
    )


@pytest.mark.parametrize(
    "value,media,params",
    [
        ("application/json", "application/json", {}),
        ("Application/JSON; Charset=UTF-8", "application/json", {"charset": "UTF-8"}),
        ("application/json;", "application/json", {}),
        ('multipart/form-data; boundary="a b;c"', "multipart/form-data", {"boundary": "a b;c"}),
        (
            "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
            "multipart/form-data",
            {"boundary": "----WebKitFormBoundary7MA4YWxkTrZu0gW"},
        ),
        ("text/plain ; a = b", "text/plain", {"a": "b"}),
    ],
)
def test_content_types_that_parse(value, media, params):
    ct = parse_content_type(value)
    assert ct.media == media and ct.params == params


@pytest.mark.parametrize(
    "value",
    [
        "application/json, text/plain",
        "application/json x",
        "json",
        "",
        "multipart/form-data; boundary=a; Boundary=b",
        "application/json; charset=utf-8; charset=utf-16",
        'application/json; charset="utf-8',
    ],
)
def test_ambiguous_content_types_are_refused(value):
    with pytest.raises(BodyRefused) as e:
        parse_content_type(value)
    assert e.value.status == 400 and e.value.type == "ambiguous-content-type"


_name = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
_value = st.from_regex(r"[A-Za-z0-9._-]{1,10}", fullmatch=True)


@settings(max_examples=200)
@given(params=st.lists(st.tuples(_name, _value), min_size=1, max_size=5), quote=st.booleans())
def test_a_parameter_given_twice_never_parses(params, quote):
    """Invariant: a Content-Type parses exactly when its parameter names are distinct, and then
    every parameter is read back as sent."""
    text = "application/json" + "".join(f"; {n}={chr(34) + v + chr(34) if quote else v}" for n, v in params)
    names = [n for n, _ in params]
    if len(set(names)) == len(names):
        assert parse_content_type(text).params == dict(params)
    else:
        with pytest.raises(BodyRefused):
            parse_content_type(text)


def test_request_level_checks():
    with pytest.raises(BodyRefused) as e:
        content_type(request([(b"content-type", b"application/json"), (b"content-type", b"application/json")]))
    assert e.value.status == 400
    with pytest.raises(BodyRefused) as e:
        content_type(request([(b"content-type", b"application/json; charset=utf-16")]))
    assert e.value.status == 415
    with pytest.raises(BodyRefused) as e:
        content_type(request([(b"content-type", b"multipart/form-data")]))
    assert e.value.status == 400
    # whatever the type: a lenient upstream may read any body as text in the charset it names
    with pytest.raises(BodyRefused) as e:
        content_type(request([(b"content-type", b"text/plain; charset=utf-7")]))
    assert e.value.status == 415
    assert content_type(request([])) is None


def test_read_body_decodes_once_and_drops_the_coding():
    plain = b'{"a": 1}'
    req = request([(b"content-encoding", b"gzip")], gzip.compress(plain))
    ctx = Context()
    assert asyncio.run(read_body(req, ctx)) == plain
    assert req.body == plain and b"content-encoding" in ctx.drop_request_headers
    assert asyncio.run(read_body(req, ctx)) == plain  # not decoded a second time


@pytest.mark.parametrize(
    "coding,body,status",
    [
        (b"compress", b"x", 415),
        (b"gzip", b"not gzip at all", 400),
        (b"gzip", gzip.compress(b"0" * 2_000_000), 413),
    ],
)
def test_read_body_refusals(coding, body, status):
    req = request([(b"content-encoding", coding)], body, body_limit=1024 * 1024)
    with pytest.raises(BodyRefused) as e:
        asyncio.run(read_body(req, Context()))
    assert e.value.status == status


def test_sniff():
    assert sniff(b' {"a": [1, 2]}') == "json"
    assert sniff(b"[1,") == "text"  # JSON-looking but broken: inspected whole, as text
    assert sniff(b"<a/>") == "xml" and sniff(b"\xef\xbb\xbf<a/>") == "xml"
    assert sniff(b"a=1&b=two") == "form"
    assert sniff(b"1 union select password from users--") == "text"


def test_wide_text():
    assert wide_text('{"a": 1}'.encode("utf-16")) and wide_text('{"a": 1}'.encode("utf-16-be"))
    assert wide_text('{"a": 1}'.encode("utf-32"))
    assert not wide_text(b'{"a": 1}') and not wide_text('{"é": 1}'.encode())


def test_parse_xml_returns_every_string():
    strings = parse_xml(
        b'<?pi x?><r xmlns:n="urn:x" a="attr"><n:q v="inner">text<!-- c --></n:q><![CDATA[raw <b>]]></r>', max_depth=8
    )
    for s in ("r", "a", "attr", "q", "v", "inner", "text", " c ", "raw <b>"):
        assert s in strings, (s, strings)


@pytest.mark.parametrize(
    "body,type_",
    [
        (b'<!DOCTYPE q [<!ENTITY e SYSTEM "file:///etc/passwd">]><q>&e;</q>', "xml-dtd-forbidden"),
        (b'<!DOCTYPE l [<!ENTITY a "aa"><!ENTITY b "&a;&a;">]><l>&b;</l>', "xml-dtd-forbidden"),
        (b'<!DOCTYPE q SYSTEM "http://127.0.0.1:1/x.dtd"><q/>', "xml-dtd-forbidden"),
        (b"<!DOCTYPE q><q/>", "xml-dtd-forbidden"),
        (b"<a>&undeclared;</a>", "malformed-body"),
        (b"<a></b>", "malformed-body"),
        (b"<a>" * 9 + b"</a>" * 9, "xml-too-deep"),
    ],
)
def test_parse_xml_refusals(body, type_):
    with pytest.raises(BodyRefused) as e:
        parse_xml(body, max_depth=8)
    assert e.value.status == 400 and e.value.type == type_


def test_duplicate_json_keys():
    check_json_unique(b'{"a": 1, "b": {"a": 2}}')
    with pytest.raises(BodyRefused):
        check_json_unique(b'{"a": 1, "b": 2, "a": 3}')
    with pytest.raises(BodyRefused):
        check_json_unique(b'[{"x": {"k": 1, "k": 1}}]')
