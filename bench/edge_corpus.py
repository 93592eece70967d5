"""bench/edge_corpus: one seeded corpus of raw HTTP/1.1 requests (the classes of issue 15: path
encodings, dot segments, `;`, case, trailing dots/spaces, Unicode, backslashes, rewrite/override
headers, duplicate credentials, folded headers, control characters, chunked bodies, CL/TE
conflicts) sent over raw sockets to

  (a) nginx configured the usual way: `location /admin { deny all; }`, everything else
      `proxy_pass`ed to the recording upstream, and
  (b) `bastion serve` with the equivalent config (/admin refused by an ip_rules policy),

both in front of the same recording upstream (tests/integration/edge/recorder.py). For each it
prints how many requests reached the upstream with a path a lenient server (case-insensitive,
`;`-stripping, double-decoding, trailing-dot/space-stripping, `\\` as `/`) reads as /admin, how
many 5xx, how many forwarded a control character, and the other invariants of the fuzzer.

    PYTHONPATH=$PWD/src .venv/bin/python bench/edge_corpus.py [--seed 15] [--n 300] [--show 2]

Needs nginx (apt-get install nginx-light); it runs as a non-daemon on a loopback port with a
temporary prefix, never as a system service.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import yaml  # noqa: E402
from gateway import free_port, wait_port  # noqa: E402  (bench/gateway.py)

from tests.integration.edge.conftest import API_KEY, gateway_config, good_claims, hs256, send_raw  # noqa: E402
from tests.integration.edge.corpus import corpus, named_cases  # noqa: E402
from tests.integration.edge.invariants import violations  # noqa: E402
from tests.integration.edge.recorder import Recorder, lenient_route  # noqa: E402

PREFIXES = {"admin": "admin", "public": "public", "": "default"}

NGINX = """
worker_processes 1; daemon off; pid {dir}/nginx.pid; error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location /admin {{ deny all; }}
    location /public {{ proxy_pass http://127.0.0.1:{public}; proxy_http_version 1.1;
                       proxy_set_header Connection ""; proxy_set_header X-Forwarded-For $remote_addr; }}
    location / {{ proxy_pass http://127.0.0.1:{default}; proxy_http_version 1.1;
                 proxy_set_header Connection ""; proxy_set_header X-Forwarded-For $remote_addr; }}
  }}
}}
"""


def run_corpus(port, recorder, route_of_port, reqs) -> tuple[Counter, dict[str, list[bytes]]]:
    counts: Counter = Counter()
    examples: dict[str, list[bytes]] = defaultdict(list)
    for data, credentials in reqs:
        recorder.take(0)
        status, _ = send_raw(port, data, data.split(b" ", 1)[0].decode("latin-1"), timeout=2.0)
        records = recorder.take()
        counts["sent"] += 1
        counts["no answer"] += status is None
        counts["reached upstream"] += bool(records)
        found = {name for name, _ in violations(status, records, route_of_port, PREFIXES, credentials, protected=())}
        if any(lenient_route(r.target, PREFIXES) == "admin" for r in records):
            found.add("reached as /admin (lenient)")
        if any(lenient_route(r.target, PREFIXES, extended=True) == "admin" for r in records):
            found.add("reached as /admin (extended)")
        if status is not None and 400 <= status < 500:
            found.add("answered 4xx")
        for name in found:
            counts[name] += 1
            examples[name].append(data)
    return counts, examples


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--show", type=int, default=0, help="print this many shortest examples per class")
    args = ap.parse_args()
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx_bin):
        sys.exit("nginx is needed: apt-get install nginx-light")
    token = hs256(good_claims(exp=4_102_444_800))
    parts = {
        "named": list(named_cases(token, API_KEY).values()),
        "random": [(r.render(), r.credentials) for r in corpus(args.seed, args.n, token, API_KEY)],
    }
    results: dict[tuple[str, str], tuple[Counter, dict]] = {}
    with Recorder(3) as recorder, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ports = dict(zip(PREFIXES.values(), recorder.ports, strict=False))
        route_of_port = {p: n for n, p in ports.items()}
        ngx_port, gw_port = free_port(), free_port()
        (work / "nginx.conf").write_text(NGINX.format(dir=work, port=ngx_port, **ports))
        cfg = gateway_config(ports)
        cfg["routes"] = [r for r in cfg["routes"] if r["upstream"] != "account"]
        cfg["listeners"] = [{"host": "127.0.0.1", "port": gw_port}]
        (work / "bastion.yaml").write_text(yaml.safe_dump(cfg))
        procs = [
            subprocess.Popen([nginx_bin, "-c", str(work / "nginx.conf"), "-p", str(work)]),
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bastion.cli",
                    "serve",
                    "--workers",
                    "1",
                    "--no-watch",
                    "-c",
                    str(work / "bastion.yaml"),
                    "--log-level",
                    "error",
                ],
                stderr=(work / "bastion.log").open("w"),
            ),
        ]
        try:
            wait_port(ngx_port, timeout=20)
            wait_port(gw_port, timeout=20)
            for part, reqs in parts.items():
                results[("nginx", part)] = run_corpus(ngx_port, recorder, route_of_port, reqs)
                results[("bastion", part)] = run_corpus(gw_port, recorder, route_of_port, reqs)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM if p is procs[1] else signal.SIGQUIT)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
    rows = [
        "reached as /admin (lenient)",
        "reached as /admin (extended)",
        "5xx",
        "control-char",
        "rewrite-header",
        "rewrite-header-extended",
        "forwarding-header-injection",
        "one-upstream-request",
        "two-credentials-forwarded",
        "fold-or-malformed",
        "spoofed-principal",
        "lenient-route-differs",
        "lenient-route-differs-extended",
        "refused-route-reached",
        "answered 4xx",
        "reached upstream",
        "no answer",
    ]
    print(
        f"# edge corpus {datetime.date.today().isoformat()}: {len(parts['named'])} named cases (one class each) "
        f"+ {args.n} random requests (seed {args.seed}); nginx = location /admin {{ deny all; }}, "
        f"bastion = ip_rules on /admin/*"
    )
    names = list(results)
    print(f"{'':32}" + "".join(f"{g + ' ' + p:>15}" for g, p in names))
    for row in rows:
        print(f"{row:32}" + "".join(f"{results[n][0][row]:>15}" for n in names))
    print(f"{'requests sent':32}" + "".join(f"{results[n][0]['sent']:>15}" for n in names))
    if args.show:
        for n in names:
            print(f"\n## {' '.join(n)}")
            for row in rows[:-3]:
                for ex in sorted(results[n][1].get(row, []), key=len)[: args.show]:
                    print(f"{row}: {ex!r}")


if __name__ == "__main__":
    main()
