"""bench/websocket: messages per second through the gateway beside the same client talking to the
upstream directly, in one run.

The upstream is a Starlette WebSocket echo under uvicorn; the gateway is `bastion serve` with
every default policy off except what is named (pass-through), and again with the default
WebSocket limits, request id and audit on ("protected"). The client is the `websockets` library
in this process: `--sockets` connections, each sending `--size`-byte text messages and reading the
echo, with `--window` messages in flight per socket (1: strict request/response round trips).
Servers get core 1, the client core 0 (when there are two).

    .venv/bin/python bench/websocket.py [--seconds 5] [--sockets 10] [--size 128] [--window 1,16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gateway import default_on_off, free_port, pinned, stop_all, wait_port  # noqa: E402

PY = sys.executable

UPSTREAM = textwrap.dedent(
    """
    import sys, uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    async def echo(ws):
        await ws.accept()
        try:
            while True:
                await ws.send_text(await ws.receive_text())
        except WebSocketDisconnect:
            pass

    app = Starlette(routes=[WebSocketRoute("/{p:path}", echo)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", loop="uvloop",
                ws="websockets-sansio")
    """
)


def gateway_config(port: int, up: int, tmp: str, protected: bool) -> str:
    off = default_on_off()
    policies: dict = dict(off)
    ws: dict = {"messages_per_second": None, "idle_timeout": 600, "max_per_principal": 1000}
    if protected:  # request id, audit, metrics, the default per-connection message rate raised to not bind
        policies = {"audit": {"output": f"{tmp}/audit.log"}}
        ws = {"messages_per_second": "1000000/second", "max_per_principal": 1000}
    return yaml.safe_dump(
        {
            "listeners": [{"host": "127.0.0.1", "port": port}],
            "upstreams": {"up": {"urls": [f"http://127.0.0.1:{up}"]}},
            "policies": policies,
            "routes": [{"path": "/*", "upstream": "up", "websocket": ws}],
        }
    )


async def drive(url: str, seconds: float, sockets: int, size: int, window: int) -> float:
    from websockets.asyncio.client import connect

    payload = "m" * size
    conns = [await connect(url, max_size=None, compression=None) for _ in range(sockets)]
    stop = time.perf_counter() + seconds
    counts = [0] * sockets

    async def one(i: int) -> None:
        ws = conns[i]
        while time.perf_counter() < stop:
            for _ in range(window):
                await ws.send(payload)
            for _ in range(window):
                await ws.recv()
            counts[i] += window

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(sockets)))
    took = time.perf_counter() - t0
    for ws in conns:
        await ws.close()
    return sum(counts) / took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--sockets", type=int, default=10)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--window", default="1,16")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if pinned("0"):
        os.sched_setaffinity(0, {0})
    up, gw_port, gw2_port = free_port(), free_port(), free_port()
    tmp = tempfile.mkdtemp()
    procs = [subprocess.Popen([*pinned("1"), PY, "-c", UPSTREAM, str(up)])]
    try:
        wait_port(up)
        for port, protected in ((gw_port, False), (gw2_port, True)):
            path = Path(tmp) / f"gw-{port}.yaml"
            path.write_text(gateway_config(port, up, tmp, protected))
            procs.append(
                subprocess.Popen(
                    [
                        *pinned("1"),
                        PY,
                        "-m",
                        "bastion.cli",
                        "serve",
                        "--workers",
                        "1",
                        "--no-watch",
                        "--log-level",
                        "warning",
                        "--config",
                        str(path),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            wait_port(port)
        targets = {
            "direct": f"ws://127.0.0.1:{up}/echo",
            "bastion": f"ws://127.0.0.1:{gw_port}/echo",
            "bastion+protected": f"ws://127.0.0.1:{gw2_port}/echo",
        }
        print(f"{args.sockets} sockets, {args.size}-byte text messages, {args.seconds}s per run, best of {args.rounds}")
        for window in [int(w) for w in args.window.split(",")]:
            best = {name: 0.0 for name in targets}
            for _ in range(args.rounds):  # alternating, so drift hits every target alike
                for name, url in targets.items():
                    best[name] = max(best[name], asyncio.run(drive(url, args.seconds, args.sockets, args.size, window)))
            print(f"\nwindow {window} (messages in flight per socket)")
            for name, rate in best.items():
                print(f"  {name:20s} {rate:10,.0f} msg/s  ({rate / best['direct']:.2f} of direct)")
    finally:
        stop_all(procs)


if __name__ == "__main__":
    main()
