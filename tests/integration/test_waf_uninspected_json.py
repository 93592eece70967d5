"""A body of an uninspected type (`waf.uninspected_types`, for binary uploads) whose Content-Type
mentions JSON in a parameter (`image/png; type=/json`) is inspected all the same: Laravel reads a
body as JSON whenever the Content-Type header contains "/json" or "+json" (`Request::isJson` is
that substring test), so such a body reached a Laravel upstream as JSON values the WAF never saw.
(CRS's 920470 allows only the parameters action, boundary, charset, type and start: those carry it.)
"""

from __future__ import annotations

import json

import pytest
from helpers import raw_request, run_gateway
from servers import serve_wsgi

RECEIVED: list[object] = []
ATTACK = b'{"q": "1\' union select password from users--"}'
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01"


def laravel_like(environ, start_response):
    """Records the JSON it parsed, as Laravel does for a Content-Type containing /json or +json."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    ctype = environ.get("CONTENT_TYPE", "")
    if "/json" in ctype or "+json" in ctype:
        try:
            RECEIVED.append(json.loads(body))
        except ValueError:
            RECEIVED.append(None)
    else:
        RECEIVED.append(body)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("waf-uninspected-json")
    with serve_wsgi(laravel_like) as url:
        cfg = {
            "upstreams": {"app": {"urls": [url]}},
            "policies": {
                "audit": {"enabled": False},
                "waf": {
                    "uninspected_types": ["image/png", "application/octet-stream"],
                    "content_types": ["application/json", "image/png", "application/octet-stream"],
                },
            },
            "routes": [{"path": "/*", "upstream": "app"}],
        }
        with run_gateway(cfg, tmp) as g:
            yield g


def send(g, ctype: str, body: bytes):
    RECEIVED.clear()
    return raw_request(g.port, "POST", "/upload", {"Content-Type": ctype}, body), list(RECEIVED)


@pytest.mark.parametrize(
    "ctype", ["image/png; type=/json", "image/png; action=a/json", "application/octet-stream; start=x+json"]
)
def test_an_uninspected_type_that_mentions_json_is_inspected(gateway, ctype):
    r, received = send(gateway, ctype, ATTACK)
    assert r.status == 403, (r.status, received)
    assert received == []


def test_the_control_json_attack_is_blocked_and_plain_uploads_pass(gateway):
    r, received = send(gateway, "application/json", ATTACK)
    assert r.status == 403 and received == []
    r, received = send(gateway, "image/png", PNG)
    assert r.status == 200 and received == [PNG]
    r, received = send(gateway, "image/png", ATTACK)  # not read as JSON by anyone: passes as documented
    assert r.status == 200 and received == [ATTACK]
