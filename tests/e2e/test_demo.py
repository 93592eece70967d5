"""`bastion demo` as a user runs it: one command, every face of bastion on loopback (the edge
routes, the API behind its OpenAPI spec, the token service, GraphQL behind the guard, the live
dashboard), and the scan of the demo API directly and through the gateway, side by side. Every
claim the tour prints is checked here against the running demo."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import raw_request

BASTION = [sys.executable, "-m", "bastion.cli"]
JSON = {"Content-Type": "application/json"}


def test_demo_shows_every_face_and_compares_the_scans(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [*BASTION, "demo", "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()

    def wait_for(pattern: str, timeout: float = 120) -> re.Match:
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, "".join(lines), re.S)
            if m:
                return m
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not in the demo's output:\n{''.join(lines)}")

    try:
        gw = int(wait_for(r"gateway on http://127\.0\.0\.1:(\d+)").group(1))
        up = int(wait_for(r"demo API on http://127\.0\.0\.1:(\d+)").group(1))
        m = wait_for(r"dashboard: http://127\.0\.0\.1:(\d+)/dashboard\s+\(admin token: ([\w-]+)\)")
        admin, token = int(m.group(1)), m.group(2)

        # the API behind its OpenAPI spec
        assert raw_request(gw, "GET", "/api/users").status == 401
        r = raw_request(gw, "GET", "/api/internal/debug")
        assert r.status == 404 and r.json()["type"].endswith("/undocumented-endpoint")
        # the token service: register, login, refresh, logout
        password = "Demo-password-9!"
        r = raw_request(
            gw,
            "POST",
            "/auth/register",
            JSON,
            json.dumps({"username": "dana", "email": "dana@example.com", "password": password}).encode(),
        )
        assert r.status == 201, r.body
        login = raw_request(
            gw, "POST", "/auth/login", JSON, json.dumps({"username": "dana", "password": password}).encode()
        ).json()
        bearer = {"Authorization": f"Bearer {login['access_token']}"}
        assert raw_request(gw, "GET", "/api/users", bearer).status == 200
        r = raw_request(gw, "POST", "/api/users/1/orders", {**bearer, **JSON}, b'{"item": "pen", "quantity": 1000}')
        assert r.status == 422 and r.json()["errors"][0]["rule"] == "maximum", r.body
        r = raw_request(gw, "POST", "/api/users/1/orders", {**bearer, **JSON}, b'{"item": "pen", "total": 0}')
        assert r.status == 422 and r.json()["errors"][0]["rule"] == "additionalProperties", r.body
        r = raw_request(gw, "GET", "/api/admin/settings", bearer)
        assert r.status == 403 and "admin" in r.json()["detail"]
        r = raw_request(
            gw, "POST", "/auth/refresh", JSON, json.dumps({"refresh_token": login["refresh_token"]}).encode()
        )
        assert r.status == 200 and r.json()["refresh_token"] != login["refresh_token"]
        assert raw_request(gw, "POST", "/auth/logout", bearer).status == 204
        assert raw_request(gw, "GET", "/api/users", bearer).status == 401

        # GraphQL behind the guard, and the same API unguarded
        def gql(port, path, query):
            return raw_request(port, "POST", path, JSON, json.dumps({"query": query}).encode())

        assert gql(gw, "/api/graphql", "{ users(first: 2) { username orders { item } } }").status == 200
        deep = "{ users { friends { friends { friends { friends { friends { id } } } } } } }"
        r = gql(gw, "/api/graphql", deep)
        assert r.status == 400 and "depth" in r.json()["errors"][0]["message"]
        assert gql(up, "/graphql", deep).status == 200
        assert gql(gw, "/api/graphql", "{ __schema { types { name } } }").status == 403
        # the edge routes of the first tour still work
        assert raw_request(gw, "GET", "/users/1").json()["username"] == "alice"
        assert raw_request(gw, "GET", "/%61dmin/settings").status == 403
        # the live dashboard and its data
        assert b"<html" in raw_request(admin, "GET", "/dashboard").body.lower()
        assert raw_request(admin, "GET", "/admin/live", {"Authorization": f"Bearer {token}"}).status == 200
        # the two scans, side by side, and their HTML reports
        m = wait_for(r"all findings\s*│\s*(\d+)[^│]*│\s*(\d+)", timeout=240)
        direct, through = int(m.group(1)), int(m.group(2))
        assert direct > through, (direct, through)
        reports = wait_for(r"HTML reports: (\S+scan-direct\.html)\s+(\S+scan-gateway\.html)")
        for path in reports.groups():
            assert "<html" in Path(path).read_text().lower()
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        reader.join(5)
    assert code == 0, "".join(lines)
    assert "Traceback" not in "".join(lines)
