"""A method override in the body spelled the way PHP (Laravel, Symfony) or Rack reads field names.

The upstream here reads `_method` as PHP registers form fields (main/php_variables.c,
php_register_variable_ex): the name is cut at a NUL, leading spaces are dropped, and spaces and
dots before any '[' become '_'. So `.method=DELETE`, `a.b`-style names and `_method%00x=DELETE`
are `$_POST['_method']` for Laravel and Symfony. In a multipart part that gives `name` twice,
Rack (its Content-Disposition regex) and PHP (rfc1867.c, each `name=` overwrites) keep the last.
Neither parses the multipart Content-Type's parameters: PHP takes the first "boundary" anywhere in
it (`strstr`), Rack the last `boundary=` (a greedy regex), so `xboundary=zzz; boundary=b` is a
body of `--zzz` parts for PHP and of `--b` parts for a strict parser (the request header
`X-Parser: rack` makes this upstream read it as Rack does). Laravel reads a body as JSON when its
Content-Type header contains "/json" or "+json" anywhere (`application/xml; x=/json`). The invariant: the upstream never performs a method other than the POST the gateway routed.
"""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest
from helpers import raw_request, run_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import serve_wsgi

PERFORMED: list[str] = []


def rack2_name(name: str) -> str:
    """Rack 2's QueryParser#normalize_params for a plain key: `\\A[\\[\\]]*([^\\[\\]]+)\\]*`."""
    m = re.match(r"[\[\]]*([^\[\]]+)\]*", name)
    return m.group(1) if m and m.end() == len(name) else name


def php_name(name: str) -> str:
    name = name.split("\x00", 1)[0].lstrip(" ")
    head, bracket, rest = name.partition("[")
    return head.replace(" ", "_").replace(".", "_") + bracket + rest


