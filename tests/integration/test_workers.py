"""`bastion serve --workers 2`: real worker processes on shared sockets, a real supervisor, real
Redis. Rate limits exact across workers, reload reaching every worker (a bad file refused once),
a killed worker replaced, no request lost while reloading under load, metrics summed."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import PROCESS_SECONDS, STARTUP_SECONDS, wait_for
from upstream_app import SLOW_STARTED

BASTION = [sys.executable, "-m", "bastion.cli"]
TOKEN = "workers-test-token-0123456789abcdef"
# The supervisor's /admin/workers asks each worker twice, up to 5 s each; a worker that is still
# starting (imports take 10 s on a loaded machine) answers late: a client timeout of 15 s failed.
ANSWER_SECONDS = 60


class Workers:
    """`bastion serve --workers 2` in a subprocess; the ports are read from its log."""

    def __init__(self, cfg: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*BASTION, "serve", "--config", str(cfg), "--workers", "2", *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self.port: int | None = None
        self.admin: int | None = None
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for("workers serving")

    def _read(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.lines.append(line)
            if m := re.search(r"workers serving http://127\.0\.0\.1:(\d+)", line):
                self.port = int(m.group(1))
            if m := re.search(r"admin listening on http://127\.0\.0\.1:(\d+)", line):
                self.admin = int(m.group(1))

    def wait_for(self, needle: str, timeout: float = STARTUP_SECONDS) -> None:
        deadline = time.time() + timeout
        while not any(needle in line for line in self.lines):
            if time.time() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{needle!r} not logged:\n" + "".join(self.lines))
            time.sleep(0.05)

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.lines)

    def get(self, path: str) -> int:
        """One request on a new connection (so the kernel hands it to either worker)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=ANSWER_SECONDS)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def admin_get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=ANSWER_SECONDS)
        try:
            conn.request("GET", path, headers={"authorization": f"Bearer {TOKEN}"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def workers(self) -> list[dict[str, Any]]:
        status, body = self.admin_get("/admin/workers")
        assert status == 200, body
        return json.loads(body)["workers"]

    def wait_workers(self, ok, timeout: float = STARTUP_SECONDS) -> list[dict[str, Any]]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            rows = self.workers()
            if ok(rows):
                return rows
            time.sleep(0.2)
        raise AssertionError(f"workers never reached the state: {rows}\n" + "".join(self.lines[-30:]))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(40)


def _config(
    path: Path, upstream_url: str, tmp_path: Path, routes: list[dict], store: str | None = None, **extra: Any
) -> Path:
    """`store`: the rate-limit store of the defaults (the login-path limits are on by default:
    with a `memory` store, several workers are refused)."""
    policies: dict[str, Any] = {"audit": {"output": str(tmp_path / "audit.log")}}
    if store:
        policies["rate_limit"] = {"store": store, "key_prefix": f"bastion:test-workers:{uuid.uuid4().hex}"}
    doc = {
        "listeners": [{"host": "127.0.0.1", "port": 0}],
        "upstreams": {"up": {"urls": [upstream_url]}},
        "admin": {"host": "127.0.0.1", "port": 0, "token": TOKEN},
        "policies": policies,
        "routes": routes,
        **extra,
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture()
def served(upstream, tmp_path, redis_url):
    running: list[Workers] = []

    def start(routes: list[dict], *args: str, **extra: Any) -> Workers:
        cfg = _config(tmp_path / "bastion.yaml", upstream.url, tmp_path, routes, redis_url, **extra)
        w = Workers(cfg, *args)
        running.append(w)
        return w

    yield start
    for w in running:
        assert w.stop() == 0, "".join(w.lines[-30:])


def _both_served(rows: list[dict[str, Any]]) -> bool:
    return all(r["requests_5m"] > 0 for r in rows)


def test_rate_limit_is_exact_across_workers(served, redis_url):
    prefix = f"bastion:test-workers:{uuid.uuid4().hex}"
    limit = {
        "rate_limit": {
            "store": redis_url,
            "key_prefix": prefix,
            "algorithm": "sliding_log",  # exact across workers and whatever the clock
            "limits": ["15/minute"],
        }
    }
    w = served([{"path": "/limited", "upstream": "up", "policies": limit}])
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: w.get("/limited"), range(48)))
    assert statuses.count(200) == 15, statuses
    assert statuses.count(429) == 33, statuses
    rows = w.workers()
    assert sum(r["requests_5m"] for r in rows) == 48
    assert _both_served(rows), rows  # the limit held although both processes answered


def test_metrics_are_summed_across_workers(served):
    w = served([{"path": "/", "upstream": "up"}])
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        while sent < 400:
            assert set(pool.map(lambda _: w.get("/"), range(40))) == {200}
            sent += 40
            if _both_served(w.workers()):
                break
    rows = w.workers()
    assert _both_served(rows), rows
    status, body = w.admin_get("/metrics")
    assert status == 200
    text = body.decode()
    m = re.search(r'^bastion_requests_total\{method="GET",route="/",status="200"\} ([0-9.e+]+)$', text, re.M)
    assert m, text[:2000]
    assert float(m.group(1)) == sent == sum(r["requests_5m"] for r in rows)
    assert re.search(r"^bastion_workers 2\.0$", text, re.M)
    hist = re.search(r'^bastion_gateway_overhead_seconds_count\{route="/"\} ([0-9.e+]+)$', text, re.M)
    assert hist and float(hist.group(1)) == sent
    status, body = w.admin_get("/admin/live?seconds=60")
    live = json.loads(body)
    assert live["workers"] == 2
    assert sum(p["total"] for p in live["series"]) == sent


def test_a_changed_file_reaches_every_worker(served, upstream, tmp_path, redis_url):
    w = served([{"path": "/a", "upstream": "up"}])  # watching the file (the default)
    assert w.get("/b") == 404
    time.sleep(1.1)  # a new mtime even on a coarse clock
    _config(tmp_path / "bastion.yaml", upstream.url, tmp_path, [{"path": "/b", "upstream": "up"}], redis_url)
    w.wait_workers(lambda rows: all(r["version"] == 2 for r in rows))
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda _: w.get("/b"), range(40))) == {200}
    assert w.get("/a") == 404


