"""Red team (session 7, s7-rt-perf): the per-request fast paths of s7-pipeline and s7-log
(af6f460..6e4ab46) attacked from outside, through real `bastion serve` processes.

The oracle is the merge base fa98963 (before those changes): its `src/` is taken out of git
(`git archive`) and run with PYTHONPATH beside this tree, on the same config, in front of the same
upstream; the same generated requests must get the same answers (status, headers, body; request
ids, dates and times aside) and the upstream must receive the same requests. Both gateways run
with the CORS and ip_rules caches shrunk to 3 entries, so generated sequences also drive the
eviction path. Clients are varied with X-Forwarded-For from a trusted proxy (127.0.0.0/8), so the
ip_rules cache sees many addresses (IPv4, IPv6, mapped, malformed) over routes with different rules.

Then targeted attacks: request ids (unique, 128-bit, incoming kept only when well formed), the
unsampled traceparent (format, unique trace ids, incoming flags), audit lines (keys, redaction,
no credential), metrics (promtool, exact counts), reload (no cached CORS / ip answer survives a
config change), cache bounds under many distinct origins and addresses.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from helpers import STARTUP_SECONDS, ThreadedUvicorn, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BASE = "fa98963"
REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"

# Shrinks both caches before the CLI runs (the base has no IpRules.CACHE_SIZE: harmless).
BOOT = (
    "import sys; import bastion.policies.cors as c, bastion.policies.ip_rules as i; "
    "n = int(sys.argv.pop(1)); "
    "c.Cors.CACHE_SIZE = n or c.Cors.CACHE_SIZE; i.IpRules.CACHE_SIZE = n or getattr(i.IpRules, 'CACHE_SIZE', 0); "
    "from bastion.cli import app; app()"
)


# ---- the upstream: answers what the query asks, reports what it received ----------------------


async def upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    q: dict[str, list[str]] = {}
    for part in scope.get("query_string", b"").decode("latin-1").split("&"):
        if "=" in part:
            k, _, v = part.partition("=")
            from urllib.parse import unquote

            q.setdefault(k, []).append(unquote(v))
    status = int(q.get("status", ["200"])[0])
    headers = [(b"content-type", b"application/json")]
    for h in q.get("h", []):
        name, _, value = h.partition(":")
        headers.append((name.strip().lower().encode(), value.strip().encode("latin-1")))
    seen = [
        [k.decode("latin-1"), v.decode("latin-1")]
        for k, v in scope["headers"]
        if k not in (b"x-request-id", b"traceparent", b"tracestate")
    ]
    ids = {k.decode(): v.decode("latin-1") for k, v in scope["headers"] if k in (b"x-request-id", b"traceparent")}
    doc = json.dumps(
        {"path": scope["path"], "method": scope["method"], "seen": seen, "ids": ids, "body": len(body)}
    ).encode()
    if status in (204, 304):  # no body
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    if q.get("stream"):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": doc[:10], "more_body": True})
        await send({"type": "http.response.body", "body": doc[10:]})
        return
    headers.append((b"content-length", str(len(doc)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": doc})


# ---- gateways as processes ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(
    src: Path, cfg: dict[str, Any], tmp: Path, cache: int = 3, watch: bool = False, workers: int = 1
) -> Iterator[dict[str, Any]]:
    """`bastion serve` of the tree `src` (PYTHONPATH) on a free port, its CORS and ip_rules caches of
    `cache` entries (0: as they are); yields port, process, config path."""
    cfg = json.loads(json.dumps(cfg))
    port = _free_port()
    for route in cfg.get("routes", []):  # each gateway its own Redis keys (and a fresh run its own)
        rl = (route.get("policies") or {}).get("rate_limit")
        if rl is not None and rl.get("store", "memory") != "memory":
            rl["key_prefix"] = f"rt7perf:{port}:{time.time_ns()}"
    cfg["listeners"] = [{"host": "127.0.0.1", "port": port}]
    if "admin" in cfg:
        cfg["admin"] = dict(cfg["admin"], port=_free_port())
    path = tmp / f"bastion-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=str(src), PYTHONHASHSEED="0")
    cmd = [
        sys.executable,
        "-c",
        BOOT,
        str(cache),
        "serve",
        "-c",
        str(path),
        "--workers",
        str(workers),
        "--log-level",
        "error",
    ]
    cmd.append("--watch" if watch else "--no-watch")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_for(up, STARTUP_SECONDS, 0.05, "the gateway to listen")
        yield {"port": port, "proc": proc, "path": path, "admin": cfg.get("admin")}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def base_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The merge base's src/ (git archive), or skip when this checkout cannot give it."""
    out = tmp_path_factory.mktemp("base-src")
    tar = out / "src.tar"
    try:
        with tar.open("wb") as f:
            subprocess.run(["git", "-C", str(REPO), "archive", BASE, "src"], stdout=f, check=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        pytest.skip(f"git archive {BASE} not available")
    with tarfile.open(tar) as t:
        t.extractall(out, filter="data")
    return out / "src"


@pytest.fixture(scope="module")
def up() -> Iterator[ThreadedUvicorn]:
    with ThreadedUvicorn(upstream) as u:
        yield u


def diff_config(up_url: str) -> dict[str, Any]:
    return {
        "upstreams": {"up": {"urls": [up_url]}},
        "admin": {"host": "127.0.0.1", "port": 0, "token": "rt7-perf-admin-token-0123456789"},
        "trusted_proxies": ["127.0.0.0/8"],
        "policies": {
            "audit": {"enabled": False},
            "cors": {"allow_origins": ["https://app.example.com"]},
            "body_limit": {"max_bytes": 1000},
        },
        "routes": [
            {"path": "/admin/*", "upstream": "up", "policies": {"ip_rules": {"allow": ["10.0.0.0/8"]}}},
            {
                "path": "/blocked/*",
                "upstream": "up",
                "policies": {"ip_rules": {"block": ["10.1.0.0/16", "2001:db8::/32", "192.168.0.0/16"], "status": 404}},
            },
            {
                "path": "/c1/*",
                "upstream": "up",
                "policies": {
                    "cors": {
                        "allow_origins": ["https://app.example.com", "https://*.example.com", "http://localhost:8080"],
                        "allow_credentials": True,
                        "allow_headers": ["X-Token", "Content-Type"],
                        "allow_methods": ["GET", "PUT"],
                        "expose_headers": ["X-Total"],
                    }
                },
            },
            {"path": "/c2/*", "upstream": "up", "policies": {"cors": {"allow_origins": ["*"]}}},
            {
                "path": "/c3/*",
                "upstream": "up",
                "policies": {
                    "cors": {"allow_origins": ["null", "https://b.example.org:8443"], "block_disallowed": True}
                },
            },
            {"path": "/get/*", "upstream": "up", "methods": ["GET"]},
            {
                "path": "/sh/*",
                "upstream": "up",
                "policies": {"security_headers": {"override": True}, "ip_rules": {"allow": ["10.0.0.0/8"]}},
            },
            {
                "path": "/rl/*",
                "upstream": "up",
                "policies": {
                    "rate_limit": {
                        "store": "redis://127.0.0.1:6379/0",
                        "limits": [{"rate": "4/hour", "key": ["ip"], "algorithm": "fixed_window"}],
                    },
                    "cors": {"allow_origins": ["https://app.example.com"], "allow_credentials": True},
                },
            },
            {"path": "/*", "upstream": "up"},
        ],
    }


@pytest.fixture(scope="module")
def trio(
    base_src: Path, up: ThreadedUvicorn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, int, int]]:
    """The merge base, this tree with caches of 3, this tree with its caches as they are."""
    tmp = tmp_path_factory.mktemp("rt7-perf-diff")
    cfg = diff_config(up.url)
    with serve(base_src, cfg, tmp) as old, serve(SRC, cfg, tmp) as small, serve(SRC, cfg, tmp, cache=0) as full:
        LIVE_ADMIN[:] = [old["admin"]["port"], small["admin"]["port"], full["admin"]["port"]]
        yield old["port"], small["port"], full["port"]


