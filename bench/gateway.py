"""bench/gateway: wrk against the upstream direct, nginx, a minimal Python proxy, and bastion.

All measured in one run on this machine; prints rps, p50 and p99 for each and the ratios the
issue asks for (d/c, d/b, e/d). Needs wrk and nginx (apt-get install wrk nginx-light).

    .venv/bin/python bench/gateway.py [--duration 10] [--connections 50] [--variants]

--variants also measures the minimal proxy with httpx instead of aiohttp and with granian
instead of uvicorn (the measurement behind the server/client choice in docs/architecture.md).

--workers N also measures nginx and bastion pass-through with 1 and with N worker processes, all
four given the same cores 0..N-1 (wrk too: on a machine with N cores there are no others), so
gN/g1 is bastion's scaling and gN/nN its ratio to nginx with the same processes and cores.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
# `bastion serve` as every bench starts it: one worker (the benches give the servers one core)
SERVE = [PY, "-m", "bastion.cli", "serve", "--no-watch", "--log-level", "warning", "--workers", "1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def pinned(cpu: str) -> list[str]:
    """wrk gets core 0, the servers core 1, so the proxies compete with each other for nothing."""
    return ["taskset", "-c", cpu] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else []


def wrk(
    url: str, duration: int, connections: int, script: str | None = None, cpu: str = "0"
) -> tuple[float, float, float]:
    lua = ["-s", script] if script else []
    out = subprocess.run(
        [*pinned(cpu), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", *lua, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} non-2xx responses\n{out}")
    return rps, pct("50"), pct("99")


NGINX_N = """
worker_processes {n}; daemon off; pid {dir}/nginx-{n}.pid; error_log {dir}/error-{n}.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream up {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{ listen 127.0.0.1:{px};
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header X-Forwarded-For $remote_addr; }} }}
}}
"""

NGINX = """
worker_processes 1; daemon off; pid {dir}/nginx.pid; error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream up {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{ listen 127.0.0.1:{up};
    location /json1k {{ default_type application/json; alias {dir}/1k.json; }}
    location /json100k {{ default_type application/json; alias {dir}/100k.json; }}
    location /clean100k {{ default_type application/json; alias {dir}/100k-clean.json; }}
    location / {{ default_type application/json; return 200 '{{"id":1,"name":"alice","ok":true}}'; }} }}
  server {{ listen 127.0.0.1:{px};
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header X-Forwarded-For $remote_addr; }} }}
}}
"""


# nginx doing what it can of bastion's `e` policies (BASTION_ALL and the default-on ones): a
# request id both ways and a response time, the same IP rules and body limit, the CORS origins
# (a map), the security headers, a JSON access line a request (buffered, as the audit sink);
# nginx has no per-route latency histograms (metrics) and no error masking: `be`/`b` is what
# the same kind of protection costs a C proxy, beside bastion's e/d
NGINX_ALL = r"""
worker_processes 1; daemon off; pid {dir}/nginx-all.pid; error_log {dir}/error-all.log warn;
events {{ worker_connections 4096; }}
http {{
  log_format audit escape=json '{{"time":"$time_iso8601","request_id":"$request_id","client_ip":"$remote_addr",'
    '"method":"$request_method","path":"$uri","query":"$args","status":$status,"bytes_in":$request_length,'
    '"bytes_out":$bytes_sent,"duration_ms":$request_time,"upstream_ms":"$upstream_response_time",'
    '"user_agent":"$http_user_agent"}}';
  access_log {dir}/nginx-audit.log audit buffer=64k flush=100ms;
  map $http_origin $cors_origin {{ default ""; "https://app.example.com" $http_origin;
                                  "~^https://[a-z0-9-]+\.example\.com$" $http_origin; }}
  map $cors_origin $cors_credentials {{ default "true"; "" ""; }}
  upstream up {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{ listen 127.0.0.1:{px};
    client_max_body_size 1m;
    deny 192.0.2.0/24; allow 127.0.0.0/8; allow 10.0.0.0/8; deny all;
    add_header X-Request-Id $request_id always;
    add_header X-Response-Time $request_time always;
    add_header Access-Control-Allow-Origin $cors_origin always;
    add_header Access-Control-Allow-Credentials $cors_credentials always;
    add_header Vary Origin always;
    add_header X-Content-Type-Options nosniff always;
    add_header X-Frame-Options DENY always;
    add_header Content-Security-Policy "default-src 'none'; frame-ancestors 'none'" always;
    add_header Referrer-Policy no-referrer always;
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header X-Forwarded-For $remote_addr; proxy_set_header X-Request-Id $request_id; }} }}
}}
"""


def default_on_off() -> dict[str, dict]:
    """Every policy that is on unless configured, turned off (read from the registry, so a new
    default-on policy is off in pass-through too)."""
    from bastion.policies import REGISTRY

    return {name: {"enabled": False} for name, cls in REGISTRY.items() if cls.default_on}


def pass_through(port: int, up: int, **policies: dict) -> str:
    """Pass-through: every default-on policy off, then the policies under test (`policies`)."""
    import yaml

    off = default_on_off()
    return yaml.safe_dump(
        {
            "listeners": [{"host": "127.0.0.1", "port": port}],
            "upstreams": {"up": {"urls": [f"http://127.0.0.1:{up}"]}},
            "policies": {**off, **policies},
            "routes": [{"path": "/*", "upstream": "up"}],
        }
    )


def with_admin(text: str, port: int) -> str:
    """`text` (a config) with an admin listener on `port` (its /metrics: the span drop count)."""
    import yaml

    return yaml.safe_dump({**yaml.safe_load(text), "admin": {"host": "127.0.0.1", "port": port}})


def spans_dropped(admin_port: int) -> str:
    """`bastion_trace_spans_dropped_total` of the server whose admin listener is `admin_port`."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError as exc:
        return f"unknown ({exc})"
    values = [line.split()[-1] for line in text.splitlines() if line.startswith("bastion_trace_spans_dropped_total")]
    return values[0] if values else "absent"


