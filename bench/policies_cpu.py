"""bench/policies_cpu: CPU time (user + system, every thread of the process) `bastion serve`
spends per request with the policy sets of bench/gateway.py: d pass-through, m metrics + audit
+ request id, s m + 10 % sampled traces without policy spans, t m + every request traced, e all
policies.

On a shared, loaded machine wrk's throughput ratios move with the neighbours' load; the CPU the
server process spends per request does not (much), and for a server bound by one core its
inverse ratio is the throughput ratio: s/d ≈ cpu(d) / cpu(s). The tracing exporter's thread
(BatchSpanProcessor, OTLP encoding) is counted: /proc/<pid>/stat sums every thread. The trace
exporter process (`exporter_process`, session 6) is counted apart, in the `exp` column, and the
s/d and t/d lines give both ratios: the serving process alone, and serving + exporter.

    .venv/bin/python bench/policies_cpu.py [--rounds 3] [--duration 8] [--only d,s]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from gateway import BASTION_ALL, SERVE, free_port, pass_through, pinned, wait_port
from workers_cpu import cpu_seconds  # noqa: E402

UPSTREAM = """worker_processes 1; daemon off; pid {dir}/up.pid; error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; server {{ listen 127.0.0.1:{up};
  location / {{ default_type application/json; return 200 '{{"id":1,"name":"alice","ok":true}}'; }} }} }}
"""


def exporter_cpu(pid: int) -> float:
    """CPU seconds of `pid`'s child processes (the trace exporter process of a traced server)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            total += sum(cpu_seconds(int(c)) for c in (task / "children").read_text().split())
        except OSError:
            pass
    return total


def configs(work: Path, up: int) -> dict[str, tuple[int, str]]:
    """label -> (port, config text), the same policy sets as bench/gateway.py's d, m, s, t, e."""
    m = {"metrics": {}, "request_id": {}}
    traces = f"http://127.0.0.1:{up}/v1/traces"
    out: dict[str, tuple[int, str]] = {}
    for label in ("d", "m", "s", "t", "e"):
        port = free_port()
        audit = {"audit": {"output": str(work / f"{label}-audit.log")}}
        if label == "d":
            text = pass_through(port, up)
        elif label == "m":
            text = pass_through(port, up, **m, **audit)
        elif label == "s":
            tracing = {"exporter": "otlp", "endpoint": traces, "sample_ratio": 0.1, "policy_spans": False}
            text = pass_through(port, up, **m, **audit, tracing=tracing)
        elif label == "t":
            text = pass_through(port, up, **m, **audit, tracing={"exporter": "otlp", "endpoint": traces})
        else:
            text = BASTION_ALL.format(port=port, up=up, dir=work)
        out[label] = (port, text)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--only", default="", help="comma-separated labels (default: d,m,s,t,e)")
    ap.add_argument(
        "--compare",
        default="",
        metavar="SRC",
        help="also the same servers from another source tree (PYTHONPATH=SRC, e.g. a `git archive` of "
        "main's src), labelled with a trailing 0, measured in the same alternating rounds",
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bastion-policies-cpu-"))
    up = free_port()
    (work / "up.conf").write_text(UPSTREAM.format(dir=work, up=up))
    procs = [subprocess.Popen([*pinned("0"), "nginx", "-c", str(work / "up.conf"), "-p", str(work)])]
    servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    try:
        wanted = set(args.only.split(",")) if args.only else None
        trees = [("", None)] + ([("0", os.path.abspath(args.compare))] if args.compare else [])
        for suffix, src in trees:
            env = dict(os.environ, PYTHONPATH=src) if src else None
            for label, (port, text) in configs(work, up).items():
                if wanted is not None and label not in wanted:
                    continue
                name = label + suffix
                (work / f"{name}.yaml").write_text(text)
                proc = subprocess.Popen([*pinned("1"), *SERVE, "--config", str(work / f"{name}.yaml")], env=env)
                procs.append(proc)
                servers[name] = (port, proc)
        for port, _ in servers.values():
            wait_port(port, 120)
        time.sleep(1)
        per: dict[str, list[float]] = {label: [] for label in servers}
        exp: dict[str, list[float]] = {label: [] for label in servers}
        rates: dict[str, list[float]] = {label: [] for label in servers}
        for port, _ in servers.values():  # warm up
            subprocess.run(
                [*pinned("0"), "wrk", "-t1", f"-c{args.connections}", "-d2s", f"http://127.0.0.1:{port}/users/1"],
                capture_output=True,
            )
        for _ in range(args.rounds):
            for label, (port, proc) in servers.items():
                before = cpu_seconds(proc.pid)
                before_exp = exporter_cpu(proc.pid)
                out = subprocess.run(
                    [
                        *pinned("0"),
                        "wrk",
                        "-t1",
                        f"-c{args.connections}",
                        f"-d{args.duration}s",
                        f"http://127.0.0.1:{port}/users/1",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                time.sleep(0.3)  # the exporter's last batch of the round is this round's cost
                spent = cpu_seconds(proc.pid) - before
                spent_exp = exporter_cpu(proc.pid) - before_exp
                if "Non-2xx" in out:
                    raise RuntimeError(f"{label}: non-2xx answers\n{out}")
                total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
                per[label].append(1e6 * spent / total)
                exp[label].append(1e6 * spent_exp / total)
                rates[label].append(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)))  # type: ignore[union-attr]
        print(f"wrk -t1 -c{args.connections} -d{args.duration}s /users/1, {args.rounds} alternating rounds")
        print(f"{'':3} {'µs CPU/req (median)':>20} {'exp µs/req':>11} {'rps (median)':>13}   µs of each round")
        med = {label: statistics.median(v) for label, v in per.items()}
        emed = {label: statistics.median(v) for label, v in exp.items()}
        for label in servers:
            each = " ".join(f"{v:.0f}" for v in per[label])
            print(f"{label:3} {med[label]:20.1f} {emed[label]:11.1f} {statistics.median(rates[label]):13.0f}   {each}")
        for suffix, _ in trees:
            d = "d" + suffix
            for label in ("m", "s", "t", "e"):
                x = label + suffix
                if d in med and x in med:
                    line = f"{x}/{d} by CPU: {med[d] / med[x]:.2f} ({med[d]:.0f} / {med[x]:.0f} µs)"
                    if emed[x]:
                        both = med[x] + emed[x]
                        line += f"; serving + exporter process: {med[d] / both:.2f} ({med[d]:.0f} / {both:.0f} µs)"
                    print(line)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