LIVE_ADMIN: list[int] = []  # the trio's admin ports (old, small, full)


# ---- one exchange, normalised -------------------------------------------------------------------

_TIMES = re.compile(rb"(?<=t=)\d+|^\d+$")  # reset / retry-after seconds: the two gateways' clocks differ
_TIMES_BODY = re.compile(rb'(?<="retry_after":)[0-9.]+|(?<=retry in )[0-9.]+')
_VOLATILE = {b"date", b"x-request-id", b"x-response-time", b"traceparent"}


def _request(
    port: int, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One request sent as given (Host gw.test, no Accept-Encoding): status, headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True, skip_host=True)
        conn.putheader("Host", "gw.test")
        for k, v in headers:
            conn.putheader(k, v.encode("latin-1"))
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.getheaders()]
    finally:
        conn.close()
    return resp.status, raw, data


def exchange(port: int, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None) -> tuple:
    status, raw, data = _request(port, method, target, headers, body)
    rid = dict(raw).get(b"x-request-id", b"")
    kept = [
        (k, _TIMES.sub(b"<t>", v) if b"reset" in k or b"retry" in k or k == b"ratelimit" else v)
        for k, v in raw
        if k not in _VOLATILE
    ]
    if rid:
        data = data.replace(rid, b"<rid>")
    data = _TIMES_BODY.sub(b"<t>", data)
    try:
        doc = json.loads(data)
    except ValueError:
        doc = data
    if isinstance(doc, dict):
        doc.pop("ids", None)
    return status, kept, doc


# ---- generated requests -------------------------------------------------------------------------

