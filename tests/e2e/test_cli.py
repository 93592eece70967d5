"""The `bastion` command as a user runs it: check, config-schema, serve with reload, demo."""

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

import pytest
import yaml
from helpers import PROCESS_SECONDS, STARTUP_SECONDS, raw_request, wait_for
from upstream_app import SLOW_STARTED

BASTION = [sys.executable, "-m", "bastion.cli"]


def run(*args, **kw):
    return subprocess.run([*BASTION, *args], capture_output=True, text=True, timeout=PROCESS_SECONDS, **kw)


def test_check_accepts_the_demo_config():
    path = Path(__file__).parents[2] / "src/bastion/demo/bastion.yaml"
    r = run("check", str(path))
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stderr


def test_check_names_key_and_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "upstreams:\n  api: {urls: ['http://127.0.0.1:1']}\nroutes:\n  - path: /a\n    upstream: api\n    methods: [FETCH]\n"
    )
    r = run("check", str(cfg))
    assert r.returncode == 2
    assert f"{cfg}:6: routes[0].methods" in r.stderr.replace("\n", "") or "routes[0].methods" in r.stderr
    assert ":6:" in r.stderr and "FETCH" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "text,needle",
    [
        ("listeners: [{host: 0.0.0.0, port: 8080}]\n", "plain HTTP"),
        ("policies: {cors: {allow_origins: ['*'], allow_credentials: true}}\n", "allow_credentials"),
        ("trusted_proxies: ['0.0.0.0/0']\n", "everyone"),
    ],
)
def test_check_refuses_insecure_settings(tmp_path, text, needle):
    cfg = tmp_path / "insecure.yaml"
    cfg.write_text(text)
    r = run("check", str(cfg))
    assert r.returncode == 2 and needle in r.stderr.replace("\n", " ")


def test_serve_refuses_an_insecure_config(tmp_path):
    cfg = tmp_path / "insecure.yaml"
    cfg.write_text("listeners: [{host: 0.0.0.0, port: 0}]\n")
    r = run("serve", "--config", str(cfg))
    assert r.returncode == 2 and "refused" in r.stderr


def test_keys_new_and_hash_agree():
    r = run("keys", "new", "--env", "test")
    assert r.returncode == 0
    lines = {k: v.strip() for k, v in (line.split(":", 1) for line in r.stdout.strip().splitlines())}
    assert lines["key"].startswith("bk_test_") and len(lines["key"]) > 40
    again = run("keys", "hash", lines["key"])
    assert again.stdout.strip() == lines["hash"]


def test_config_schema_validates_the_demo_config():
    import jsonschema

    r = run("config-schema")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    demo = yaml.safe_load(
        re.sub(
            r"\$\{\w+:-([^}]*)\}",
            r"\1",  # every ${VAR:-default} as its default
            (Path(__file__).parents[2] / "src/bastion/demo/bastion.yaml").read_text(),
        )
    )
    jsonschema.validate(demo, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"listeners": [{"prot": 1}]}, schema)
    assert "cors" in schema["$defs"]["PoliciesConfig"]["properties"]


class Serve:
    """`bastion serve` in a subprocess; its stderr is collected in the background."""

    def __init__(self, cfg: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*BASTION, "serve", "--workers", "1", "--config", str(cfg), *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self.port: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.time() + STARTUP_SECONDS
        while self.port is None:
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("serve did not start:\n" + "".join(self.lines))
            time.sleep(0.05)

    def _read(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.lines.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))

    def wait_for(self, needle: str, timeout: float = STARTUP_SECONDS) -> None:
        deadline = time.time() + timeout
        while not any(needle in line for line in self.lines):
            if time.time() > deadline:
                raise AssertionError(f"{needle!r} not logged:\n" + "".join(self.lines))
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


