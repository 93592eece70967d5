"""The live dashboard in Chromium: it loads from the admin listener alone (no CDN), asks for the
admin token, updates while traffic flows, and shows a blocked request with its reason."""

from __future__ import annotations

from helpers import raw_request, run_gateway

from .conftest import real_errors, screenshot

TOKEN = "admin-token-" + "d" * 24


def wait_until(check, timeout=10.0):
    """Poll with locators (Playwright's isolated world): the dashboard's CSP forbids the string
    evaluation `wait_for_function` needs, and that is how it should be."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_dashboard_shows_live_traffic_and_blocks(page, base_config, tmp_path):
    base_config["admin"] = {"host": "127.0.0.1", "port": 0, "token": TOKEN}
    base_config["routes"] = [
        {
            "path": "/open/*",
            "upstream": "up",
            "policies": {"rate_limit": {"limits": [{"rate": "5/minute", "key": ["ip", "route"], "name": "open-5"}]}},
        },
        {"path": "/admin-area/*", "upstream": "up", "policies": {"ip_rules": {"allow": ["10.0.0.0/8"]}}},
    ]
    with run_gateway(base_config, tmp_path) as gw:
        admin = gw.server.admin_port
        external = []
        page.on(
            "request",
            lambda r: (
                not r.url.startswith(f"http://127.0.0.1:{admin}")
                and not r.url.startswith("data:")
                and external.append(r.url)
            ),
        )
        page.goto(f"http://127.0.0.1:{admin}/dashboard")
        assert page.locator("#status").inner_text() == "not connected"
        # a wrong token is refused
        page.fill("#token", "wrong")
        page.click("#auth button")
        wait_until(lambda: "refused" in page.locator("#status").inner_text())
        page.fill("#token", TOKEN)
        page.click("#auth button")
        wait_until(lambda: page.locator("body").get_attribute("data-updated"))
        first = page.locator("body").get_attribute("data-updated")
        for _ in range(8):
            raw_request(gw.port, "GET", "/open/items")
        for _ in range(3):
            raw_request(gw.port, "GET", "/admin-area/secrets")
        wait_until(
            lambda: (
                page.locator("body").get_attribute("data-updated") != first
                and page.locator("#events tbody tr").count() >= 4
            )
        )
        rows = page.locator("#events tbody tr").all_inner_texts()
        assert any("429" in r and "rate_limit" in r and "/open/items" in r for r in rows), rows
        assert any("403" in r and "ip_rules" in r for r in rows), rows
        assert page.locator("#rate path[data-class='2xx']").count() == 1
        assert page.locator("#rate path[data-class='4xx']").count() == 1
        assert page.locator("#rejections rect[data-policy='rate_limit']").count() >= 1
        assert "rate_limit" in page.locator("#rej-legend").inner_text()
        assert "127.0.0.1" in page.locator("#clients").text_content()
        assert "open-5" in page.locator("#limited").text_content()
        assert "open" in page.locator("#headroom").text_content()
        screenshot(page, "dashboard")
        assert not external, external  # every asset from the admin listener
        assert not real_errors(page) or all("401" in e for e in real_errors(page)), page.console_errors
        # the data needs the token; the page itself holds none
        assert raw_request(admin, "GET", "/admin/live").status == 401
        assert raw_request(gw.port, "GET", "/dashboard").status == 404  # never on the public listener