TRICKY_ORIGINS = [
    "https://app.example.com",
    "https://APP.example.com",
    "HTTPS://app.example.com",
    "https://app.example.com.",
    "https://app.example.com:443",
    "https://app.example.com:444",
    "https://app.example.com.evil.com",
    "https://evilapp.example.com",
    "https://a.b.example.com",
    "https://x.example.com",
    "https://example.com",
    "https://user@app.example.com",
    "https://app.example.com/",
    "https://app.example.com ",
    " https://app.example.com",
    "https://app.example.com\t",
    "http://app.example.com",
    "null",
    "NULL",
    "Null",
    "http://localhost:8080",
    "http://localhost",
    "http://localhost:8080.",
    "https://b.example.org:8443",
    "https://b.example.org",
    "https://xn--pple-43d.example.com",
    "https://\xe4pple.example.com",
    "https://*.example.com",
    "*",
    "",
    "https://app.example.com%2e",
    "https://[::1]",
    "https://app.example.com:0443",
    "https://app.example.com:99999",
]
XFF = [
    None,
    "10.0.0.1",
    "10.1.2.3",
    "10.255.255.255",
    "11.0.0.1",
    "192.168.1.1",
    "::ffff:10.0.0.7",
    "::ffff:10.1.0.1",
    "::ffff:a00:1",
    "2001:db8::1",
    "2001:DB8::1",
    "2001:db9::1",
    "fe80::1%eth0",
    "[2001:db8::1]",
    "10.0.0.1:1234",
    "not-an-ip",
    "10.0.0.1, 127.0.0.1",
    "11.0.0.1, 10.0.0.1",
    "10.0.0.1, 11.0.0.1",
    " 10.0.0.1 ",
    "010.000.000.001",
    "0x0a.0.0.1",
    "167772161",
]
PATHS = [
    "/rl/x",
    "/rl/y",
    "/admin/x",
    "/blocked/x",
    "/c1/x",
    "/c2/x",
    "/c3/x",
    "/get/x",
    "/sh/x",
    "/x",
    "/nothing-here",
]
UP_HEADERS = [
    "access-control-allow-origin:*",
    "Access-Control-Allow-Credentials:true",
    "vary:Accept",
    "vary:*",
    "x-frame-options:SAMEORIGIN",
    "content-security-policy:default-src 'self'",
    "cache-control:public, max-age=60",
    "cache-control:private",
    "x-request-id:upstream-id",
    "x-content-type-options:nosniff",
    "access-control-expose-headers:X-Secret",
]
CRED_HEADERS = [
    "Authorization",
    "authorization",
    "AUTHORIZATION",
    "Cookie",
    "cookie",
    "X-API-Key",
    "x-api-key",
    "Proxy-Authorization",
    "X-Api-Token",
]

origins = st.one_of(
    st.sampled_from(TRICKY_ORIGINS),
    st.builds(
        lambda s, h, p: f"{s}://{h}{p}",
        st.sampled_from(["https", "http", "HTTPS", "ftp"]),
        st.sampled_from(
            ["app.example.com", "q.example.com", "example.com", "a.example.org", "b.example.org", "localhost"]
        ),
        st.sampled_from(["", ":8080", ":8443", ":443", ":80", "."]),
    ),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF), max_size=30),
)


def variants(origin: str) -> list[str]:
    """Spellings a cache keyed on the wrong thing would confuse with `origin` (those a header can
    carry: latin-1)."""
    return [v for v in _variants(origin) if v == v.encode("latin-1", "ignore").decode("latin-1")]


def _variants(origin: str) -> list[str]:
    return [
        origin,
        origin.upper(),
        origin.swapcase(),
        origin + ".",
        origin + " ",
        origin + ":443",
        origin + "/",
        origin.replace("://", "://evil."),
        origin + ".evil.com",
        "null",
    ]


@st.composite
def requests(draw: st.DrawFn, pool: list[str]) -> tuple[str, str, list[tuple[str, str]], bytes | None]:
    path = draw(st.sampled_from(PATHS))
    params = [f"status={draw(st.sampled_from([200, 200, 201, 204, 301, 304, 404, 418, 500, 502, 503]))}"]
    params += ["h=" + quote(h) for h in draw(st.lists(st.sampled_from(UP_HEADERS), max_size=3))]
    if draw(st.booleans()):
        params.append("stream=1")
    method = draw(st.sampled_from(["GET", "GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE"]))
    headers: list[tuple[str, str]] = []
    for o in draw(st.lists(st.sampled_from(pool), max_size=2)):
        headers.append(("Origin", o))
    if method == "OPTIONS" and draw(st.booleans()):
        headers.append(("Access-Control-Request-Method", draw(st.sampled_from(["GET", "put", "DELETE", " PUT ", ""]))))
        if draw(st.booleans()):
            headers.append(
                (
                    "Access-Control-Request-Headers",
                    draw(st.sampled_from(["x-token", "X-Token, content-type", "x-other", ""])),
                )
            )
    xff = draw(st.sampled_from(XFF))
    if xff is not None:
        headers.append(("X-Forwarded-For", xff))
    if draw(st.booleans()):
        headers.append(("X-Forwarded-Proto", draw(st.sampled_from(["https", "http", "HTTPS"]))))
    for name in draw(st.lists(st.sampled_from(CRED_HEADERS), max_size=2)):
        headers.append((name, "secret-value"))
    body = draw(st.sampled_from([None, b"", b"{}", b"x" * 1001, b'{"_method": "DELETE"}', b"_method=PUT&a=1"]))
    if body and draw(st.booleans()):
        headers.append(
            ("Content-Type", draw(st.sampled_from(["application/json", "application/x-www-form-urlencoded"])))
        )
    if method in ("GET", "HEAD", "OPTIONS") and body:
        body = None
    return method, path + "?" + "&".join(params), headers, body


