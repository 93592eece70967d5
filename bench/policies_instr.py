"""bench/policies_instr: the gateway's own work per request with the policy sets of
bench/gateway.py (d pass-through, m metrics + audit + request id, e all policies), in process:
`Gateway.__call__` driven directly with made ASGI messages (no server layer, no client socket),
against a real nginx upstream on 127.0.0.1.

Meant to run under callgrind, where the count does not move with the machine's load:

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/policies_instr.py --config e --requests 200
    (the same with --requests 2200)

The difference of the two "Collected" totals divided by 2000 is the instructions per request,
start-up cancelled out. Without valgrind it prints CPU µs per request (process time; noisy).
`PYTHONPATH=<another tree's src>` measures another tree (main's) the same way. `--phases`: no
upstream, no proxying: each request is built, routed and run through the edge and route request
phases, then a made 200 answer through the response and log phases (the policies' own cost; d's
figure is what building and routing cost without them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from gateway import free_port, wait_port
from policies_cpu import UPSTREAM, configs

HEADERS = [
    (b"host", b"127.0.0.1"),
    (b"user-agent", b"wrk"),
    (b"accept", b"*/*"),
    (b"origin", b"https://app.example.com"),
]


# the made request: GET /users/1 from 127.0.0.1, with no body
SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/users/1",
    "raw_path": b"/users/1",
    "query_string": b"",
    "root_path": "",
    "headers": HEADERS,
    "client": ("127.0.0.1", 40000),
    "server": ("127.0.0.1", 8080),
}


async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}


async def drive(app, requests: int) -> float:
    scope = SCOPE
    statuses: dict[int, int] = {}

    async def send(message):
        if message["type"] == "http.response.start":
            statuses[message["status"]] = statuses.get(message["status"], 0) + 1

    for _ in range(50):  # warm: connections, caches
        await app(dict(scope), receive, send)
    statuses.clear()
    t0 = time.process_time()
    for _ in range(requests):
        await app(dict(scope), receive, send)
    spent = time.process_time() - t0
    assert statuses == {200: requests}, statuses
    return spent


async def phases(app, requests: int) -> float:
    from bastion.http import Response
    from bastion.pipeline import Context

    state = app.state
    scope = SCOPE

    async def one() -> None:
        req = app.build_request(scope, receive, state)
        ctx = Context()
        # as Gateway.handle calls them: a coroutine only when a step waits
        if state.edge.request_phase and (answer := state.edge.request(req, ctx)) is not None:
            if not isinstance(answer, Response):
                await answer
        pipeline, refusal, _target = app.decide_now(scope, req, ctx, state)
        if refusal is not None and not isinstance(refusal, Response):
            refusal = await refusal
        assert refusal is None, refusal
        resp = Response(200, [(b"content-type", b"application/json"), (b"content-length", b"30")])
        if pipeline.response_phase and (pending := pipeline.response(req, resp, ctx)) is not None:
            await pending
        pipeline.run_log(req, resp, ctx, {"duration_ms": 1.0, "upstream_ms": 0.5, "bytes_in": 0, "bytes_out": 30})

    for _ in range(50):
        await one()
    t0 = time.process_time()
    for _ in range(requests):
        await one()
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="e", choices=["d", "m", "e"])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--phases", action="store_true", help="the policies' phases only (no upstream)")
    ap.add_argument(
        "--policies", default="", help="pass-through plus these policies as YAML (a mapping), instead of --config"
    )
    args = ap.parse_args()
    from bastion.gateway.app import Gateway
    from bastion.gateway.server import build_state

    work = Path(tempfile.mkdtemp(prefix="bastion-policies-instr-"))
    up = free_port()
    (work / "up.conf").write_text(UPSTREAM.format(dir=work, up=up))
    nginx = subprocess.Popen(["nginx", "-c", str(work / "up.conf"), "-p", str(work)])
    try:
        wait_port(up)
        _port, text = configs(work, up)[args.config]
        if args.policies:
            import yaml
            from gateway import pass_through

            text = pass_through(free_port(), up, **yaml.safe_load(args.policies))
        path = work / f"{args.config}.yaml"
        path.write_text(text)
        state = build_state(str(path), 1)
        app = Gateway(state)

        async def run() -> float:
            try:
                return await (phases if args.phases else drive)(app, args.requests)
            finally:
                await app.aclose()

        spent = uvloop.run(run())
        print(f"{args.config}: {spent / args.requests * 1e6:.1f} µs CPU per request ({args.requests})", file=sys.stderr)
    finally:
        nginx.terminate()
        nginx.wait(10)


if __name__ == "__main__":
    main()
