"""bench/tracing_instr: instructions per request of `bastion serve --workers 1` under callgrind,
serving process and trace exporter process counted apart, for:

- m   metrics + audit + request id (the s config without tracing)
- u   m + tracing with `sample_ratio: 0` (every request sampled out)
- a   m + tracing with `sample_ratio: 1`, no policy spans (every request sampled in: the root
      SERVER span and the upstream CLIENT span, exported)
- i   a with `exporter_process: false` (the light spans alone: exported by the SDK's OTLP
      exporter on a thread of the serving process, as before session 6)

and, modelled from those deterministic parts, s = u + 10 % of (a − u) — the `s` config of
bench/gateway.py (10 % sampled) — with s/d computed both ways: the serving process alone, and
serving + exporter process. Which requests a real 10 % sample picks is random, hence the model.

Method (docs/architecture.md, session 5 perf-policies): `valgrind --tool=callgrind
--instr-atstart=no --trace-children=yes`; `--warmup` requests, then instrumentation switched on
with `callgrind_control -i on` (for the server and its exporter child) around `--requests`
sequential keep-alive requests and the export that follows them (a wait past the exporters'
flush timers: 5 s, the SDK's BatchSpanProcessor's and bastion's), then off. `--compare SRC` runs
the same servers from another source tree (PYTHONPATH=SRC) in the same run.

    .venv/bin/python bench/tracing_instr.py [--requests 400] [--only m,u,a] [--compare /tmp/main-src]
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from gateway import SERVE, free_port, pass_through, wait_port

UPSTREAM = """worker_processes 1; daemon off; pid {dir}/up.pid; error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{ access_log off; server {{ listen 127.0.0.1:{up};
  location / {{ default_type application/json; return 200 '{{"id":1,"name":"alice","ok":true}}'; }} }} }}
"""


def config(label: str, port: int, up: int, work: Path) -> str:
    m = {"metrics": {}, "request_id": {}, "audit": {"output": str(work / f"{label}-{port}-audit.log")}}
    traces = f"http://127.0.0.1:{up}/v1/traces"
    if label == "d":
        return pass_through(port, up)
    if label == "m":
        return pass_through(port, up, **m)
    tracing = {
        "exporter": "otlp",
        "endpoint": traces,
        "sample_ratio": 0.0 if label == "u" else 1.0,
        "policy_spans": False,
    }
    if label == "i":
        tracing["exporter_process"] = False
    return pass_through(port, up, **m, tracing=tracing)


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def requests(port: int, n: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(n):
        conn.request("GET", "/users/1")
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}")
    conn.close()


def summary(path: Path) -> int:
    total = 0
    for f in [path, *path.parent.glob(path.name + ".*")]:
        if not f.exists():
            continue
        text = f.read_text(errors="replace")
        m = re.search(r"^totals: (\d+)", text, re.M) or re.search(r"^summary: (\d+)", text, re.M)
        if m:
            total = max(total, int(m.group(1)))
    return total


def measure(
    label: str, src: str | None, up: int, work: Path, n: int, warmup: int, wait: float, settle: float
) -> tuple[int, int]:
    port = free_port()
    name = f"{label}{'0' if src else ''}-{port}"
    (work / f"{name}.yaml").write_text(config(label, port, up, work))
    env = dict(os.environ, PYTHONHASHSEED="0", **({"PYTHONPATH": src} if src else {}))
    out = work / f"cg-{name}"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--trace-children=yes",
        f"--callgrind-out-file={out}.%p",
        *SERVE,
        "--config",
        str(work / f"{name}.yaml"),
    ]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 600)
        requests(port, warmup)
        time.sleep(settle)  # the warm-up's spans exported: the exporter process started, its imports done
        pids = [proc.pid, *children(proc.pid)]
        for pid in pids:
            subprocess.run(["callgrind_control", "-i", "on", str(pid)], capture_output=True, check=True)
        requests(port, n)
        time.sleep(wait)  # their spans exported (the exporters' timers fire)
        for pid in pids:
            subprocess.run(["callgrind_control", "-i", "off", str(pid)], capture_output=True, check=True)
    finally:
        proc.terminate()
        proc.wait(300)
    time.sleep(1)
    serving = summary(Path(f"{out}.{proc.pid}"))
    exporter = sum(summary(Path(f"{out}.{pid}")) for pid in pids[1:])
    return serving // n, exporter // n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--wait", type=float, default=12.0, help="seconds after the requests (export timers)")
    ap.add_argument("--settle", type=float, default=45.0, help="seconds after the warm-up (exporter start-up)")
    ap.add_argument("--only", default="d,m,u,a")
    ap.add_argument("--compare", default="", metavar="SRC")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("needs valgrind")
    work = Path(tempfile.mkdtemp(prefix="bastion-tracing-instr-"))
    up = free_port()
    (work / "up.conf").write_text(UPSTREAM.format(dir=work, up=up))
    nginx = subprocess.Popen(["nginx", "-c", str(work / "up.conf"), "-p", str(work)])
    try:
        wait_port(up)
        trees = [("", None)] + ([("0", os.path.abspath(args.compare))] if args.compare else [])
        res: dict[str, tuple[int, int]] = {}
        for label in args.only.split(","):
            for suffix, src in trees:
                res[label + suffix] = measure(label, src, up, work, args.requests, args.warmup, args.wait, args.settle)
                print(f"{label + suffix:3} serving {res[label + suffix][0]:>9,} exporter {res[label + suffix][1]:>9,}")
        print(f"instructions per request ({args.requests} requests, callgrind)")
        for suffix, _ in trees:
            tree = "compare" if suffix else "this tree"
            if all(x + suffix in res for x in "dua"):
                d = res["d" + suffix][0]
                (us, ue), (as_, ae) = res["u" + suffix], res["a" + suffix]
                s_srv = us + 0.1 * (as_ - us)
                s_all = s_srv + 0.1 * (ae - ue)
                print(
                    f"{tree}: traced request − sampled-out: serving {as_ - us:,}, exporter {ae - ue:,}; "
                    f"s modelled serving {s_srv:,.0f} (s/d {d / s_srv:.2f}), serving + exporter {s_all:,.0f} "
                    f"(s/d {d / s_all:.2f})"
                )
    finally:
        nginx.terminate()
        nginx.wait(10)


if __name__ == "__main__":
    main()
