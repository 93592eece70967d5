"""A method override in the body (`_method`), end to end.

The upstream is a Flask app that reads `_method` the way the frameworks that honour it do —
Laravel/Symfony (`_method` from the JSON body when the type contains `/json` or `+json`, else from
the form), Rails' Rack::MethodOverride (form bodies, and POSTs with no type) — with Werkzeug's own
parsers (JSON and forms: not ours), and performs the DELETE it reads. The gateway allows only GET
and POST on the route. The invariant, over generated spellings (JSON escapes, percent-encoding,
case, white space, content types, gzip): the upstream never performs a method other than the
POST the gateway routed.
"""

from __future__ import annotations

import gzip
import json
import urllib.parse

import pytest
from helpers import raw_request, run_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import serve_wsgi

PERFORMED: list[str] = []


def framework_app():
    from flask import Flask, request

    app = Flask("laravel-like")

    @app.route("/items/<int:item>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def item(item: int):
        method = request.method
        if method == "POST":
            ctype = request.headers.get("Content-Type", "")
            source = request.get_json(force=True, silent=True) if ("/json" in ctype or "+json" in ctype) else None
            if isinstance(source, dict) and isinstance(source.get("_method"), str):
                method = source["_method"].strip().upper()
            elif source is None and "_method" in request.form:
                method = request.form["_method"].strip().upper()
        PERFORMED.append(method)
        return {"performed": method, "item": item}

    return app


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("method-field")
    with serve_wsgi(framework_app()) as url:
        cfg = {
            "upstreams": {"app": {"urls": [url]}},
            "policies": {"audit": {"enabled": False}},
            "routes": [{"path": "/items/*", "upstream": "app", "methods": ["GET", "POST"]}],
        }
        with run_gateway(cfg, tmp) as g:
            yield g


def post(g, body: bytes, headers: dict[str, str]):
    PERFORMED.clear()
    r = raw_request(g.port, "POST", "/items/7", headers, body)
    return r, list(PERFORMED)


def test_the_upstream_would_delete_without_the_gateway():
    """The app really honours the field: the hole exists without the gateway."""
    with serve_wsgi(framework_app()) as url:
        port = int(url.rsplit(":", 1)[1])
        PERFORMED.clear()
        r = raw_request(port, "POST", "/items/7", {"Content-Type": "application/json"}, b'{"_method": "DELETE"}')
        assert r.status == 200 and PERFORMED == ["DELETE"]
        PERFORMED.clear()
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert raw_request(port, "POST", "/items/7", form, b"_method=delete").status == 200
        assert PERFORMED == ["DELETE"]


@pytest.mark.parametrize(
    "ctype,body",
    [
        ("application/json", b'{"_method": "DELETE"}'),
        ("application/json", b'{"\\u005fmethod": "DEL\\u0045TE"}'),
        ("text/json", b'{"name": "x", "_method": " put "}'),
        ("application/vnd.api+json", b'{"_method": "patch"}'),
        ("application/x-www-form-urlencoded", b"name=x&_method=DELETE"),
        ("application/x-www-form-urlencoded; charset=utf-8", b"%5Fmethod=DELETE"),
        ("application/x-www-form-urlencoded", b"_method=delete&_method=POST"),
        ("", b"_method=DELETE"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
            b'--xyz\r\nContent-Disposition: form-data; name="_method"\r\n\r\npatch\r\n--xyz--\r\n',
        ),
    ],
)
def test_overrides_in_the_body_are_refused(gateway, ctype, body):
    headers = {"Content-Type": ctype} if ctype else {}
    r, performed = post(gateway, body, headers)
    assert r.status == 400, (r.status, performed)
    assert r.json()["type"].endswith("/bad-method-override")
    assert performed == []  # the upstream never saw it


@pytest.mark.parametrize(
    "ctype,body",
    [
        ("application/json", b'{"name": "x"}'),
        ("application/json", b'{"_method": "POST"}'),
        ("application/json", b'{"_method": 5, "nested": {"_method": "DELETE"}}'),
        ("application/x-www-form-urlencoded", b"name=x&_method=post"),
        ("application/octet-stream", b"\x00\x01binary"),
        (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="_method"\r\n\r\nPOST\r\n--b--\r\n',
        ),
        (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="_method"; filename="m.txt"\r\n\r\nDELETE\r\n--b--\r\n',
        ),
    ],
)
def test_ordinary_posts_pass(gateway, ctype, body):
    r, performed = post(gateway, body, {"Content-Type": ctype})
    assert r.status == 200, r.body
    assert performed == ["POST"]


_METHODS = ["DELETE", "PUT", "PATCH", "POST", "GET"]


def _json_escape(text: str, draw) -> str:
    return "".join(f"\\u{ord(c):04x}" if draw(st.booleans()) else c for c in text)


def _pct(text: str, draw) -> str:
    return "".join(f"%{ord(c):02X}" if draw(st.booleans()) else urllib.parse.quote(c) for c in text)


@st.composite
def override_requests(draw):
    method = draw(st.sampled_from(_METHODS))
    value = draw(st.sampled_from([method, method.lower(), f" {method}\t", method.title()]))
    kind = draw(st.sampled_from(["json", "form"]))
    if kind == "json":
        key = _json_escape("_method", draw)
        val = _json_escape(value, draw).replace("\t", "\\t")
        extra = draw(st.sampled_from(["", '"name": "a", ', '"list": [1, 2], ']))
        body = ("{" + extra + f'"{key}": "{val}"' + "}").encode()
        ctype = draw(st.sampled_from(["application/json", "text/json", "application/problem+json"]))
    else:
        body = (_pct("_method", draw) + "=" + _pct(value, draw)).encode()
        if draw(st.booleans()):
            body = b"name=a&" + body
        ctype = draw(st.sampled_from(["application/x-www-form-urlencoded", ""]))
    headers = {"Content-Type": ctype} if ctype else {}
    if draw(st.booleans()):
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return body, headers


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=override_requests())
def test_the_upstream_only_ever_performs_the_routed_post(gateway, case):
    body, headers = case
    r, performed = post(gateway, body, headers)
    assert performed in ([], ["POST"]), (body, headers, r.status, performed)
    if r.status == 400:
        assert r.json()["type"].endswith(("/bad-method-override", "/bad-request", "/unsupported-content-coding"))


