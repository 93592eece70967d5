"""bench/gc_share: the share of `bastion serve`'s CPU time spent in the cyclic garbage collector
under wrk, with CPython's default young-generation threshold (700) and with bastion's
(`bastion.gateway.server.GC_YOUNG_THRESHOLD`), for pass-through (d) and every policy (e).

    .venv/bin/python bench/gc_share.py [--duration 8]

The server runs in this script's child through a small wrapper that times each collection with
`gc.callbacks` and reports on SIGUSR1 (before and after the measured wrk run: the difference is
the run's). Servers and nginx on core 1, wrk on core 0, as bench/gateway.py.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway import BASTION_ALL, NGINX, PY, free_port, pass_through, pinned, wait_port, wrk

WRAPPER = r"""
import gc, os, signal, sys, time
spent, count, started = [0.0], [0], [0.0]
def timed(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        spent[0] += time.perf_counter() - started[0]
        count[0] += 1
gc.callbacks.append(timed)
def report(*_):
    sys.stderr.write(f"GC {spent[0]:.6f} {count[0]} {time.process_time():.6f}\n")
    sys.stderr.flush()
signal.signal(signal.SIGUSR1, report)
young = int(sys.argv[1])
if young:
    import bastion.gateway.server as server
    server.GC_YOUNG_THRESHOLD = young
sys.argv = ["bastion", *sys.argv[2:]]
from bastion.cli import app
app()
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=8)
    args = ap.parse_args()
    from bastion.gateway.server import GC_YOUNG_THRESHOLD

    work = Path(tempfile.mkdtemp(prefix="bastion-gc-"))
    work.chmod(0o755)
    up, ngx = free_port(), free_port()
    (work / "nginx.conf").write_text(NGINX.format(dir=work, up=up, px=ngx))
    (work / "wrapper.py").write_text(WRAPPER)
    srv = pinned("1")
    nginx = subprocess.Popen([*srv, "nginx", "-c", str(work / "nginx.conf"), "-p", str(work)])
    print(f"wrk -t1 -c50 -d{args.duration}s GET /users/1; GC share = collector time / process CPU during the run")
    try:
        wait_port(up)
        for label in ("d", "e"):
            for young in (700, GC_YOUNG_THRESHOLD):
                port = free_port()
                text = pass_through(port, up) if label == "d" else BASTION_ALL.format(port=port, up=up, dir=work)
                (work / f"{label}.yaml").write_text(text)
                cmd = [*srv, PY, str(work / "wrapper.py"), str(young), "serve", "--no-watch", "--log-level", "warning"]
                proc = subprocess.Popen(
                    [*cmd, "--workers", "1", "--config", str(work / f"{label}.yaml")],
                    stderr=subprocess.PIPE,
                    text=True,
                )
                try:
                    wait_port(port)
                    wrk(f"http://127.0.0.1:{port}/users/1", 2, 50)
                    proc.send_signal(signal.SIGUSR1)
                    rps = wrk(f"http://127.0.0.1:{port}/users/1", args.duration, 50)[0]
                    proc.send_signal(signal.SIGUSR1)
                    time.sleep(0.5)
                finally:
                    proc.terminate()
                    err = proc.communicate(timeout=30)[1]
                reports = [line.split()[1:] for line in err.splitlines() if line.startswith("GC ")]
                (gc0, n0, cpu0), (gc1, n1, cpu1) = ([float(x) for x in r] for r in reports[-2:])
                share = (gc1 - gc0) / (cpu1 - cpu0) if cpu1 > cpu0 else float("nan")
                print(
                    f"{label} threshold {young:>6}: {rps:8.0f} rps, {int(n1 - n0):5d} collections, "
                    f"GC {share * 100:4.1f} % of the process's CPU",
                    flush=True,
                )
    finally:
        nginx.terminate()
        nginx.wait(10)


if __name__ == "__main__":
    if not os.path.exists("/proc"):
        sys.exit("Linux only")
    main()