@st.composite
def sequences(draw: st.DrawFn) -> list[tuple[str, str, list[tuple[str, str]], bytes | None]]:
    """A few requests sharing a small pool of origins: one origin and its confusable spellings."""
    first = draw(origins)
    pool = [first, *draw(st.lists(st.sampled_from(variants(first)), min_size=1, max_size=3)), draw(origins)]
    return draw(st.lists(requests(pool), min_size=1, max_size=6))


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(seq=sequences())
def test_same_answers_as_the_merge_base(trio: tuple[int, int, int], seq: list[Any]) -> None:
    """CORS, ip_rules (XFF clients), security headers, error masking, body limit, the pipeline:
    every generated request gets from this tree what the merge base answers, with caches of 3
    entries (eviction) and of their real size (warm from earlier examples: answers across routes,
    origins and their confusable spellings)."""
    old, small, full = trio
    for method, target, headers, body in seq:
        a = exchange(old, method, target, headers, body)
        if a[0] >= 500:  # error masking: nothing of the upstream's body (what it saw) reaches the client
            assert not (isinstance(a[2], dict) and "seen" in a[2]), a
        assert exchange(small, method, target, headers, body) == a, (method, target, headers)
        assert exchange(full, method, target, headers, body) == a, (method, target, headers)


# ---- body_limit: Content-Length as digits ------------------------------------------------------


def _raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


