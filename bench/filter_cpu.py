"""bench/filter_cpu: CPU time per request of one `bastion serve --workers 1` process (utime +
stime from /proc/<pid>/stat over the requests wrk made) for the response-filtering targets of
bench/gateway.py: d1/f1 (1 KB), d2/f2 (100 KB, the field in every answer), d3/f3 (100 KB, the
field in 1 answer of 10), pass-through (d) beside `response_filter: {}` (f). On a machine shared
with other jobs, CPU time per request moves far less than requests/s. Each source tree given
(`PYTHONPATH` of its servers: e.g. this branch's `src` and an exported copy of main's) gets its
own pair of servers; rounds alternate between them; medians are printed with the ratios f/d
(= requests/s ratio for a CPU-bound process).

    .venv/bin/python bench/filter_cpu.py src /tmp/main/src     # ROUNDS=3 SECS=6 ONLY=123 by default
"""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as g  # noqa: E402
from workers_cpu import cpu_seconds  # noqa: E402

PY = sys.executable


def run_wrk(url, secs, script=None):
    lua = ["-s", script] if script else []
    out = subprocess.run(
        ["taskset", "-c", "0", "wrk", "-t1", "-c8", f"-d{secs}s", *lua, url], capture_output=True, text=True, check=True
    ).stdout
    n = int(re.search(r"(\d+) requests in", out).group(1))
    assert "Non-2xx" not in out, out
    return n


work = Path(tempfile.mkdtemp(prefix="filt-cpu-"))
work.chmod(0o755)
up, ngx = g.free_port(), g.free_port()
(work / "nginx.conf").write_text(g.NGINX.format(dir=work, up=up, px=ngx))
(work / "100k.json").write_bytes(g.sample_json(100 * 1024))
(work / "1k.json").write_bytes(g.sample_json(1024))
mix = g.write_mix(work)
procs = [subprocess.Popen(["taskset", "-c", "0", "/usr/sbin/nginx", "-c", str(work / "nginx.conf"), "-p", str(work)])]
only = os.environ.get("ONLY", "123")  # which of 1, 2, 3
rounds = int(os.environ.get("ROUNDS", "3"))
secs = int(os.environ.get("SECS", "6"))
try:
    servers = {}
    trees = [str(Path(t).resolve()) for t in sys.argv[1:]] or [str(Path(__file__).resolve().parent.parent / "src")]
    for i, tree in enumerate(trees):
        for kind, pol in (("d", {}), ("f", {"response_filter": {}})):
            port = g.free_port()
            (work / f"{kind}{i}.yaml").write_text(g.pass_through(port, up, **pol))
            env = dict(os.environ, PYTHONPATH=tree)
            p = subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    "1",
                    *g.SERVE,
                    "--config",
                    str(work / f"{kind}{i}.yaml"),
                ],
                env=env,
            )
            procs.append(p)
            servers[(i, kind)] = (p, port)
    for _, port in servers.values():
        g.wait_port(port)
    res = {}
    for r in range(rounds):
        for i in range(len(trees)):
            for kind in ("d", "f"):
                p, port = servers[(i, kind)]
                for label, path, script in (("2", "/json100k", None), ("3", "/clean100k", mix), ("1", "/json1k", None)):
                    if label not in only:
                        continue
                    if r == 0:
                        run_wrk(f"http://127.0.0.1:{port}{path}", 1, script)
                    c0 = cpu_seconds(p.pid)
                    n = run_wrk(f"http://127.0.0.1:{port}{path}", secs, script)
                    c1 = cpu_seconds(p.pid)
                    res.setdefault((i, kind + label), []).append((c1 - c0) / n * 1e6)
    for i, tree in enumerate(trees):
        med = {k: sorted(v)[len(v) // 2] for (j, k), v in res.items() if j == i}
        print(f"tree {tree}: CPU us/request median of {rounds}:", {k: round(v) for k, v in sorted(med.items())})
        for n in only:
            print(f"  f{n}/d{n} = {med['d' + n] / med['f' + n]:.2f}  ({med['d' + n]:.0f} / {med['f' + n]:.0f} us)")
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(10)