BASTION_ALL = """
listeners: [{{host: 127.0.0.1, port: {port}}}]
upstreams: {{up: {{urls: ["http://127.0.0.1:{up}"]}}}}
policies:
  request_id: {{}}
  ip_rules: {{allow: ["127.0.0.0/8", "10.0.0.0/8"], block: ["192.0.2.0/24"]}}
  body_limit: {{max_bytes: 1048576}}
  cors: {{allow_origins: ["https://app.example.com", "https://*.example.com"], allow_credentials: true}}
  security_headers: {{}}
  audit: {{output: "{dir}/audit.log"}}
routes:
  - {{path: "/users/{{id}}", upstream: up}}
  - {{path: /admin/*, upstream: up, policies: {{ip_rules: {{allow: ["10.0.0.0/8"]}}}}}}
  - {{path: /*, upstream: up}}
"""


def sample_json(size: int) -> bytes:
    import json as _json

    items, out = [], b""
    while len(out) < size:
        items.append(
            {
                "id": len(items),
                "name": f"user{len(items)}",
                "email": f"u{len(items)}@example.com",
                "password_hash": "$argon2id$v=19$m=65536",
                "profile": {"bio": "hello", "tags": ["a", "b"]},
            }
        )
        out = _json.dumps({"users": items}).encode()
    return out


# ---- the 1-in-10 mix, p99 at half load, the ratios (issue 18) -----------------------------------

MIX_LUA = """
-- 1 request in 10 gets the answer with the filtered field; 9 in 10 one without it
local n = 0
request = function()
  n = n + 1
  if n % 10 == 0 then return wrk.format("GET", "/json100k") end
  return wrk.format("GET", "/clean100k")
end
"""

RATE_LUA = """
-- each connection waits {delay_ms} ms between requests: {connections} connections make about
-- {rate} requests/s while the server keeps up (wrk2 is not packaged; this is the closed-loop
-- approximation, so a stall is seen once per connection, not once per missed slot)
function delay() return {delay_ms} end
"""


def write_mix(work: Path) -> str:
    """The 100 KB answer without the filtered field (renamed), and the wrk script of the mix."""
    (work / "100k-clean.json").write_bytes(sample_json(100 * 1024).replace(b'"password_hash"', b'"pw_digest_xx"'))
    (work / "mix.lua").write_text(MIX_LUA)
    return str(work / "mix.lua")