def test_reload_reaches_every_worker_and_a_bad_file_is_refused_once(served, upstream, tmp_path, redis_url):
    w = served([{"path": "/a", "upstream": "up"}], "--no-watch")
    assert w.get("/b") == 404
    _config(
        tmp_path / "bastion.yaml",
        upstream.url,
        tmp_path,
        [{"path": "/a", "upstream": "up"}, {"path": "/b", "upstream": "up"}],
        redis_url,
    )
    w.proc.send_signal(signal.SIGHUP)
    w.wait_workers(lambda rows: all(r["version"] == 2 for r in rows))
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda _: w.get("/b"), range(40))) == {200}
    (tmp_path / "bastion.yaml").write_text("routes: [{path: /c, upstream: nowhere}]\n")
    w.proc.send_signal(signal.SIGHUP)
    w.wait_for("refused, the running config stays")
    time.sleep(1.5)  # a worker that saw the file would log its own refusal by now
    assert w.count("refused, the running config stays") == 1, "".join(w.lines[-20:])
    before = w.workers()
    assert all(r["version"] == 2 for r in before)
    assert w.get("/b") == 200
    os.kill(before[1]["pid"], signal.SIGKILL)  # its replacement gets the last good config, not the file
    w.wait_workers(lambda rows: rows[1]["pid"] not in (None, before[1]["pid"]) and rows[1]["version"] == 2)
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda _: w.get("/b"), range(40))) == {200}
    assert w.count("refused, the running config stays") == 1


def test_a_killed_worker_is_replaced_at_the_current_version(served, upstream, tmp_path):
    w = served([{"path": "/a", "upstream": "up"}], "--no-watch")
    status, body = w.admin_get("/admin/reload")  # GET is not the reload: still 404
    assert status == 404
    conn = http.client.HTTPConnection("127.0.0.1", w.admin, timeout=ANSWER_SECONDS)
    conn.request("POST", "/admin/reload", headers={"authorization": f"Bearer {TOKEN}"})
    answer = conn.getresponse()
    assert answer.status == 200 and json.loads(answer.read())["version"] == 2
    conn.close()
    before = w.wait_workers(lambda rows: all(r["version"] == 2 for r in rows))
    victim = before[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    failures = []
    with ThreadPoolExecutor(4) as pool:  # the survivor answers while the replacement starts
        statuses = list(pool.map(lambda _: w.get("/a"), range(40)))
    failures = [s for s in statuses if s != 200]
    assert failures == []
    rows = w.wait_workers(lambda rows: rows[0]["pid"] not in (None, victim) and rows[0]["version"] == 2)
    assert rows[0]["restarts"] == 1 and rows[1]["restarts"] == 0
    w.wait_for(f"(pid {victim}) died (signal SIGKILL)")
    status, body = w.admin_get("/metrics")
    assert re.search(r"^bastion_worker_restarts_total 1\.0$", body.decode(), re.M)


def test_no_request_is_lost_while_reloading_under_load(served):
    w = served([{"path": "/", "upstream": "up"}], "--no-watch")
    stop = threading.Event()
    results: list[Any] = []

    def client(keepalive: bool) -> None:
        conn = None
        while not stop.is_set():
            try:
                if conn is None or not keepalive:
                    conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=ANSWER_SECONDS)
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                results.append(resp.status)
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as exc:  # a reset or a timeout is a lost request
                results.append(repr(exc))
                conn = None

    threads = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(6)]
    for t in threads:
        t.start()
    try:
        for version in (2, 3, 4):  # requests before each reload and after the last: counted, not timed
            done = len(results)
            wait_for(lambda n=done: len(results) >= n + 40, what="40 more answers")
            w.proc.send_signal(signal.SIGHUP)
            w.wait_workers(lambda rows, v=version: all(r["version"] == v for r in rows))
        done = len(results)
        wait_for(lambda: len(results) >= done + 40, what="40 more answers")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    lost = [r for r in results if r != 200]
    assert len(results) > 100 and lost == [], (len(results), lost[:10])


