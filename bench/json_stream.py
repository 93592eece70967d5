"""bench/json_stream: the response filter's throughput and memory (issue 22).

Throughput (MB/s, one core) on the same JSON body, measured in one run:
  - orjson loads + dumps (the baseline: what a whole-body filter costs at least)
  - the whole-body filter (`ResponseFilter.rewrite_whole`: orjson + tree walk), used up to max_bytes
  - the streaming filter (`bastion.json_stream.JsonRewriter`, fed 64 KB chunks), used beyond
  - ijson (C backend yajl2_c) events only, and an ijson-based rewrite (events -> JSON text),
    the alternative the stream was measured against
Memory: tracemalloc peak while the streaming filter consumes a 2 MB and a 20 MB answer (the peak
must not grow with the size), peak-RSS growth while it consumes 100 MB generated chunk by chunk,
and (with --gateway) the peak RSS of a `bastion serve` process passing a 100 MB answer
from a real upstream to a real client, beside its RSS when idle.

    .venv/bin/python bench/json_stream.py [--mb 10] [--gateway] [--no-ijson]
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import orjson
from gateway import free_port, wait_port  # bench/gateway.py

from bastion.json_stream import JsonRewriter
from bastion.pipeline import PolicyEnv
from bastion.policies.response_filter import ResponseFilter, ResponseFilterConfig

CHUNK = 64 * 1024


def record(i: int) -> bytes:
    """The record of bench/gateway.py's sample (users with a password_hash to remove)."""
    return (
        b'{"id":%d,"name":"user%d","email":"u%d@example.com","password_hash":"$argon2id$v=19$m=65536",'
        b'"profile":{"bio":"hello","tags":["a","b"]}}' % (i, i, i)
    )


def chunks(size: int) -> Iterator[bytes]:
    """A `{"users": [...]}` document of about `size` bytes, produced in CHUNK pieces."""
    yield b'{"users":['
    out, total, i = [], 0, 0
    while total < size:
        r = (b"," if i else b"") + record(i)
        out.append(r)
        total += len(r)
        i += 1
        if sum(map(len, out)) >= CHUNK:
            yield b"".join(out)
            out = []
    yield b"".join(out) + b"]}"


def policy() -> ResponseFilter:
    return ResponseFilter(ResponseFilterConfig(), PolicyEnv())


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def ijson_rewrite(body: bytes, names: frozenset[str]) -> bytes:
    """A rewrite on ijson events: what an ijson-based filter must do (names only, no values)."""
    import ijson

    out: list[bytes] = []
    first = [True]
    skip = 0
    pending_key = None
    dumps = orjson.dumps
    for event, value in ijson.basic_parse(body, use_float=True):
        if skip:
            if event in ("start_map", "start_array"):
                skip += 1
            elif event in ("end_map", "end_array"):
                skip -= 1
            continue
        if event == "map_key":
            if value.lower() in names:
                pending_key = True
                continue
            out.append((b"" if first[-1] else b",") + dumps(value) + b":")
            first[-1] = True
            continue
        if pending_key:
            pending_key = None
            if event in ("start_map", "start_array"):
                skip = 1
            continue
        if event in ("start_map", "start_array"):
            out.append((b"" if first[-1] else b",") + (b"{" if event == "start_map" else b"["))
            first[-1] = False
            first.append(True)
        elif event in ("end_map", "end_array"):
            first.pop()
            out.append(b"}" if event == "end_map" else b"]")
        else:
            out.append((b"" if first[-1] else b",") + dumps(value))
            first[-1] = False
    return b"".join(out)


def stream_through(p: ResponseFilter, pieces) -> int:
    s = JsonRewriter(p, remove=True, mask="")
    n = 0
    for c in pieces:
        n += len(s.feed(c))
    return n + len(s.finish())


def throughput(mb: int, with_ijson: bool) -> None:
    body = b"".join(chunks(mb * 1024 * 1024))
    pieces = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]
    size = len(body) / 1e6
    p = policy()
    out = p.rewrite_whole(body)
    s = JsonRewriter(p, remove=True, mask="")
    streamed = s.feed(body) + s.finish()
    assert orjson.loads(out) == orjson.loads(streamed) and b"password" not in streamed
    rows = [
        ("orjson loads+dumps (baseline)", best(lambda: orjson.dumps(orjson.loads(body)))),
        ("whole-body filter (orjson + walk)", best(lambda: p.rewrite_whole(body))),
        ("streaming filter (64 KB chunks)", best(lambda: stream_through(p, pieces))),
    ]
    if with_ijson:
        import ijson

        assert ijson.backend == "yajl2_c", ijson.backend
        rows.append(
            ("ijson yajl2_c events only", best(lambda: sum(1 for _ in ijson.basic_parse(body, use_float=True)), 1))
        )
        rows.append(("ijson rewrite (events -> JSON)", best(lambda: ijson_rewrite(body, p.names), 1)))
    base = rows[0][1]
    print(f'body: {size:.1f} MB of {{"users": [...]}} records, password_hash in each')
    print(f"{'filter':38} {'MB/s':>8} {'vs orjson':>10}")
    for label, t in rows:
        print(f"{label:38} {size / t:8.1f} {base / t:10.2f}")


