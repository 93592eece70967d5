"""A GraphQL subscription in Chromium through the gateway: the page's WebSocket speaks
graphql-transport-ws, authenticated by the site's cookie; a deep subscription is refused while the
socket stays open; the same cookie on a handshake from another origin of the site is refused
(cross-site WebSocket hijacking)."""

from __future__ import annotations

import json
import time

import pytest
from helpers import ThreadedUvicorn, audit_lines, run_gateway
from integration.test_websocket_graphql import graphql_ws
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute

from bastion.auth.apikeys import hash_key

KEY = "bk_test_" + "B" * 43
PAGE = "<!doctype html><html><head><title>live</title></head><body><h1>live</h1><ul id=out></ul></body></html>"


async def page(_request):
    return HTMLResponse(PAGE)


app = Starlette(routes=[Route("/page", page), WebSocketRoute("/graphql", graphql_ws)])

SUBSCRIBE = """async (url) => {
  const ws = new WebSocket(url, ['graphql-transport-ws']);
  const out = {opened: false, counts: [], deepError: null, closed: null};
  const done = new Promise((resolve) => {
    ws.onopen = () => { out.opened = true; ws.send(JSON.stringify({type: 'connection_init'})); };
    ws.onerror = () => resolve();
    ws.onclose = (e) => { out.closed = e.code; resolve(); };
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.type === 'connection_ack') {
        ws.send(JSON.stringify({id: 'deep', type: 'subscribe',
          payload: {query: 'subscription { tick { next { next { next { n } } } } }'}}));
      } else if (m.id === 'deep' && m.type === 'error') {
        out.deepError = m.payload[0].extensions.code;
        ws.send(JSON.stringify({id: 'c', type: 'subscribe', payload: {query: 'subscription { count(to: 3) }'}}));
      } else if (m.id === 'c' && m.type === 'next') {
        out.counts.push(m.payload.data.count);
        const li = document.createElement('li'); li.textContent = m.payload.data.count;
        document.getElementById('out').appendChild(li);
      } else if (m.id === 'c' && m.type === 'complete') {
        ws.close(1000); resolve();
      }
    };
  });
  await Promise.race([done, new Promise((r) => setTimeout(r, 8000))]);
  return out;
}"""


@pytest.fixture(scope="module")
def site():
    with ThreadedUvicorn(app) as up, ThreadedUvicorn(app) as other:
        yield up, other


@pytest.fixture()
def gateway(site, tmp_path):
    up, _ = site
    auth = {
        "schemes": {
            "key": {
                "type": "api_key",
                "cookie": "session_key",
                "keys": [{"id": "b1", "hash": hash_key(KEY), "owner": "browser-user", "scopes": []}],
            }
        }
    }
    cfg = {
        "upstreams": {"app": {"urls": [up.url]}},
        "policies": {"audit": {"output": str(tmp_path / "audit.log")}},
        "routes": [
            {  # the API's JSON default (default-src 'none') would forbid the page its own socket
                "path": "/page",
                "upstream": "app",
                "policies": {
                    "security_headers": {"content_security_policy": "default-src 'self'; frame-ancestors 'none'"}
                },
            },
            {
                "path": "/graphql",
                "upstream": "app",
                "policies": {"auth": auth, "graphql": {"mode": "enforce", "limits": {"max_depth": 3}}},
            },
        ],
    }
    with run_gateway(cfg, tmp_path) as gw:
        gw.audit = tmp_path / "audit.log"  # type: ignore[attr-defined]
        yield gw


def test_subscription_in_chromium_through_the_gateway(page, site, gateway):
    from .conftest import real_errors, screenshot

    origin = f"http://127.0.0.1:{gateway.port}"
    page.context.add_cookies([{"name": "session_key", "value": KEY, "url": origin}])
    page.goto(origin + "/page")  # the page comes through the gateway: the socket is same-origin
    out = page.evaluate(SUBSCRIBE, f"ws://127.0.0.1:{gateway.port}/graphql")
    screenshot(page, "websocket-subscription")
    assert out["opened"], out
    assert out["deepError"] == "QUERY_LIMIT_EXCEEDED", out
    assert out["counts"] == [1, 2, 3], out
    assert page.locator("#out li").count() == 3
    assert real_errors(page) == []


def test_cookie_handshake_from_another_origin_refused_in_chromium(page, site, gateway):
    _, other = site
    page.context.add_cookies([{"name": "session_key", "value": KEY, "url": f"http://127.0.0.1:{gateway.port}"}])
    page.goto(f"http://127.0.0.1:{other.port}/page")  # same site (cookies go along), another origin
    out = page.evaluate(SUBSCRIBE, f"ws://127.0.0.1:{gateway.port}/graphql")
    assert not out["opened"] and out["counts"] == [], out
    deadline = time.time() + 5
    while True:  # audit lines are flushed in batches
        lines = audit_lines(gateway.audit)
        refused = [x for x in lines if x.get("status") == 403 and x.get("path") == "/graphql"]
        if refused or time.time() > deadline:
            break
        time.sleep(0.1)
    assert refused and refused[0]["principal"] == "browser-user", json.dumps(lines)[:2000]
    assert (refused[0]["stopped_by"], refused[0]["reason"]) == ("websocket", "cross-site-websocket")
