"""OpenAPI validation of a body whose Content-Type names a non-JSON type but mentions JSON in a
parameter (`image/png; type=/json`): the gateway checked it as the declared `image/png` (a binary
string, anything goes) while Laravel reads a body as JSON whenever the header contains "/json" or
"+json" (`Request::isJson`), so JSON the operation's JSON schema refuses (an extra `is_admin`)
reached the application. Such requests are refused (415)."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import raw_request, run_gateway
from servers import serve_wsgi

RECEIVED: list[object] = []
SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "avatars", "version": "1"},
    "paths": {
        "/avatar": {
            "post": {
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {
                        "image/png": {"schema": {"type": "string", "format": "binary"}},
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"name": {"type": "string", "maxLength": 5}},
                                "additionalProperties": False,
                            }
                        },
                    },
                },
                "responses": {"200": {"description": "ok"}},
            }
        }
    },
}
MASS_ASSIGNMENT = b'{"name": "eve", "is_admin": true}'


def laravel_like(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    ctype = environ.get("CONTENT_TYPE", "")
    RECEIVED.append(json.loads(body) if ("/json" in ctype or "+json" in ctype) else body)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("validation-json-mention")
    (tmp / "avatars.yaml").write_text(yaml.safe_dump(SPEC))
    with serve_wsgi(laravel_like) as url:
        cfg = {
            "upstreams": {"app": {"urls": [url]}},
            "policies": {"audit": {"enabled": False}},
            "routes": [{"path": "/*", "upstream": "app", "openapi": str(tmp / "avatars.yaml"), "base_path": "/"}],
        }
        with run_gateway(cfg, tmp) as g:
            yield g


def send(g, ctype: str, body: bytes):
    RECEIVED.clear()
    return raw_request(g.port, "POST", "/avatar", {"Content-Type": ctype}, body), list(RECEIVED)


@pytest.mark.parametrize("ctype", ["image/png; type=/json", "image/png; x=a+json", "image/png; start=a/json"])
def test_json_named_in_a_parameter_is_refused(gateway, ctype):
    r, received = send(gateway, ctype, MASS_ASSIGNMENT)
    assert r.status == 415, (r.status, received)
    assert received == []


def test_the_json_schema_applies_to_json_and_png_passes(gateway):
    r, received = send(gateway, "application/json", MASS_ASSIGNMENT)
    assert r.status == 422 and received == []
    r, received = send(gateway, "application/json", b'{"name": "eve"}')
    assert r.status == 200 and received == [{"name": "eve"}]
    r, received = send(gateway, "image/png", b"\x89PNG\r\n\x1a\n")
    assert r.status == 200 and received == [b"\x89PNG\r\n\x1a\n"]