def memory(trace_mb: int) -> None:
    """Peak memory of the streaming filter: tracemalloc (exact Python allocations, but slow) on
    `trace_mb` and on a tenth of it (the peak must not grow with the body), and the process's
    peak RSS (VmHWM) growth while 100 MB stream through, generated chunk by chunk."""
    p = policy()
    for mb in (max(1, trace_mb // 10), trace_mb):
        tracemalloc.start()
        out = stream_through(p, chunks(mb * 1024 * 1024))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"streaming filter, {mb} MB answer ({out / 1e6:.0f} MB out): tracemalloc peak {peak / 1e6:.2f} MB")
    gc.collect()
    before = rss(os.getpid(), "VmHWM")
    t0 = time.perf_counter()
    out = stream_through(p, chunks(100 * 1024 * 1024))
    elapsed = time.perf_counter() - t0
    after = rss(os.getpid(), "VmHWM")
    print(
        f"streaming filter, 100 MB answer ({out / 1e6:.0f} MB out) in {elapsed:.1f} s "
        f"({100 * 1.048576 / elapsed:.1f} MB/s): peak RSS {before:.0f} MB before, {after:.0f} MB after"
    )


# ---- a real gateway passing a 100 MB answer -------------------------------------------------
def serve_upstream(port: int) -> None:
    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        for c in chunks(100 * 1024 * 1024):
            await send({"type": "http.response.body", "body": c, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def rss(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def gateway_rss() -> None:
    import yaml

    up, gw = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="bastion-jsonstream-"))
    (work / "g.yaml").write_text(
        yaml.safe_dump(
            {
                "listeners": [{"host": "127.0.0.1", "port": gw}],
                "upstreams": {"up": {"urls": [f"http://127.0.0.1:{up}"], "timeouts": {"read": 60, "total": 600}}},
                "policies": {"audit": {"enabled": False}, "response_filter": {}},
                "routes": [{"path": "/*", "upstream": "up"}],
            }
        )
    )
    procs = [
        subprocess.Popen([sys.executable, __file__, "--serve-upstream", str(up)]),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bastion.cli",
                "serve",
                "--workers",
                "1",
                "--no-watch",
                "--log-level",
                "warning",
                "--config",
                str(work / "g.yaml"),
            ]
        ),
    ]
    try:
        wait_port(up, timeout=20)
        wait_port(gw, timeout=20)
        conn = http.client.HTTPConnection("127.0.0.1", gw, timeout=600)
        conn.request("GET", "/small")  # warm up (imports, first connection)
        conn.getresponse().read(1024)
        conn.close()
        idle = rss(procs[1].pid, "VmRSS")
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", gw, timeout=600)
        conn.request("GET", "/big")
        resp = conn.getresponse()
        total, tail = 0, b""
        while True:
            piece = resp.read(1 << 20)
            if not piece:
                break
            total += len(piece)
            tail = (tail + piece)[-64:]
        elapsed = time.perf_counter() - t0
        peak = rss(procs[1].pid, "VmHWM")
        print(
            f"bastion serve, 100 MB JSON answer through response_filter: {total / 1e6:.0f} MB out in "
            f"{elapsed:.1f} s ({total / 1e6 / elapsed:.0f} MB/s end to end, status {resp.status}, "
            f"ends {tail[-2:]!r}); RSS idle {idle:.0f} MB, peak {peak:.0f} MB"
        )
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=10, help="body size for the throughput table")
    ap.add_argument("--no-ijson", action="store_true")
    ap.add_argument("--trace-mb", type=int, default=20, help="body size for the tracemalloc peak")
    ap.add_argument("--gateway", action="store_true", help="also: RSS of bastion serve passing 100 MB")
    ap.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    throughput(args.mb, not args.no_ijson)
    memory(args.trace_mb)
    if args.gateway:
        gateway_rss()


if __name__ == "__main__":
    main()
