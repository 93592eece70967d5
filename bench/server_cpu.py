"""bench/server_cpu: CPU time per request of the `bastion serve` process (user + system, from
/proc/<pid>/stat), for two source trees side by side, in alternating rounds.

On a shared, loaded machine throughput says little; the CPU the server process spends per
request does not depend on how much of the machine it got. Each round runs wrk against one
server for `--duration` seconds and divides the process's CPU time by the requests wrk counted.

    .venv/bin/python bench/server_cpu.py [--base /path/to/other/src] [--rounds 3] [--duration 5]

`--base` is another checkout's `src` directory (e.g. `git archive main | tar -x -C /tmp/base`):
its servers run with PYTHONPATH pointing there, so "base" and "this tree" are measured in the
same run, on the same upstream, with the same wrk. Configs: `d` pass-through, `e` all policies
(bench/gateway.py's), each with `--headers N` extra request headers (default 0).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

from gateway import BASTION_ALL, SERVE, free_port, pass_through, stop_all, wait_port
from workers_cpu import cpu_seconds  # noqa: E402

UPSTREAM = """worker_processes 1; daemon off; pid {dir}/up.pid; error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; server {{ listen 127.0.0.1:{up};
  location / {{ default_type application/json; return 200 '{{"id":1,"name":"alice","ok":true}}'; }} }} }}
"""
SRC = Path(__file__).resolve().parent.parent / "src"


def wrk_requests(url: str, duration: int, connections: int, script: str | None) -> int:
    lua = ["-s", script] if script else []
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", *lua, url], capture_output=True, text=True, check=True
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(out)
    return int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="", help="another tree's src directory to compare with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--headers", type=int, default=0, help="extra request headers per request")
    ap.add_argument("--only", default="d,e", help="configs: d (pass-through), e (all policies)")
    ap.add_argument("--base-first", action="store_true", help="start and measure the base tree first in each round")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bastion-server-cpu-"))
    up = free_port()
    (work / "up.conf").write_text(UPSTREAM.format(dir=work, up=up))
    script = None
    if args.headers:
        lines = "".join(f'wrk.headers["X-Extra-{i}"] = "value-{i}-abcdefghijklmnop"\n' for i in range(args.headers))
        (work / "headers.lua").write_text(lines)
        script = str(work / "headers.lua")
    procs = [subprocess.Popen(["nginx", "-c", str(work / "up.conf"), "-p", str(work)])]
    trees = {"this": str(SRC)}
    if args.base:
        trees["base"] = args.base
        if args.base_first:  # the order is part of the measurement on a loaded machine: check both
            trees = {"base": args.base, "this": str(SRC)}
    servers: dict[tuple[str, str], tuple[subprocess.Popen, int]] = {}
    try:
        for tree, src in trees.items():
            for cfg in args.only.split(","):
                port = free_port()
                path = work / f"{tree}-{cfg}.yaml"
                if cfg == "d":
                    path.write_text(pass_through(port, up))
                else:
                    path.write_text(BASTION_ALL.format(port=port, up=up, dir=work / f"{tree}-audit"))
                    (work / f"{tree}-audit").mkdir()
                env = {**os.environ, "PYTHONPATH": src}
                proc = subprocess.Popen([*SERVE, "--config", str(path)], env=env)
                procs.append(proc)
                servers[(tree, cfg)] = (proc, port)
        wait_port(up)
        for _proc, port in servers.values():
            wait_port(port, 120)
        for _proc, port in servers.values():  # warm up
            wrk_requests(f"http://127.0.0.1:{port}/users/1", 1, args.connections, script)
        per: dict[tuple[str, str], list[float]] = {key: [] for key in servers}
        for _ in range(args.rounds):
            for key, (proc, port) in servers.items():
                before = cpu_seconds(proc.pid)
                n = wrk_requests(f"http://127.0.0.1:{port}/users/1", args.duration, args.connections, script)
                used = cpu_seconds(proc.pid) - before
                per[key].append(used / n * 1e6)
                print(f"{key[0]:>5} {key[1]}: {n:7d} requests, {used:6.2f} s CPU, {used / n * 1e6:6.1f} µs/request")
        print(f"\nmedian CPU µs per request ({args.rounds} rounds, {args.headers} extra headers):")
        for cfg in args.only.split(","):
            row = {tree: statistics.median(per[(tree, cfg)]) for tree in trees}
            line = "  ".join(f"{tree} {v:6.1f}" for tree, v in row.items())
            if "base" in row:
                line += f"  this/base {row['this'] / row['base']:.3f}"
            print(f"  {cfg}: {line}")
    finally:
        stop_all(procs)


if __name__ == "__main__":
    main()
