"""The SSRF guard reads a body whose Content-Type mentions JSON in a parameter as JSON too
(`application/xml; x=/json`): Laravel reads such a body as JSON (`Request::isJson` is a substring
test on the header), while the shared reading of request inputs (`bastion.arguments`) went by the
media type alone and never saw the URL in it."""

from __future__ import annotations

import json

import pytest
from helpers import raw_request, run_gateway
from servers import serve_wsgi

RECEIVED: list[object] = []
METADATA = b'{"url": "http://169.254.169.254/latest/meta-data/"}'


def laravel_like(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    ctype = environ.get("CONTENT_TYPE", "")
    RECEIVED.append(json.loads(body) if ("/json" in ctype or "+json" in ctype) else body)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ssrf-json-mention")
    with serve_wsgi(laravel_like) as url:
        cfg = {
            "upstreams": {"app": {"urls": [url]}},
            "policies": {"audit": {"enabled": False}, "ssrf": {}},
            "routes": [{"path": "/*", "upstream": "app"}],
        }
        with run_gateway(cfg, tmp) as g:
            yield g


@pytest.mark.parametrize(
    "ctype",
    [
        "application/json",
        "application/xml; x=/json",
        "application/x-www-form-urlencoded; x=/json",
        "application/graphql; x=/json",
    ],
)
def test_a_url_in_a_body_laravel_reads_as_json_is_refused(gateway, ctype):
    RECEIVED.clear()
    r = raw_request(gateway.port, "POST", "/fetch", {"Content-Type": ctype}, METADATA)
    assert r.status == 400, (r.status, RECEIVED)
    assert r.json()["type"].endswith("/ssrf-blocked")
    assert RECEIVED == []


def test_a_harmless_body_of_such_a_type_passes(gateway):
    RECEIVED.clear()
    r = raw_request(gateway.port, "POST", "/fetch", {"Content-Type": "application/xml; x=/json"}, b'{"name": "x"}')
    assert r.status == 200 and RECEIVED == [{"name": "x"}]
