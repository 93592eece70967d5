"""The admin listener: health, readiness, metrics after known traffic, and the admin API."""

from __future__ import annotations

import json
import re

from helpers import raw_request, run_gateway

from tests.unit.auth.keys import AUD, ISS, RSA, pem_public, sign

TOKEN = "admin-token-" + "x" * 20


def metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? ([0-9.e+-]+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def config(base_config, tmp_path):
    (tmp_path / "rsa.pem").write_text(pem_public(RSA))
    base_config["admin"] = {"host": "127.0.0.1", "port": 0, "token": TOKEN}
    base_config["policies"]["auth"] = {
        "schemes": {
            "bearer": {
                "type": "jwt",
                "issuers": [
                    {
                        "issuer": ISS,
                        "audiences": [AUD],
                        "algorithms": ["RS256"],
                        "keys": [{"kid": "rsa1", "pem_file": "rsa.pem"}],
                    }
                ],
            }
        }
    }
    base_config["policies"]["rate_limit"] = {
        "algorithm": "sliding_log",  # exact counts, whatever the clock
        "limits": [{"rate": "3/minute", "key": ["header:X-Client"]}],
    }
    base_config["routes"] = [{"path": "/api/*", "upstream": "up", "name": "api"}]
    return base_config


def test_metrics_health_and_admin_api(base_config, tmp_path):
    with run_gateway(config(base_config, tmp_path), tmp_path) as g:
        admin = g.server.admin_port
        assert raw_request(admin, "GET", "/healthz").status == 200
        ready = raw_request(admin, "GET", "/readyz")
        assert ready.status == 200 and ready.json()["ready"] is True

        # metrics are per process and other tests share it: compare before and after
        before = raw_request(admin, "GET", "/metrics").body.decode()
        token = sign(RSA)
        for _ in range(4):
            raw_request(g.port, "GET", "/api/x", {"Authorization": f"Bearer {token}", "X-Client": "m1"})
        raw_request(g.port, "GET", "/api/x")  # no credentials: 401
        raw_request(g.port, "GET", "/nowhere")  # 404

        text = raw_request(admin, "GET", "/metrics").body.decode()

        def delta(name, **labels):
            return metric(text, name, **labels) - metric(before, name, **labels)

        assert delta("bastion_requests_total", route="api", status="200") == 3
        assert delta("bastion_requests_total", route="api", status="429") == 1
        assert delta("bastion_requests_total", route="api", status="401") == 1
        assert delta("bastion_requests_total", route="-", status="404") == 1
        assert delta("bastion_rejections_total", policy="rate_limit") == 1
        assert delta("bastion_rejections_total", policy="auth") == 1
        assert delta("bastion_ratelimit_decisions_total", outcome="limited") == 1
        assert delta("bastion_auth_failures_total", reason="authentication required") == 1
        assert delta("bastion_upstream_seconds_count", route="api") == 3
        assert metric(text, "bastion_config_version") == 1

        # the admin API needs its token, and the public listener never serves admin paths
        assert raw_request(admin, "GET", "/admin/config").status == 401
        assert raw_request(admin, "GET", "/admin/config", {"Authorization": "Bearer wrong"}).status == 401
        cfg = raw_request(admin, "GET", "/admin/config", {"Authorization": f"Bearer {TOKEN}"}).json()
        assert cfg["routes"][0]["name"] == "api" and "auth" in cfg["routes"][0]["policies"]
        assert raw_request(g.port, "GET", "/admin/config", {"Authorization": f"Bearer {TOKEN}"}).status == 404
        assert raw_request(g.port, "GET", "/metrics").status == 404

        jti = json.loads(__import__("base64").urlsafe_b64decode(token.split(".")[1] + "=="))["jti"]
        r = raw_request(
            admin,
            "POST",
            "/admin/revoke",
            {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            json.dumps({"jti": jti}).encode(),
        )
        assert r.status == 200 and r.json() == {"revoked": ["jti"]}
        assert (
            raw_request(g.port, "GET", "/api/x", {"Authorization": f"Bearer {token}", "X-Client": "m2"}).status == 401
        )

        r = raw_request(admin, "POST", "/admin/reload", {"Authorization": f"Bearer {TOKEN}"})
        assert r.status == 200 and r.json() == {"reloaded": True, "version": 2}
        assert metric(raw_request(admin, "GET", "/metrics").body.decode(), "bastion_config_reloads_total") == 1
        assert metric(raw_request(admin, "GET", "/metrics").body.decode(), "bastion_config_version") == 2


def test_redis_store_health_is_a_metric(base_config, tmp_path, redis_url):
    url = redis_url
    base_config["admin"] = {"host": "127.0.0.1", "port": 0, "token": TOKEN}
    base_config["policies"]["rate_limit"] = {"store": url, "key_prefix": f"t-{tmp_path.name}", "limits": ["100/minute"]}
    base_config["policies"]["auth"] = {
        "revocation_store": "redis://127.0.0.1:1/0",
        "require": [],
        "schemes": {"k": {"type": "api_key"}},
    }  # a store that is down
    base_config["routes"] = [{"path": "/x/*", "upstream": "up"}]
    with run_gateway(base_config, tmp_path) as g:
        text = raw_request(g.server.admin_port, "GET", "/metrics").body.decode()
    host = url.split("@")[-1]
    assert f'bastion_store_up{{store="redis {host}"}} 1.0' in text
    assert f'bastion_store_latency_seconds{{store="redis {host}"}}' in text
    assert 'bastion_store_up{store="redis redis://127.0.0.1:1/0"} 0.0' in text
