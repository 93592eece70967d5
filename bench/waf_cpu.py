"""bench/waf_cpu: CPU time `bastion serve` spends per request with the WAF (the config of
bench/gateway.py's target `w`: pass-through plus `waf: {}`) beside pass-through (target `d`),
same run, alternating rounds.

On this shared machine wrk's requests/s say little; the server process's CPU time (user + system
from /proc/<pid>/stat) over the requests it answered does not depend on what else runs. The
ratio d_cpu/w_cpu is what w/d would be if each server had a core of its own.

    .venv/bin/python bench/waf_cpu.py [--rounds 3] [--duration 5] [--connections 20]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

from gateway import SERVE, free_port, pass_through, stop_all, wait_port
from workers_cpu import UPSTREAM, cpu_seconds

PATH = "/users/1?q=hello&page=2"  # bench/gateway.py's path for target w


def measure(port: int, pid: int, duration: int, connections: int) -> tuple[float, float]:
    """(requests/s, CPU microseconds per request) of one wrk run."""
    before = cpu_seconds(pid)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"http://127.0.0.1:{port}{PATH}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spent = cpu_seconds(pid) - before
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    if not total:
        raise RuntimeError(f"no answers on port {port}:\n{out}")
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"errors on port {port}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, 1e6 * spent / total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bastion-waf-cpu-"))
    up = free_port()
    (work / "up.conf").write_text(UPSTREAM.format(dir=work, up=up))
    procs = [subprocess.Popen(["nginx", "-c", str(work / "up.conf"), "-p", str(work)])]
    try:
        ports = {"d": free_port(), "w": free_port()}
        (work / "d.yaml").write_text(pass_through(ports["d"], up))
        (work / "w.yaml").write_text(pass_through(ports["w"], up, waf={}))
        pids = {}
        for label in ports:
            procs.append(subprocess.Popen([*SERVE, "--config", str(work / f"{label}.yaml")]))
            pids[label] = procs[-1].pid
        for port in ports.values():
            wait_port(port, 120)
            subprocess.run(["wrk", "-t1", "-c5", "-d2s", f"http://127.0.0.1:{port}{PATH}"], capture_output=True)
        samples: dict[str, list[tuple[float, float]]] = {label: [] for label in ports}
        for _ in range(args.rounds):
            for label, port in ports.items():
                samples[label].append(measure(port, pids[label], args.duration, args.connections))
                time.sleep(0.2)
        med = {k: sorted(v, key=lambda s: s[1])[len(v) // 2] for k, v in samples.items()}
        for label, name in (("d", "pass-through"), ("w", "WAF (CRS, paranoia 1)")):
            each = " ".join(f"{s[1]:.0f}" for s in samples[label])
            print(f"{label}  {name:24} {med[label][0]:8.0f} req/s  {med[label][1]:6.0f} CPU us/request   ({each})")
        print(
            f"w/d by CPU per request: {med['d'][1] / med['w'][1]:.2f}   by requests/s: {med['w'][0] / med['d'][0]:.2f}"
        )
    finally:
        stop_all(procs)


if __name__ == "__main__":
    main()
