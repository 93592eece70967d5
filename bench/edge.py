"""bench/edge: what the connection limits (gateway/edge.py) cost, and what a slowloris costs.

In one run, wrk against three bastion pass-through gateways in front of nginx `return 200`:

  p  plain:  uvicorn's httptools protocol, no edge limits (the baseline)
  e  edge:   the protocol `bastion serve` uses (head deadline, caps, header limits)
  a  attack: e, while 2,000 connections from 8 other loopback addresses (250 each, under the
             per-address cap) send half a header line and then a byte a second, reconnecting
             when closed

and prints rps, p50, p99 and the ratios e/p (the limits' cost) and a/e (service under attack).

    .venv/bin/python bench/edge.py [--duration 5] [--rounds 3] [--connections 50] [--slow 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateway import NGINX, PY, free_port, pass_through, pinned, wait_port, wrk  # noqa: E402

HALF = b"GET /users/1 HTTP/1.1\r\nHost: bench\r\nX-Slow: "


def serve_plain(config: str) -> None:
    """Run `GatewayServer` with uvicorn's own protocol instead of the edge one (the baseline)."""
    import uvloop

    from bastion.gateway import server
    from bastion.gateway.edge import ConnectionGate
    from bastion.gateway.tls import TlsHttpToolsProtocol

    server.protocol_for = lambda limits, name="", server="": type(
        name or "Plain",
        (TlsHttpToolsProtocol,),  # type: ignore
        {"gate": ConnectionGate(limits)},
    )
    uvloop.run(server.GatewayServer(config, watch=False).serve())  # as `bastion serve` does


class Slowloris:
    """`count` trickling connections, kept at that number until stopped."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.stop = threading.Event()
        self.reconnects = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def open(self, i: int) -> socket.socket | None:
        s = socket.socket()
        try:
            s.bind((f"127.0.0.{2 + i % 8}", 0))
            s.connect(("127.0.0.1", self.port))
            s.setblocking(False)
            s.send(HALF)
            return s
        except OSError:
            s.close()
            return None

    def run(self) -> None:
        socks: list[socket.socket | None] = [self.open(i) for i in range(self.count)]
        while not self.stop.wait(1.0):
            for i, s in enumerate(socks):
                alive = s is not None
                if s is not None:
                    try:
                        if s.recv(4096) == b"":
                            alive = False
                    except BlockingIOError:
                        pass
                    except OSError:
                        alive = False
                    if alive:
                        with contextlib.suppress(OSError):
                            s.send(b"a")
                if not alive:
                    if s is not None:
                        s.close()
                    socks[i] = self.open(i)
                    self.reconnects += 1
        for s in socks:
            if s is not None:
                s.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--slow", type=int, default=2000)
    ap.add_argument("--serve-plain", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_plain:
        serve_plain(args.serve_plain)
        return
    work = Path(tempfile.mkdtemp(prefix="bastion-bench-edge-"))
    work.chmod(0o755)
    up, ngx, p_port, e_port = (free_port() for _ in range(4))
    (work / "nginx.conf").write_text(NGINX.format(dir=work, up=up, px=ngx))
    (work / "plain.yaml").write_text(pass_through(p_port, up))
    (work / "edge.yaml").write_text(pass_through(e_port, up))
    srv = pinned("1")
    procs = [subprocess.Popen([*srv, "/usr/sbin/nginx", "-c", str(work / "nginx.conf"), "-p", str(work)])]
    try:
        procs.append(subprocess.Popen([*srv, PY, __file__, "--serve-plain", str(work / "plain.yaml")]))
        procs.append(
            subprocess.Popen(
                [
                    *srv,
                    PY,
                    "-m",
                    "bastion.cli",
                    "serve",
                    "--workers",
                    "1",
                    "--no-watch",
                    "--log-level",
                    "error",
                    "--config",
                    str(work / "edge.yaml"),
                ]
            )
        )
        for port in (up, p_port, e_port):
            wait_port(port)
        url = "http://127.0.0.1:{}/users/1"
        samples: dict[str, list[tuple[float, float, float]]] = {"p": [], "e": [], "a": []}
        for port in (p_port, e_port):
            wrk(url.format(port), 2, args.connections)  # warm-up
        attacker_reconnects = 0
        for _ in range(args.rounds):
            samples["p"].append(wrk(url.format(p_port), args.duration, args.connections))
            samples["e"].append(wrk(url.format(e_port), args.duration, args.connections))
            attack = Slowloris(e_port, args.slow)
            attack.thread.start()
            time.sleep(1.0)
            samples["a"].append(wrk(url.format(e_port), args.duration, args.connections))
            attack.stop.set()
            attack.thread.join()
            attacker_reconnects += attack.reconnects
        print(
            f"wrk -t1 -c{args.connections} -d{args.duration}s GET /users/1, bastion pass-through in front of "
            f"nginx; median of {args.rounds} alternating rounds; wrk on core 0, servers on core 1"
        )
        med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in samples.items()}
        labels = {
            "p": "p plain uvicorn protocol (baseline)",
            "e": "e edge protocol (bastion serve)",
            "a": f"a e with {args.slow} slowloris connections held",
        }
        for k, (rps, p50, p99) in med.items():
            print(f"  {labels[k]:<48} {rps:>9.0f} rps  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
        print(
            f"  e/p = {med['e'][0] / med['p'][0]:.3f}   a/e = {med['a'][0] / med['e'][0]:.3f}   "
            f"(slowloris reconnects after the head deadline: {attacker_reconnects})"
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)


if __name__ == "__main__":
    main()