def php_like_app(environ, start_response):
    """What a PHP framework with method override on would perform (the oracle of these tests)."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    ctype = environ.get("CONTENT_TYPE", "")
    fields: dict[str, str] = {}
    if "/json" in ctype or "+json" in ctype:  # Laravel's Request::isJson: anywhere in the header
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("_method"), str):
            fields["_method"] = doc["_method"]
    elif ctype.startswith("application/x-www-form-urlencoded"):
        reading = rack2_name if environ.get("HTTP_X_PARSER") == "rack" else php_name
        for k, v in urllib.parse.parse_qsl(body.decode("latin-1"), keep_blank_values=True):
            fields[reading(k)] = v
    elif ctype.startswith("multipart/form-data"):
        if environ.get("HTTP_X_PARSER") == "rack":
            m = re.match(r'multipart/.*boundary="?([^";,]+)"?', ctype, re.IGNORECASE)
            boundary = m.group(1).encode() if m else b"\x00"
        else:  # PHP: strstr(content_type, "boundary"), then its '='
            at = ctype.find("boundary")
            value = ctype[ctype.find("=", at) + 1 :]
            value = value[1:].split('"', 1)[0] if value.startswith('"') else re.split(r"[,;]", value)[0]
            boundary = value.encode()
        for part in body.split(b"--" + boundary)[1:-1]:
            head, _, value = part.partition(b"\r\n\r\n")
            names = re.findall(rb';\s*name="?([^";\r\n]*)"?', head, re.IGNORECASE)  # the last one wins
            if names and b"filename=" not in head.lower():
                reading = rack2_name if environ.get("HTTP_X_PARSER") == "rack" else php_name
                fields[reading(names[-1].decode("latin-1"))] = value.removesuffix(b"\r\n").decode("latin-1")
    query = {php_name(k): v for k, v in urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)}
    method = environ["REQUEST_METHOD"]
    override = fields.get("_method") or query.get("_method", "")  # Symfony: the body's, else the query's
    if method == "POST" and override.strip():
        method = override.strip().upper()
    PERFORMED.append(method)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [method.encode()]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("method-field-php")
    with serve_wsgi(php_like_app) as url:
        cfg = {
            "upstreams": {"app": {"urls": [url]}},
            "policies": {"audit": {"enabled": False}},
            "routes": [{"path": "/items/*", "upstream": "app", "methods": ["GET", "POST"]}],
        }
        with run_gateway(cfg, tmp) as g:
            yield g


def post(g, body: bytes, ctype: str, parser: str = "php", query: str = ""):
    PERFORMED.clear()
    r = raw_request(g.port, "POST", "/items/7" + query, {"Content-Type": ctype, "X-Parser": parser}, body)
    return r, list(PERFORMED)


FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data; boundary=b"


def test_the_oracle_performs_what_php_would():
    """Without the gateway, the spellings below do reach `$_POST['_method']`."""
    with serve_wsgi(php_like_app) as url:
        port = int(url.rsplit(":", 1)[1])
        for body in (b".method=DELETE", b"_method%00x=DELETE", b" _method=DELETE"):
            PERFORMED.clear()
            raw_request(port, "POST", "/items/7", {"Content-Type": FORM}, body)
            assert PERFORMED == ["DELETE"], body
        PERFORMED.clear()
        raw_request(port, "POST", "/items/7", {"Content-Type": FORM}, b"+method=DELETE")  # leading space dropped
        assert PERFORMED == ["POST"]


@pytest.mark.parametrize(
    "ctype,body",
    [
        (FORM, b".method=DELETE"),
        (FORM, b"%2Emethod=DELETE"),
        (FORM, b"_method%00x=DELETE"),
        (FORM, b"+_method=DELETE"),
        (MULTIPART, b'--b\r\nContent-Disposition: form-data; name=".method"\r\n\r\nDELETE\r\n--b--\r\n'),
        (MULTIPART, b'--b\r\nContent-Disposition: form-data; name="x"; name="_method"\r\n\r\nDELETE\r\n--b--\r\n'),
    ],
)
def test_php_spellings_of_the_field_are_refused(gateway, ctype, body):
    r, performed = post(gateway, body, ctype)
    assert r.status == 400, (r.status, performed)
    assert r.json()["type"].endswith("/bad-method-override")
    assert performed == []


_SEP = st.sampled_from(["_", ".", " ", "%2E", "%20", "%5F", "+"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lead=st.sampled_from(["", "+", "%20"]),
    sep=_SEP,
    tail=st.sampled_from(["", "%00", "%00x", "%00.y"]),
    value=st.sampled_from(["DELETE", "put", " patch "]),
    multipart=st.booleans(),
)
def test_no_spelling_reaches_the_upstream_as_another_method(gateway, lead, sep, tail, value, multipart):
    name = f"{lead}{sep}method{tail}"
    if multipart:
        raw = urllib.parse.unquote_plus(name).encode("latin-1")
        body = b'--b\r\nContent-Disposition: form-data; name="' + raw + b'"\r\n\r\n' + value.encode() + b"\r\n--b--\r\n"
        r, performed = post(gateway, body, MULTIPART)
    else:
        r, performed = post(gateway, f"a=1&{name}={value}".encode(), FORM)
    assert r.status in (200, 400)
    assert performed in ([], ["POST"]), (name, r.status, performed)


_EVIL = b'--zzz\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--zzz--\r\n'
_GOOD = b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--b--\r\n'


@pytest.mark.parametrize(
    "parser,ctype",
    [
        ("php", "multipart/form-data; xboundary=zzz; boundary=b"),
        ("php", "multipart/form-data; boundary=zzz,b"),
        ("rack", "multipart/form-data; boundary=b; xboundary=zzz"),
        ("rack", 'multipart/form-data; boundary=b; x="boundary=zzz"'),
        ("rack", "multipart/form-data; boundary=zzz,b"),
    ],
)
def test_a_boundary_other_parsers_read_differently_is_refused(gateway, parser, ctype):
    r, performed = post(gateway, _EVIL + _GOOD, ctype, parser)
    assert r.status == 400, (r.status, performed)
    assert r.json()["type"].endswith("/ambiguous-content-type")
    assert performed == []


def test_the_oracle_reads_the_other_boundary():
    """Without the gateway, those Content-Types do make the upstream perform the DELETE."""
    with serve_wsgi(php_like_app) as url:
        port = int(url.rsplit(":", 1)[1])
        for parser, ctype in [
            ("php", "multipart/form-data; xboundary=zzz; boundary=b"),
            ("rack", "multipart/form-data; boundary=b; xboundary=zzz"),
        ]:
            PERFORMED.clear()
            raw_request(port, "POST", "/items/7", {"Content-Type": ctype, "X-Parser": parser}, _EVIL + _GOOD)
            assert PERFORMED == ["DELETE"], ctype


@pytest.mark.parametrize(
    "ctype",
    [
        "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
        "multipart/form-data; charset=utf-8; boundary=b",
        'multipart/form-data; boundary="b"',
    ],
)
def test_ordinary_boundaries_still_pass(gateway, ctype):
    boundary = ctype.rsplit("boundary=", 1)[1].strip('"').encode()
    body = b"--" + boundary + b'\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--' + boundary + b"--\r\n"
    r, performed = post(gateway, body, ctype)
    assert r.status == 200 and performed == ["POST"]


@pytest.mark.parametrize(
    "ctype",
    [
        "application/xml; x=/json",
        'text/xml; charset=utf-8; profile="a/json"',
        "application/graphql; x=/json",
        "application/json+xml",
        "application/x-www-form-urlencoded; x=/json",
    ],
)
def test_a_type_laravel_reads_as_json_is_read_as_json(gateway, ctype):
    r, performed = post(gateway, b'{"_method": "DELETE"}', ctype)
    assert r.status == 400, (r.status, performed)
    assert r.json()["type"].endswith("/bad-method-override")
    assert performed == []


def test_xml_and_graphql_bodies_still_pass(gateway):
    for ctype in ("application/xml", "application/graphql"):
        r, performed = post(gateway, b'{"_method": "DELETE"}', ctype)
        assert r.status == 200 and performed == ["POST"], ctype


@pytest.mark.parametrize(
    "query", ["?%5Fmethod=DELETE", "?%5fmethod=put", "?_%6Dethod=DELETE", "?.method=DELETE", "?a=1&_method%00x=PATCH"]
)
def test_the_query_parameter_decoded_or_as_php_reads_it_is_refused(gateway, query):
    """The `_method` query parameter is the edge's (`edge.method_override` off: refused), also
    when percent-encoded or spelled as PHP registers it."""
    r, performed = post(gateway, b"{}", "application/json", query=query)
    assert r.status == 400, (r.status, performed)
    assert r.json()["type"].endswith("/bad-method-override")
    assert performed == []


def test_a_query_without_the_parameter_passes(gateway):
    r, performed = post(gateway, b"{}", "application/json", query="?q=100%25&method=x")
    assert r.status == 200 and performed == ["POST"]


@pytest.mark.parametrize("name", ["[_method]", "_method]", "]]_method]"])
@pytest.mark.parametrize("multipart", [False, True])
def test_names_rack_2_reads_as_the_field_are_refused(gateway, name, multipart):
    if multipart:
        body = f'--b\r\nContent-Disposition: form-data; name="{name}"\r\n\r\nDELETE\r\n--b--\r\n'.encode()
        r, performed = post(gateway, body, MULTIPART, "rack")
    else:
        r, performed = post(gateway, f"{name}=DELETE".encode(), FORM, "rack")
    assert r.status == 400, (r.status, performed)
    assert performed == []


def test_nested_names_pass(gateway):
    r, performed = post(gateway, b"a[_method]=DELETE&_method[]=DELETE", FORM, "rack")
    assert r.status == 200 and performed == ["POST"]
