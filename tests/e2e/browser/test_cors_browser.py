"""CORS the way a browser enforces it: pages served from an allowed and a disallowed origin call
the gateway (another origin) with credentials, simple and preflighted."""

from __future__ import annotations

import pytest
from helpers import ThreadedUvicorn, run_gateway

PAGE = b"<!doctype html><html><head><title>caller</title></head><body><h1>caller</h1></body></html>"


async def page_app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(PAGE)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": PAGE})


@pytest.fixture(scope="module")
def sites():
    with ThreadedUvicorn(page_app) as allowed, ThreadedUvicorn(page_app) as other:
        yield allowed, other


@pytest.fixture()
def gateway(sites, base_config, tmp_path):
    allowed, _ = sites
    base_config["policies"]["cors"] = {
        "allow_origins": [f"http://localhost:{allowed.port}"],
        "allow_credentials": True,
        "allow_methods": ["GET", "POST", "PUT"],
        "allow_headers": ["content-type", "x-client"],
        "expose_headers": ["x-request-id"],
    }
    base_config["routes"] = [{"path": "/*", "upstream": "up"}]
    with run_gateway(base_config, tmp_path) as gw:
        yield gw


CALL = """async ([url, init]) => {
  try {
    const r = await fetch(url, {credentials: 'include', ...init});
    return {status: r.status, requestId: r.headers.get('x-request-id')};
  } catch (e) { return {blocked: String(e)}; }
}"""


def call(page, url, **init):
    return page.evaluate(CALL, [url, init])


def test_allowed_origin_simple_and_preflighted(page, sites, gateway):
    allowed, _ = sites
    page.goto(f"http://localhost:{allowed.port}/")
    target = f"http://127.0.0.1:{gateway.port}/echo"
    simple = call(page, target)
    assert simple.get("status") == 200, simple
    assert simple["requestId"]  # exposed header readable by the page
    pre = call(
        page, target, method="PUT", headers={"content-type": "application/json", "x-client": "web"}, body='{"a":1}'
    )
    assert pre.get("status") == 200, pre


def test_disallowed_origin_is_blocked_by_the_browser(page, sites, gateway):
    _, other = sites
    page.goto(f"http://localhost:{other.port}/")
    result = call(page, f"http://127.0.0.1:{gateway.port}/echo")
    assert "blocked" in result, result
    assert any("CORS" in e or "Access-Control" in e for e in page.console_errors), page.console_errors


def test_preflight_for_a_disallowed_method_or_header_is_blocked(page, sites, gateway):
    allowed, _ = sites
    page.goto(f"http://localhost:{allowed.port}/")
    target = f"http://127.0.0.1:{gateway.port}/echo"
    assert "blocked" in call(page, target, method="DELETE")
    assert "blocked" in call(page, target, method="POST", headers={"x-secret-header": "1"})
    assert call(page, target, method="POST", headers={"x-client": "ok"}).get("status") == 200