def write_config(path: Path, upstream_url: str, routes: list[dict], audit: Path) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "listeners": [{"host": "127.0.0.1", "port": 0}],
                "upstreams": {"up": {"urls": [upstream_url]}},
                "policies": {"audit": {"output": str(audit)}},
                "routes": routes,
            }
        )
    )


def test_sighup_reload_good_and_bad(upstream, tmp_path):
    cfg = tmp_path / "bastion.yaml"
    audit = tmp_path / "audit.log"
    write_config(cfg, upstream.url, [{"path": "/one/*", "upstream": "up"}], audit)
    srv = Serve(cfg, "--no-watch")
    try:
        assert raw_request(srv.port, "GET", "/one/x").status == 200
        assert raw_request(srv.port, "GET", "/two/x").status == 404
        write_config(cfg, upstream.url, [{"path": "/two/*", "upstream": "up"}], audit)
        srv.proc.send_signal(signal.SIGHUP)
        srv.wait_for("config reloaded (SIGHUP), version 2")
        assert raw_request(srv.port, "GET", "/two/x").status == 200
        assert raw_request(srv.port, "GET", "/one/x").status == 404
        cfg.write_text("routes:\n  - path: /three\n    upstream: missing\n")
        srv.proc.send_signal(signal.SIGHUP)
        srv.wait_for("reload (SIGHUP) refused")
        assert any(":3: routes[0].upstream" in line for line in srv.lines)
        assert raw_request(srv.port, "GET", "/two/x").status == 200  # the old config still serves
    finally:
        assert srv.stop() == 0


def test_reload_on_file_change(upstream, tmp_path):
    cfg = tmp_path / "bastion.yaml"
    audit = tmp_path / "audit.log"
    write_config(cfg, upstream.url, [{"path": "/one/*", "upstream": "up"}], audit)
    srv = Serve(cfg)
    try:
        time.sleep(1.1)  # mtime granularity
        write_config(cfg, upstream.url, [{"path": "/changed/*", "upstream": "up"}], audit)
        srv.wait_for("config reloaded (file changed)")
        assert raw_request(srv.port, "GET", "/changed/x").status == 200
    finally:
        srv.stop()


def test_in_flight_requests_finish_across_reload_and_shutdown(upstream, tmp_path):
    cfg = tmp_path / "bastion.yaml"
    audit = tmp_path / "audit.log"
    write_config(cfg, upstream.url, [{"path": "/*", "upstream": "up"}], audit)
    srv = Serve(cfg, "--no-watch")
    results: list[int] = []
    before = SLOW_STARTED[0]
    t = threading.Thread(target=lambda: results.append(raw_request(srv.port, "GET", "/slow?s=1.5").status))
    t.start()
    wait_for(lambda: SLOW_STARTED[0] > before, what="the slow request to reach the upstream")
    write_config(cfg, upstream.url, [{"path": "/other/*", "upstream": "up"}], audit)
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_for("config reloaded")
    time.sleep(0.2)
    code = srv.stop()  # SIGTERM while the slow request is still in flight
    t.join(10)
    assert results == [200]
    assert code == 0


def test_demo_starts_serves_and_stops(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*BASTION, "demo", "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    out = ""
    deadline = time.time() + 20
    port = None
    while port is None and time.time() < deadline:
        line = proc.stderr.readline()
        out += line
        m = re.search(r"gateway on http://127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
    assert port, out
    try:
        r = raw_request(port, "GET", "/users/1")
        assert r.status == 200 and r.json()["username"] == "alice"
        assert raw_request(port, "GET", "/admin/settings").status == 403
        assert raw_request(port, "GET", "/%61dmin/settings").status == 403
        key = {"X-API-Key": "bk_test_demo_key_for_the_bastion_tour_only_0000"}
        assert raw_request(port, "GET", "/users/1/orders").status == 401
        assert raw_request(port, "GET", "/users/1/orders", key).status == 200
        assert raw_request(port, "GET", "/users/2/orders", key).status == 404  # not this key's owner
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    assert "Traceback" not in proc.stderr.read()