def test_content_length_of_many_digits_is_400_not_500(trio: tuple[int, int, int]) -> None:
    _, new, _ = trio
    cl = b"0" * 5000 + b"1"
    out = _raw(new, b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: " + cl + b"\r\n\r\nx")
    assert out.startswith(b"HTTP/1.1 400"), out[:200]


def test_content_length_of_many_digits_on_the_base_is_400(trio: tuple[int, int, int]) -> None:
    old, _, _ = trio
    cl = b"0" * 5000 + b"1"
    out = _raw(old, b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: " + cl + b"\r\n\r\nx")
    assert out.startswith(b"HTTP/1.1 400"), out[:200]


# ---- the log phase and ids: audit, metrics, request ids, traceparents ---------------------------

SECRET = "s3cr3t-VALUE-9"
ADMIN_TOKEN = "rt7-perf-admin-token-0123456789"


def obs_config(up_url: str, audit_path: Path) -> dict[str, Any]:
    return {
        "upstreams": {"up": {"urls": [up_url]}},
        "trusted_proxies": ["127.0.0.0/8"],
        "admin": {"host": "127.0.0.1", "port": 0, "token": ADMIN_TOKEN},
        "policies": {
            "audit": {"output": str(audit_path), "redact_query_params": ["token", "Api_Key", "password", "sig"]},
            "tracing": {"exporter": "memory", "sample_ratio": 0.0, "policy_spans": True},
            "cors": {"allow_origins": ["https://app.example.com"], "block_disallowed": True},
            "body_limit": {"max_bytes": 100},
        },
        "routes": [
            {"path": "/admin/*", "upstream": "up", "policies": {"ip_rules": {"allow": ["10.0.0.0/8"]}}},
            {"path": "/a/*", "upstream": "up"},
            {"path": "/b/*", "upstream": "up", "methods": ["GET"]},
        ],
    }


@pytest.fixture(scope="module")
def obs(base_src: Path, up: ThreadedUvicorn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("rt7-perf-obs")
    with (
        serve(base_src, obs_config(up.url, tmp / "old.log"), tmp) as old,
        serve(SRC, obs_config(up.url, tmp / "new.log"), tmp) as new,
    ):
        yield {"old": old, "new": new, "old_log": tmp / "old.log", "new_log": tmp / "new.log", "sent": []}


TRACEPARENTS = [
    None,
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-00",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-00",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra",
    "garbage",
    "",
]
REQUEST_IDS = [None, "abc", "a" * 128, "a" * 129, "id with space", "id\x7f", "ok.id:1-2_3", "é", "x" * 8, "a,b"]
QUERY_NAMES = ["token", "TOKEN", "Token", "%74oken", "api_key", "API_KEY", "Api%5FKey", "password", "sig", "q", "page"]
_TP = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@st.composite
def obs_requests(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, str]], bytes | None]:
    path = draw(st.sampled_from(["/a/x", "/b/x", "/admin/x", "/nowhere"]))
    pairs = []
    for name in draw(st.lists(st.sampled_from(QUERY_NAMES), max_size=4)):
        value = draw(st.sampled_from([SECRET, quote(SECRET), quote(SECRET, safe="").replace("-", "%2D"), "1", ""]))
        if name in ("q", "page"):
            value = "1"  # not a secret parameter: its value is logged
        pairs.append(f"{name}={value}")
    params = [f"status={draw(st.sampled_from([200, 404, 500, 503]))}", *pairs]
    method = draw(st.sampled_from(["GET", "POST", "HEAD", "DELETE"]))
    headers: list[tuple[str, str]] = []
    rid = draw(st.sampled_from(REQUEST_IDS))
    if rid is not None:
        headers.append(("X-Request-Id", rid))
    tp = draw(st.sampled_from(TRACEPARENTS))
    if tp is not None:
        headers.append(("traceparent", tp))
    if draw(st.booleans()):
        headers.append(
            (draw(st.sampled_from(["Authorization", "authorization", "Cookie", "X-API-Key"])), "Bearer " + SECRET)
        )
    ua = draw(st.sampled_from([None, "curl/8", "Mozilla/5.0 (\xe9\xe8)", "ua\ttab", "\xff\xfe", '"quoted" \\ back']))
    if ua is not None:
        headers.append(("User-Agent", ua))
    if draw(st.booleans()):
        headers.append(("Origin", draw(st.sampled_from(["https://app.example.com", "https://evil.example"]))))
    xff = draw(st.sampled_from([None, "10.0.0.1", "11.0.0.1", "::ffff:10.0.0.2", "2001:db8::5"]))
    if xff:
        headers.append(("X-Forwarded-For", xff))
    body = draw(st.sampled_from([None, b"{}", b"y" * 101])) if method in ("POST", "DELETE") else None
    return method, path + "?" + "&".join(params), headers, body


def _fixed_request(rng: random.Random) -> tuple[str, str, list[tuple[str, str]], bytes | None]:
    """A request from the same lists as `obs_requests`, drawn by a seeded generator."""
    pairs = []
    for name in rng.sample(QUERY_NAMES, rng.randint(0, 3)):
        value = "1" if name in ("q", "page") else rng.choice([SECRET, quote(SECRET), "1"])
        pairs.append(f"{name}={value}")
    method = rng.choice(["GET", "POST", "HEAD", "DELETE"])
    rid = rng.choice(REQUEST_IDS)
    headers = [] if rid is None or "\x7f" in rid else [("X-Request-Id", rid)]
    tp = rng.choice(TRACEPARENTS)
    if tp is not None:
        headers.append(("traceparent", tp))
    if rng.random() < 0.5:
        headers.append((rng.choice(["Authorization", "Cookie", "X-API-Key"]), "Bearer " + SECRET))
    headers.append(("User-Agent", rng.choice(["curl/8", "Mozilla/5.0 (\xe9\xe8)", "ua\ttab"])))
    if rng.random() < 0.5:
        headers.append(("Origin", rng.choice(["https://app.example.com", "https://evil.example"])))
    headers.append(("X-Forwarded-For", rng.choice(["10.0.0.1", "11.0.0.1", "::ffff:10.0.0.2", "2001:db8::5"])))
    path = rng.choice(["/a/x", "/b/x", "/admin/x", "/nowhere"])
    target = path + "?" + "&".join([f"status={rng.choice([200, 404, 500, 503])}", *pairs])
    body = rng.choice([None, b"{}", b"y" * 101]) if method in ("POST", "DELETE") else None
    return method, target, headers, body


def _send(
    port: int, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
) -> tuple[int, dict[str, str], Any]:
    status, raw, data = _request(port, method, target, headers, body)
    got = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    return status, got, doc


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(req=obs_requests())
def test_ids_and_traceparents(obs: dict[str, Any], req: Any) -> None:
    """Request ids: an incoming well-formed one (<= 128 of [A-Za-z0-9._:-]) kept, else 32 fresh hex
    digits, the same id upstream and echoed; traceparent upstream always W3C-valid: an incoming
    valid unsampled one passed untouched, a sampled one continued (its trace id), else a new
    unsampled trace (sample_ratio 0) whose ids are never zero. Answers as the base's."""
    method, target, headers, body = req
    sent = dict((k.lower(), v) for k, v in headers)
    for side in ("old", "new"):
        status, got, doc = _send(obs[side]["port"], method, target, headers, body)
        rid = got.get("x-request-id")
        if rid is None:  # refused by the HTTP layer (a control character): no request, no line
            assert status == 400, (side, status, doc)
            if method != "HEAD":  # (an answer to HEAD has no body to read the problem from)
                assert doc["detail"] == "the request is not valid HTTP/1.1", (side, status, doc)
            continue
        incoming = sent.get("x-request-id")
        if incoming and len(incoming) <= 128 and re.fullmatch(r"[A-Za-z0-9._:\-]+", incoming):
            assert rid == incoming
        else:
            assert re.fullmatch(r"[0-9a-f]{32}", rid), rid
        obs["sent"].append((side, rid, incoming))
        if doc is None or "ids" not in doc:
            continue  # not forwarded (refused, or HEAD)
        assert doc["ids"]["x-request-id"] == rid
        tp = doc["ids"]["traceparent"]
        m = _TP.fullmatch(tp)
        assert m and int(m.group(1), 16) and int(m.group(2), 16), tp
        given_tp = sent.get("traceparent")
        if given_tp is not None and _TP.fullmatch(given_tp) and int(given_tp[3:35], 16) and int(given_tp[36:52], 16):
            if given_tp.endswith("-00"):
                assert tp == given_tp
            else:
                assert tp[3:35] == given_tp[3:35]
        if side == "new":
            obs.setdefault("traces", []).append((given_tp, tp[3:35]))


def _keepalive_run(port: int, path: str, n: int) -> list[tuple[str, dict[str, Any] | None]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    out = []
    for i in range(n):
        conn.request("GET", f"{path}?i={i}")
        resp = conn.getresponse()
        data = resp.read()
        doc = json.loads(data) if resp.status == 200 else None
        out.append((resp.getheader("x-request-id") or "", doc))
    conn.close()
    return out


PROXIED = 8 * 80  # requests to the upstream (their traceparents), on 8 connections at once
REFUSED = 2000  # 404s (request ids only: no upstream round trip)


def test_many_ids_unique(obs: dict[str, Any]) -> None:
    """Request ids and new trace ids from their pre-made batches (256 a batch), over several
    batches and 8 connections at once: all distinct, 32 hex digits (128 bits) each, the same
    request id upstream as echoed, every new trace unsampled."""
    from concurrent.futures import ThreadPoolExecutor

    port = obs["new"]["port"]
    with ThreadPoolExecutor(8) as pool:
        proxied = [x for part in pool.map(lambda _: _keepalive_run(port, "/a/x", PROXIED // 8), range(8)) for x in part]
    refused = _keepalive_run(port, "/nowhere", REFUSED)
    rids = [rid for rid, _ in proxied + refused]
    assert all(re.fullmatch(r"[0-9a-f]{32}", r) for r in rids)
    assert len(set(rids)) == len(rids)
    traces = []
    for rid, doc in proxied:
        assert doc is not None and doc["ids"]["x-request-id"] == rid
        m = _TP.fullmatch(doc["ids"]["traceparent"])
        assert m and m.group(3) == "00" and int(m.group(1), 16) and int(m.group(2), 16)
        traces.append(m.group(1))
    assert len(set(traces)) == len(traces) == PROXIED
    obs["many_ids_done"] = True  # (the audit / metrics comparison counts these)


def _audit(path: Path, n: int) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(x) for x in lines] if len(lines) >= n else None

    return wait_for(enough, 30, 0.05, f"{n} audit lines in {path}")


def _series(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out = {}
    for line in text.splitlines():
        if line.startswith("bastion_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            if name.split("{")[0].endswith(("_total", "_count")) and "in_flight" not in name:
                out[name] = float(value)
    return out


def test_audit_and_metrics_as_the_base(obs: dict[str, Any]) -> None:
    """After the generated requests above (and the 2000): the audit lines of this tree are the
    base's, key for key and value for value (time, durations and fresh request ids aside), no
    secret value in either log; the admin /metrics counters and histogram counts equal; the
    exposition passes `promtool check metrics`. Self-contained under xdist: it first sends its own
    fixed batch (seeded, from the same lists), and counts the other tests' requests only when they
    ran in this process (the module fixture is per process)."""
    rng = random.Random(7)
    for _ in range(60):
        method, target, headers, body = _fixed_request(rng)
        for side in ("old", "new"):
            _, got, _ = _send(obs[side]["port"], method, target, headers, body)
            rid = got.get("x-request-id")
            if rid is not None:
                obs["sent"].append((side, rid, dict((k.lower(), v) for k, v in headers).get("x-request-id")))
    extra = PROXIED + REFUSED if obs.get("many_ids_done") else 0
    n_old = sum(1 for s, _, _ in obs["sent"] if s == "old")
    n_new = sum(1 for s, _, _ in obs["sent"] if s == "new") + extra
    old_lines = _audit(obs["old_log"], n_old)
    new_lines = _audit(obs["new_log"], n_new)
    text = obs["new_log"].read_text()
    assert SECRET not in text and quote(SECRET) not in text and "Bearer" not in text
    fresh_old = {rid for s, rid, inc in obs["sent"] if s == "old" and rid != inc}
    fresh_new = {rid for s, rid, inc in obs["sent"] if s == "new" and rid != inc}

    def norm(line: dict[str, Any], fresh: set[str]) -> list[tuple[str, Any]]:
        out = []
        for k, v in line.items():
            if k in ("time", "duration_ms", "upstream_ms") or (k == "request_id" and v in fresh):
                v = type(v).__name__
            out.append((k, v))
        return out

    ours = [x for x in new_lines if not x["query"].startswith("i=")]  # (not test_many_ids_unique's)
    assert [norm(x, fresh_old) for x in old_lines] == [norm(x, fresh_new) for x in ours]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", x["time"]) for x in new_lines)
    # metrics: this tree's extra requests were GET /a/* 200 and GET /nowhere 404 (the router's)
    old_s, new_s = _series(obs["old"]["admin"]["port"]), _series(obs["new"]["admin"]["port"])
    if extra:
        new_s['bastion_requests_total{method="GET",route="/a/*",status="200"}'] -= PROXIED
        for h in ("bastion_gateway_overhead_seconds_count", "bastion_upstream_seconds_count"):
            new_s[h + '{route="/a/*"}'] -= PROXIED
        new_s['bastion_requests_total{method="GET",route="-",status="404"}'] -= REFUSED
        new_s['bastion_rejections_total{policy="router",status="404"}'] -= REFUSED
        new_s['bastion_gateway_overhead_seconds_count{route="-"}'] -= REFUSED

    # (a listener's label is its own port: the two servers' differ; a request the HTTP layer refused
    # appears only under it)
    def same(series: dict[str, float]) -> dict[str, float]:
        return {re.sub(r'listener="[^"]*"', 'listener="-"', k): v for k, v in series.items() if v}

    assert same(new_s) == same(old_s)
    promtool = shutil.which("promtool")
    if promtool:
        conn = http.client.HTTPConnection("127.0.0.1", obs["new"]["admin"]["port"], timeout=20)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read()
        conn.close()
        run = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr


# ---- reload: no remembered answer survives a config change; workers: ids never shared ----------


def reload_config(up_url: str, version: int) -> dict[str, Any]:
    first = version == 1
    return {
        "upstreams": {"up": {"urls": [up_url]}},
        "trusted_proxies": ["127.0.0.0/8"],
        "policies": {"audit": {"enabled": False}},
        "routes": [
            {
                "path": "/r/*",
                "upstream": "up",
                "policies": {
                    "cors": {"allow_origins": ["https://app.example.com" if first else "https://other.example.com"]},
                    "ip_rules": {"allow": ["10.0.0.0/8" if first else "11.0.0.0/8"]},
                },
            },
            {"path": "/v1/*" if first else "/v2/*", "upstream": "up"},
        ],
    }


def _cors_ip(port: int, origin: str, xff: str) -> tuple[int, str | None]:
    status, got, _ = _send(port, "GET", "/r/x", [("Origin", origin), ("X-Forwarded-For", xff)], None)
    return status, got.get("access-control-allow-origin")


def test_reload_forgets_cached_answers(up: ThreadedUvicorn, tmp_path: Path) -> None:
    """Warm the CORS and ip_rules caches, change both rules, SIGHUP: the new rules answer at once
    (a reload builds new policies: the remembered answers go with the old ones)."""
    with serve(SRC, reload_config(up.url, 1), tmp_path, cache=0) as gw:
        port = gw["port"]
        for _ in range(3):
            assert _cors_ip(port, "https://app.example.com", "10.0.0.1") == (200, "https://app.example.com")
            assert _cors_ip(port, "https://other.example.com", "10.0.0.1") == (200, None)
            assert _cors_ip(port, "https://app.example.com", "11.0.0.1")[0] == 403
        cfg = reload_config(up.url, 2)
        cfg["listeners"] = [{"host": "127.0.0.1", "port": port}]
        gw["path"].write_text(yaml.safe_dump(cfg))
        gw["proc"].send_signal(signal.SIGHUP)
        wait_for(lambda: _send(port, "GET", "/v2/x", [], None)[0] == 200, 60, 0.05, "the reload")
        assert _cors_ip(port, "https://app.example.com", "11.0.0.1") == (200, None)
        assert _cors_ip(port, "https://other.example.com", "11.0.0.1") == (200, "https://other.example.com")
        assert _cors_ip(port, "https://other.example.com", "10.0.0.1")[0] == 403


def test_two_workers_never_share_ids(obs: dict[str, Any], up: ThreadedUvicorn, tmp_path: Path) -> None:
    """`--workers 2` (forked): request ids and new trace ids over many fresh connections (both
    workers answer) are all distinct."""
    from concurrent.futures import ThreadPoolExecutor

    cfg = obs_config(up.url, tmp_path / "w.log")
    cfg["policies"]["audit"] = {"enabled": False}
    del cfg["admin"]
    cfg["allow_per_worker_state"] = True

    def one(i: int) -> tuple[str, str]:
        status, got, doc = _send(port, "GET", f"/a/x?i={i}", [], None)
        assert status == 200
        return got["x-request-id"], doc["ids"]["traceparent"][3:35]

    with serve(SRC, cfg, tmp_path, cache=0, workers=2) as gw:
        port = gw["port"]
        with ThreadPoolExecutor(8) as pool:
            pairs = list(pool.map(one, range(400)))
    rids = [r for r, _ in pairs]
    traces = [t for _, t in pairs]
    assert len(set(rids)) == len(rids) and len(set(traces)) == len(traces)


# ---- the dashboard's live feed (LIVE.record with fewer calls) ------------------------------------


def _admin(port: int, path: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("GET", path, headers={"Authorization": "Bearer rt7-perf-admin-token-0123456789"})
    resp = conn.getresponse()
    doc = json.loads(resp.read())
    conn.close()
    assert resp.status == 200, doc
    return doc


def _live_counts(port: int) -> tuple[Counter, Counter, Counter]:
    snap = _admin(port, "/admin/live?seconds=300")
    classes: Counter = Counter()
    rejections: Counter = Counter()
    for point in snap["series"]:
        classes.update(point["classes"])
        classes["total"] += point["total"]
        rejections.update(point["rejections"])
    return classes, rejections, Counter(dict(snap["top_clients"]))


def test_live_feed_as_the_base(trio: tuple[int, int, int]) -> None:
    """A seeded batch of refused and passed requests through the trio: the live feed's status
    classes, totals, rejections by policy and clients grow by the same counts, and the recent
    events (policy, status, reason, method, path, client, route) are the base's."""
    rng = random.Random(11)
    before = [_live_counts(p) for p in LIVE_ADMIN]
    batch = []
    for i in range(60):
        path = rng.choice(["/admin/x", "/blocked/x", "/c3/x", "/get/x", "/rl/z", "/x", "/nothing-here"])
        method = rng.choice(["GET", "POST", "DELETE"])
        headers = [("X-Forwarded-For", rng.choice(["10.0.0.1", "10.1.0.9", "11.0.0.1", "2001:db8::1"]))]
        if rng.random() < 0.5:
            headers.append(("Origin", rng.choice(["https://evil.example", "null"])))
        batch.append((method, f"{path}?status={rng.choice([200, 500])}&n={i}", headers))
    for port in trio:
        for method, target, headers in batch:
            exchange(port, method, target, headers, None)
    after = [_live_counts(p) for p in LIVE_ADMIN]
    deltas = [tuple(a - b for a, b in zip(x, y, strict=True)) for x, y in zip(after, before, strict=True)]
    assert deltas[1] == deltas[0] and deltas[2] == deltas[0]
    assert deltas[0][0]["total"] == len(batch)

    refused = min(sum(deltas[0][1].values()), 50)  # this batch's events, the newest first

    def events(port: int) -> list[dict[str, Any]]:
        keep = ("status", "policy", "reason", "method", "path", "client", "route")
        return [{k: e[k] for k in keep} for e in _admin(port, "/admin/events")["events"][:refused]]

    assert events(LIVE_ADMIN[1]) == events(LIVE_ADMIN[0]) == events(LIVE_ADMIN[2])


# ---- upstream header names in any case (the response scans compare lower-case bytes) ----------


@pytest.fixture(scope="module")
def shouting_upstream() -> Iterator[int]:
    """Answers every request with Access-Control-* and security headers in upper and mixed case."""
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nAccess-Control-Allow-Origin: *\r\n"
        b"ACCESS-CONTROL-ALLOW-CREDENTIALS: true\r\naccess-Control-Expose-Headers: X-Secret\r\n"
        b"X-Frame-Options: ALLOWALL\r\nVARY: Accept\r\nX-REQUEST-ID: upstream\r\nContent-Length: 8\r\n\r\n"
    )

    def loop() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(head + b'{"ok":1}')

    threading.Thread(target=loop, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()


def test_upstream_header_names_in_any_case(shouting_upstream: int, tmp_path: Path) -> None:
    """The CORS scan (`k[:1] == b"a"`), security headers and request id see upstream names lower-
    cased: no upstream Access-Control-* reaches a disallowed origin, ours replace theirs for an
    allowed one, X-Frame-Options kept (no override), one Vary with Origin, our request id only."""
    from helpers import raw_request, run_gateway

    cfg = {
        "upstreams": {"up": {"urls": [f"http://127.0.0.1:{shouting_upstream}"]}},
        "policies": {"audit": {"enabled": False}, "cors": {"allow_origins": ["https://app.example.com"]}},
        "routes": [{"path": "/*", "upstream": "up"}],
    }
    with run_gateway(cfg, tmp_path) as gw:
        evil = raw_request(gw.port, "GET", "/x", {"Origin": "https://evil.example"})
        good = raw_request(gw.port, "GET", "/x", {"Origin": "https://app.example.com"})
    for resp in (evil, good):
        assert resp.status == 200
        names = [k.lower() for k, _ in resp.headers]
        assert resp.headers_named("vary") == ["Accept, Origin"]
        assert resp.headers_named("x-frame-options") == ["ALLOWALL"]
        assert len(resp.headers_named("x-request-id")) == 1 and resp.header("x-request-id") != "upstream"
        assert names.count("access-control-allow-origin") == (resp is good)
    assert not [k for k, _ in evil.headers if k.lower().startswith("access-control-")]
    assert [(k.lower(), v) for k, v in good.headers if k.lower().startswith("access-control-")] == [
        ("access-control-allow-origin", "https://app.example.com")
    ]


def test_untrusted_incoming_ids_are_replaced(up: ThreadedUvicorn, tmp_path: Path) -> None:
    """`trust_incoming: false` on request_id and tracing (the inlined branches): a client's
    X-Request-Id and traceparent (sampled or not) never reach the upstream; a fresh id and a new
    unsampled trace do."""
    from helpers import raw_request, run_gateway

    cfg = {
        "upstreams": {"up": {"urls": [up.url]}},
        "policies": {
            "audit": {"enabled": False},
            "request_id": {"trust_incoming": False},
            "tracing": {"exporter": "memory", "sample_ratio": 0.0, "trust_incoming": False},
        },
        "routes": [{"path": "/*", "upstream": "up"}],
    }
    given_tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0{}"
    with run_gateway(cfg, tmp_path) as gw:
        for flags in "01":
            resp = raw_request(
                gw.port, "GET", "/x", {"X-Request-Id": "client-id-1", "traceparent": given_tp.format(flags)}
            )
            ids = resp.json()["ids"]
            assert re.fullmatch(r"[0-9a-f]{32}", resp.header("x-request-id") or "")
            assert ids["x-request-id"] == resp.header("x-request-id")
            m = _TP.fullmatch(ids["traceparent"])
            assert m and m.group(1) != "4bf92f3577b34da6a3ce929d0e0e4736" and m.group(3) == "00"
