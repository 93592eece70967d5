"""bench/gateway_inprocess: the gateway's own request path and the upstream client, without the
server layer: `Gateway.handle` driven in process with a made ASGI scope, against a real upstream
(nginx `return 200`, started here, in its own process so it is not counted).

    .venv/bin/python bench/gateway_inprocess.py [--requests 20000] [--headers 3] [--rounds 5]

Prints CPU µs per request (`time.process_time`, median of `--rounds`). On a loaded machine count
instructions instead (deterministic): run it under `PYTHONHASHSEED=0 valgrind --tool=callgrind
--callgrind-out-file=/dev/null` with `--rounds 1 --requests 200` and `--requests 1200`; the
difference of the two "Collected" totals divided by 1000 is the instructions per request, start-up
cancelled out (docs/architecture.md, session 6, s6-upstream). `--client-only` drives the upstream
client (`ConnectionPool.request`, the body, `release`) alone. To compare another tree, put its
`src` first: `PYTHONPATH=/path/to/src`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateway import free_port, pass_through, wait_port  # noqa: E402

NGINX = """
worker_processes 1; daemon off; pid {dir}/nginx.pid; error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  server {{ listen 127.0.0.1:{up};
    location / {{ default_type application/json; return 200 '{{"id":1,"name":"alice","ok":true}}'; }} }}
}}
"""


def scope_for(port: int, n_headers: int) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:%d" % port), (b"user-agent", b"wrk"), (b"accept", b"*/*")]
    headers += [(b"x-extra-%d" % i, b"value-%d" % i) for i in range(max(0, n_headers - 3))]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", port),
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": "/users/42",
        "raw_path": b"/users/42",
        "query_string": b"",
        "headers": headers[:n_headers],
    }


async def run_gateway(up: int, requests: int, rounds: int, n_headers: int, work: Path) -> list[float]:
    from bastion.config.loader import load_config
    from bastion.gateway.app import Gateway
    from bastion.gateway.state import compile_state

    cfg_path = work / "pass.yaml"
    cfg_path.write_text(pass_through(free_port(), up))
    gw = Gateway(compile_state(load_config(str(cfg_path)), config_dir=str(work)))
    scope = scope_for(8080, n_headers)
    answers = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal answers
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message
            answers += 1

    out = []
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(requests):
            await gw.handle(dict(scope), receive, send)
        out.append((time.process_time() - t0) / requests * 1e6)
    assert answers == requests * rounds
    await gw.aclose()
    return out


async def run_client(up: int, requests: int, rounds: int) -> list[float]:
    from bastion.net.http1 import ConnectionPool

    pool = ConnectionPool("127.0.0.1", up)
    headers = [(b"user-agent", b"wrk"), (b"accept", b"*/*"), (b"host", b"127.0.0.1")]
    out = []
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(requests):
            resp = await pool.request("GET", b"/users/42", list(headers), None)
            async for _chunk in resp.body():
                pass
            resp.release()
        out.append((time.process_time() - t0) / requests * 1e6)
    await pool.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--headers", type=int, default=3)
    ap.add_argument("--client-only", action="store_true")
    ap.add_argument("--upstream-port", type=int, default=0, help="an upstream already listening (no nginx started)")
    args = ap.parse_args()
    import uvloop

    work = Path(tempfile.mkdtemp(prefix="bastion-inproc-"))
    work.chmod(0o755)
    proc = None
    up = args.upstream_port
    if not up:
        up = free_port()
        (work / "nginx.conf").write_text(NGINX.format(dir=work, up=up))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        proc = subprocess.Popen([nginx, "-c", str(work / "nginx.conf"), "-p", str(work)])
    try:
        wait_port(up)
        if args.client_only:
            figures = uvloop.run(run_client(up, args.requests, args.rounds))
        else:
            figures = uvloop.run(run_gateway(up, args.requests, args.rounds, args.headers, work))
        print("cpu µs/request per round:", " ".join(f"{f:.1f}" for f in figures))
        print(f"median {statistics.median(figures):.1f}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
