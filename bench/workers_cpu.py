"""bench/workers_cpu: CPU time (user + system, supervisor and workers) bastion spends per request
with 1 and with N workers, beside the throughput.

On a shared, loaded machine the throughput of N workers says little; the CPU per request says
whether more workers cost more per request (they should not: no state is shared between them,
so N free cores give about N times one worker's throughput).

    .venv/bin/python bench/workers_cpu.py [--workers 2] [--rounds 2] [--duration 10]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from gateway import free_port, pass_through, wait_port

TICK = os.sysconf("SC_CLK_TCK")
UPSTREAM = """worker_processes 1; daemon off; pid {dir}/up.pid; error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; server {{ listen 127.0.0.1:{up};
  location / {{ default_type application/json; return 200 '{{"id":1,"name":"alice","ok":true}}'; }} }} }}
"""


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def _watch(proc: subprocess.Popen[str], ready: threading.Event) -> None:
    for line in proc.stderr:  # type: ignore[union-attr]
        if "workers serving" in line or "listening on" in line and "[worker" not in line:
            ready.set()


def family(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *(int(p) for p in out)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bastion-workers-cpu-"))
    up = free_port()
    (work / "up.conf").write_text(UPSTREAM.format(dir=work, up=up))
    upstream = subprocess.Popen(["nginx", "-c", str(work / "up.conf"), "-p", str(work)])
    try:
        for _ in range(args.rounds):
            for n in (1, args.workers):
                port = free_port()
                (work / f"pass-{n}.yaml").write_text(pass_through(port, up))
                cmd = [sys.executable, "-m", "bastion.cli", "serve", "--no-watch", "--log-level", "info"]
                proc = subprocess.Popen(
                    [*cmd, "--config", str(work / f"pass-{n}.yaml"), "--workers", str(n)],
                    stderr=subprocess.PIPE,
                    text=True,
                )
                ready = threading.Event()
                threading.Thread(target=_watch, args=(proc, ready), daemon=True).start()
                try:
                    wait_port(port, 120)
                    if not ready.wait(180):  # every worker up, not only the first
                        raise RuntimeError("the workers did not start")
                    time.sleep(2)
                    url = f"http://127.0.0.1:{port}/users/1"
                    subprocess.run(["wrk", "-t1", f"-c{args.connections}", "-d2s", url], capture_output=True)
                    pids = family(proc.pid)
                    before = sum(cpu_seconds(p) for p in pids)
                    out = subprocess.run(
                        ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", url],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                    spent = sum(cpu_seconds(p) for p in pids) - before
                finally:
                    proc.terminate()
                    proc.wait(30)
                total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
                rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
                print(
                    f"workers={n}  processes={len(pids)}  rps={rps:7.0f}  cpu={spent:6.2f}s  "
                    f"cpu per request={1e6 * spent / total:5.0f} us",
                    flush=True,
                )
    finally:
        upstream.terminate()
        upstream.wait()


if __name__ == "__main__":
    main()