def at_rate(work: Path, url: str, rate: float, duration: int) -> tuple[float, float, float]:
    """wrk at about `rate` requests/s: a per-connection delay, calibrated by a 2 s run (each
    connection's cycle is its delay plus the answer's latency, which the first guess leaves out)."""
    connections = max(4, min(200, int(rate / 50)))
    delay = connections / rate * 1000

    def run(ms: float, seconds: int) -> tuple[float, float, float]:
        script = work / f"rate-{int(rate)}-{int(ms)}.lua"
        script.write_text(RATE_LUA.format(delay_ms=max(1, round(ms)), connections=connections, rate=int(rate)))
        return wrk(url, seconds, connections, str(script))

    got = run(delay, 2)[0]
    if got > 0:
        latency = connections / got * 1000 - delay  # ms per request besides the delay
        delay = max(1.0, connections / rate * 1000 - latency)
    return run(delay, duration)


def half_load(work: Path, targets: list[tuple[str, str, float]], duration: int) -> dict[str, tuple]:
    """p50/p99 at half of each target's measured maximum (label, url, max rps)."""
    out = {}
    print(f"\nlatency at half of the measured maximum load ({duration}s each)")
    print(f"{'target':32} {'asked':>8} {'got rps':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for label, url, top in targets:
        rps, p50, p99 = at_rate(work, url, top / 2, duration)
        out[label] = (top / 2, rps, p50, p99)
        print(f"{label:32} {top / 2:8.0f} {rps:8.0f} {p50:8.2f} {p99:8.2f}", flush=True)
    d, e = out.get("d bastion pass-through"), out.get("e bastion all policies")
    if d and e:
        print(f"p99 all policies minus pass-through at half load: {e[3] - d[3]:+.2f} ms (target <= +2 ms)")
    return out


RATIOS = [
    ("d", "c", "bastion pass-through vs minimal proxy", ">= 1.0"),
    ("d", "b", "bastion pass-through vs nginx", ">= 0.30"),
    ("e", "d", "all policies vs pass-through", ">= 0.85"),
    ("be", "b", "nginx with e's policies it has vs nginx pass-through (context for e/d)", ""),
    ("f1", "d1", "filtering, 1 KB JSON", ""),
    ("f2", "d2", "filtering, 100 KB JSON, the field in every answer", ">= 0.2"),
    ("f3", "d3", "filtering, 100 KB JSON, the field in 1 answer of 10", ">= 0.5"),
    ("w", "d", "WAF, CRS paranoia 1", ">= 0.35"),
    ("m", "d", "metrics + audit + request id", ""),
    ("t", "d", "m + OpenTelemetry, every request traced", ""),
    ("s", "d", "m + OpenTelemetry, 10% sampled, no policy spans", ">= 0.8"),
    ("s", "m", "what the 10%-sampled tracing itself costs", ">= 0.95"),
]


def print_ratios(results: dict[str, float]) -> None:
    """Every ratio with both its figures (rps of the target and of its baseline, same run)."""
    print()
    for a, b, what, target in RATIOS:
        if a in results and b in results:
            ratio = results[a] / results[b]
            goal = f"  (target {target})" if target else ""
            print(f"{a}/{b} {what}: {ratio:.2f} = {results[a]:.0f} / {results[b]:.0f} rps{goal}")


def stop_all(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every server, then wait; one that does not stop in 10 s is killed."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="runs per target, alternating; the median counts")
    ap.add_argument(
        "--protection",
        action="store_true",
        help="also: response filtering (1 KB and 100 KB JSON) and the WAF, each beside pass-through",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=0,
        help="also: nginx and bastion pass-through with 1 and with N workers on the same cores 0..N-1",
    )
    ap.add_argument("--only", default="", help="comma-separated target labels to run (e.g. d1,f1,d2,f2)")
    ap.add_argument(
        "--half-load",
        type=int,
        default=10,
        metavar="SECONDS",
        help="p50/p99 of pass-through and all policies at half their measured maximum (0: skip)",
    )
    args = ap.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"{tool} is needed: apt-get install wrk nginx-light")
    work = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    work.chmod(0o755)  # nginx workers (www-data) read the JSON files from here
    up, ngx, mini, d_port, e_port = (free_port() for _ in range(5))
    (work / "nginx.conf").write_text(NGINX.format(dir=work, up=up, px=ngx))
    (work / "pass.yaml").write_text(pass_through(d_port, up))
    (work / "all.yaml").write_text(BASTION_ALL.format(port=e_port, up=up, dir=work))
    (work / "1k.json").write_bytes(sample_json(1024))
    (work / "100k.json").write_bytes(sample_json(100 * 1024))
    mix = write_mix(work)
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    srv = pinned("1")
    admin_ports: dict[str, int] = {}  # label -> admin listener (t and s: their span drop counts)
    procs = [subprocess.Popen([*srv, nginx_bin, "-c", str(work / "nginx.conf"), "-p", str(work)])]
    try:
        procs.append(subprocess.Popen([*srv, PY, str(HERE / "minimal_proxy.py"), f"http://127.0.0.1:{up}", str(mini)]))
        # one worker on the one core given to the servers (the default is one per usable core, and
        # with no per-process store these configs would start two on the same core)
        bastion = [*srv, *SERVE, "--config"]
        procs.append(subprocess.Popen([*bastion, str(work / "pass.yaml")]))
        procs.append(subprocess.Popen([*bastion, str(work / "all.yaml")]))
        targets = [
            ("a upstream direct", up),
            ("b nginx proxy", ngx),
            ("c minimal proxy", mini),
            ("d bastion pass-through", d_port),
            ("e bastion all policies", e_port),
        ]
        if args.variants:
            for label, client, server in (
                ("c' minimal httpx+uvicorn", "httpx", "uvicorn"),
                ("c'' minimal aiohttp+granian", "aiohttp", "granian"),
            ):
                port = free_port()
                procs.append(
                    subprocess.Popen(
                        [*srv, PY, str(HERE / "minimal_proxy.py"), f"http://127.0.0.1:{up}", str(port), client, server],
                        cwd=HERE,
                    )
                )
                targets.append((label, port))
        cpus: dict[str, str] = {}  # wrk's cores for a target (default: core 0)
        if args.workers > 1:
            same = ",".join(str(i) for i in range(args.workers))
            for n in (1, args.workers):
                n_port, g_port = free_port(), free_port()
                (work / f"nginx-{n}.conf").write_text(NGINX_N.format(n=n, dir=work, up=up, px=n_port))
                (work / f"pass-{n}.yaml").write_text(pass_through(g_port, up))
                procs.append(
                    subprocess.Popen([*pinned(same), nginx_bin, "-c", str(work / f"nginx-{n}.conf"), "-p", str(work)])
                )
                procs.append(
                    subprocess.Popen(
                        [*pinned(same), *bastion[len(srv) :], str(work / f"pass-{n}.yaml"), "--workers", str(n)]
                    )
                )
                for label, port in (
                    (f"n{n} nginx, {n} worker(s), cores {same}", n_port),
                    (f"g{n} bastion pass-through, {n} worker(s), cores {same}", g_port),
                ):
                    targets.append((label, port))
                    cpus[label] = same
        paths = {label: "/users/1" for label, _ in targets}
        if args.protection:
            f_port, w_port = free_port(), free_port()
            (work / "filter.yaml").write_text(pass_through(f_port, up, response_filter={}))
            (work / "waf.yaml").write_text(pass_through(w_port, up, waf={}))
            procs.append(subprocess.Popen([*bastion, str(work / "filter.yaml")]))
            procs.append(subprocess.Popen([*bastion, str(work / "waf.yaml")]))
            m_port = free_port()
            (work / "metrics.yaml").write_text(
                pass_through(m_port, up, metrics={}, audit={"output": str(work / "m-audit.log")}, request_id={})
            )
            procs.append(subprocess.Popen([*bastion, str(work / "metrics.yaml")]))
            t_port = free_port()  # the same plus OpenTelemetry, exporting OTLP/HTTP to nginx (return 200)
            admin_ports["t"], admin_ports["s"] = free_port(), free_port()  # their span drop counts
            (work / "tracing.yaml").write_text(
                with_admin(
                    pass_through(
                        t_port,
                        up,
                        metrics={},
                        audit={"output": str(work / "t-audit.log")},
                        request_id={},
                        tracing={"exporter": "otlp", "endpoint": f"http://127.0.0.1:{up}/v1/traces"},
                    ),
                    admin_ports["t"],
                )
            )
            procs.append(subprocess.Popen([*bastion, str(work / "tracing.yaml")]))
            s_port = free_port()  # production-style: 10% sampled, no per-policy spans
            (work / "sampled.yaml").write_text(
                with_admin(
                    pass_through(
                        s_port,
                        up,
                        metrics={},
                        audit={"output": str(work / "s-audit.log")},
                        request_id={},
                        tracing={
                            "exporter": "otlp",
                            "endpoint": f"http://127.0.0.1:{up}/v1/traces",
                            "sample_ratio": 0.1,
                            "policy_spans": False,
                        },
                    ),
                    admin_ports["s"],
                )
            )
            procs.append(subprocess.Popen([*bastion, str(work / "sampled.yaml")]))
            extra = [
                ("m  metrics + audit + request id", m_port, "/users/1"),
                ("t  m + OpenTelemetry traces", t_port, "/users/1"),
                ("s  m + traces 10%, no policy spans", s_port, "/users/1"),
                ("d1 pass-through, 1 KB JSON", d_port, "/json1k"),
                ("f1 filtering, 1 KB JSON", f_port, "/json1k"),
                ("d2 pass-through, 100 KB JSON", d_port, "/json100k"),
                ("f2 filtering, 100 KB JSON", f_port, "/json100k"),
                ("d3 pass-through, 100 KB, 1:10", d_port, "/clean100k"),
                ("f3 filtering, 100 KB, field 1:10", f_port, "/clean100k"),
                ("w  WAF (CRS, paranoia 1)", w_port, "/users/1?q=hello&page=2"),
            ]
            be_port = free_port()
            (work / "nginx-all.conf").write_text(NGINX_ALL.format(dir=work, up=up, px=be_port))
            procs.append(subprocess.Popen([*srv, nginx_bin, "-c", str(work / "nginx-all.conf"), "-p", str(work)]))
            extra.insert(0, ("be nginx with e's policies", be_port, "/users/1"))
            for label, port, path in extra:
                targets.append((label, port))
                paths[label] = path
        if args.only:
            keep = set(args.only.split(","))
            targets = [t for t in targets if t[0].split()[0] in keep]
        for _, port in targets:
            wait_port(port)
        results = {}
        print(
            f"wrk -t1 -c{args.connections} -d{args.duration}s, GET /users/1, median of {args.rounds} "
            "alternating rounds; wrk pinned to core 0, all servers to core 1"
        )
        samples: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _ in targets}
        scripts = {label: mix for label, _ in targets if label.split()[0] in ("d3", "f3")}
        for label, port in targets:
            wrk(f"http://127.0.0.1:{port}{paths[label]}", 2, args.connections, scripts.get(label), cpus.get(label, "0"))
        for _ in range(args.rounds):
            for label, port in targets:
                url = f"http://127.0.0.1:{port}{paths[label]}"
                samples[label].append(
                    wrk(url, args.duration, args.connections, scripts.get(label), cpus.get(label, "0"))
                )
        print(f"{'target':32} {'rps':>10} {'p50 ms':>8} {'p99 ms':>8}   rps of each round")
        for label, _ in targets:
            runs = sorted(samples[label])
            rps, p50, p99 = runs[len(runs) // 2]
            results[label.split()[0] if not label.startswith("c'") else label] = rps
            each = " ".join(f"{r[0]:.0f}" for r in samples[label])
            print(f"{label:32} {rps:10.0f} {p50:8.2f} {p99:8.2f}   {each}", flush=True)
        print_ratios(results)
        for label, admin_port in admin_ports.items():  # tracing figures are read with their drop rate
            if label in results:
                print(f"{label}: spans dropped (bastion_trace_spans_dropped_total): {spans_dropped(admin_port)}")
        if args.workers > 1:
            n = args.workers
            for a, b, what in (
                (f"g{n}", "g1", f"bastion, {n} workers vs 1, same cores"),
                (f"n{n}", "n1", f"nginx, {n} workers vs 1, same cores"),
                (f"g{n}", f"n{n}", f"bastion vs nginx, {n} workers each"),
            ):
                if a in results and b in results:
                    print(f"{a}/{b} ({what}): {results[a] / results[b]:.2f} = {results[a]:.0f} / {results[b]:.0f} rps")
        if args.half_load:
            ports = dict(targets)
            half_load(
                work,
                [
                    (label, f"http://127.0.0.1:{ports[label]}{paths[label]}", results[label.split()[0]])
                    for label in ("d bastion pass-through", "e bastion all policies")
                    if label in ports
                ],
                args.half_load,
            )
    finally:
        stop_all(procs)


if __name__ == "__main__":
    main()