def test_turned_off_on_a_route_the_body_reaches_the_upstream(tmp_path):
    with serve_wsgi(framework_app()) as url:
        cfg = {
            "upstreams": {"app": {"urls": [url]}},
            "policies": {"audit": {"enabled": False}},
            "routes": [
                {"path": "/items/*", "upstream": "app", "policies": {"method_field": {"enabled": False}}},
            ],
        }
        with run_gateway(cfg, tmp_path) as g:
            r, performed = post(g, json.dumps({"_method": "DELETE"}).encode(), {"Content-Type": "application/json"})
            assert r.status == 200 and performed == ["DELETE"]  # the user's explicit choice


def test_a_body_field_cannot_name_a_third_method_after_an_honoured_header(tmp_path):
    """Rack reads the body's `_method` before the header: POST + `X-HTTP-Method-Override: PUT`
    (routed and checked as PUT) + `_method=DELETE` would be a DELETE at a Rails app."""
    with serve_wsgi(framework_app()) as url:
        cfg = {
            "upstreams": {"app": {"urls": [url]}},
            "edge": {"method_override": True},
            "policies": {"audit": {"enabled": False}},
            "routes": [{"path": "/items/*", "upstream": "app", "methods": ["GET", "POST", "PUT"]}],
        }
        with run_gateway(cfg, tmp_path) as g:
            form = {"Content-Type": "application/x-www-form-urlencoded", "X-HTTP-Method-Override": "PUT"}
            r, performed = post(g, b"_method=DELETE", form)
            assert r.status == 400 and performed == []
            r, performed = post(g, b"name=x", form)
            assert r.status == 200, r.body


def test_an_ambiguous_type_is_refused_only_when_the_body_could_hold_the_field(gateway):
    both = [("Content-Type", "application/json"), ("Content-Type", "application/x-www-form-urlencoded")]
    PERFORMED.clear()
    assert raw_request(gateway.port, "POST", "/items/7", both, b"_method=DELETE").status == 400
    assert PERFORMED == []
    assert raw_request(gateway.port, "POST", "/items/7", both, b'{"name": "chair"}').status == 200