def test_sigterm_finishes_in_flight_requests(served):
    w = served([{"path": "/slow", "upstream": "up"}], "--no-watch")
    out: list[Any] = []

    def slow() -> None:
        try:
            out.append(w.get("/slow?s=2"))
        except Exception as exc:
            out.append(repr(exc))

    before = SLOW_STARTED[0]
    threads = [threading.Thread(target=slow) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: SLOW_STARTED[0] >= before + 4, what="the four requests to reach the upstream")
    assert w.stop() == 0
    for t in threads:
        t.join(10)
    assert out == [200, 200, 200, 200]


def test_a_port_in_use_is_reported_once_by_the_supervisor(upstream, tmp_path, redis_url):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = _config(tmp_path / "b.yaml", upstream.url, tmp_path, [{"path": "/", "upstream": "up"}], redis_url)
        doc = yaml.safe_load(cfg.read_text())
        doc["listeners"] = [{"host": "127.0.0.1", "port": taken.getsockname()[1]}]
        cfg.write_text(yaml.safe_dump(doc))
        r = subprocess.run(
            [*BASTION, "serve", "--config", str(cfg), "--workers", "2"],
            capture_output=True,
            text=True,
            timeout=PROCESS_SECONDS,
        )
    assert r.returncode == 1
    out = r.stdout + r.stderr
    assert out.count("cannot start") == 1 and "worker 0 started" not in out, out


# --- per-process state -----------------------------------------------------------------------


def _check(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BASTION, "check", str(cfg), *args], capture_output=True, text=True, timeout=PROCESS_SECONDS)


def test_memory_stores_with_several_workers_are_refused_unless_accepted(upstream, tmp_path):
    limit = {"rate_limit": {"limits": ["10/minute"]}}
    cfg = _config(tmp_path / "mem.yaml", upstream.url, tmp_path, [{"path": "/", "upstream": "up", "policies": limit}])
    assert _check(cfg, "--workers", "1").returncode == 0
    r = _check(cfg, "--workers", "2")
    assert r.returncode == 2
    assert "routes[0].policies.rate_limit.store" in r.stdout + r.stderr
    assert "allow_per_worker_state" in r.stdout + r.stderr
    served = subprocess.run(
        [*BASTION, "serve", "--config", str(cfg), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=PROCESS_SECONDS,
    )
    assert served.returncode == 2  # refused before anything is bound
    accepted = _config(
        tmp_path / "ok.yaml",
        upstream.url,
        tmp_path,
        [{"path": "/", "upstream": "up", "policies": limit}],
        allow_per_worker_state=True,
    )
    r = _check(accepted, "--workers", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "limits apply per worker" in " ".join((r.stdout + r.stderr).split())
    workers = _config(
        tmp_path / "w.yaml", upstream.url, tmp_path, [{"path": "/", "upstream": "up", "policies": limit}], workers=2
    )
    assert _check(workers).returncode == 2  # `workers:` in the file counts as well


def test_worker_count_default():
    from bastion.config import lint as lint_mod
    from bastion.config.model import GatewayConfig

    plain = GatewayConfig.model_validate({"routes": []})  # the login-path limits, in memory
    memory = GatewayConfig.model_validate({"policies": {"rate_limit": {"limits": ["5/second"]}}})
    redis = GatewayConfig.model_validate({"policies": {"rate_limit": {"store": "redis://x", "limits": ["5/second"]}}})
    accepted = GatewayConfig.model_validate({"allow_per_worker_state": True})
    off = GatewayConfig.model_validate({"policies": {"rate_limit": {"enabled": False}}})
    route_auth = GatewayConfig.model_validate(
        {
            "policies": {"rate_limit": {"store": "redis://x"}},
            "routes": [{"path": "/", "upstream": "u", "policies": {"auth": {"revocation_store": "redis://x"}}}],
        }
    )
    orig = lint_mod.usable_cores
    try:
        lint_mod.usable_cores = lambda: 16  # type: ignore[assignment]
        n, why = lint_mod.worker_count(plain)
        assert n == 1 and "built-in limit on login paths" in why
        assert lint_mod.worker_count(redis)[0] == 16
        assert lint_mod.worker_count(accepted)[0] == 16
        assert lint_mod.worker_count(off)[0] == 16
        n, why = lint_mod.worker_count(memory)
        assert n == 1 and "policies.rate_limit.store" in why
        assert lint_mod.worker_count(memory, 3)[0] == 3
        assert lint_mod.worker_count(route_auth)[0] == 16
    finally:
        lint_mod.usable_cores = orig  # type: ignore[assignment]
    assert [f.key for f in lint_mod.lint(memory, workers=4) if f.severity == "error"] == ["policies.rate_limit.store"]
    assert not [f for f in lint_mod.lint(redis, workers=4) if f.severity == "error"]
