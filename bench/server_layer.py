"""bench/server_layer: CPU time per request of the server layer alone (the listener's protocol,
uvicorn's cycle, the ASGI messages), without sockets, the gateway or an upstream.

One listener protocol (`--server native`: `NativeProtocol`, or `uvicorn`: `EdgeProtocol`) on a transport that only collects what is written; each request's bytes are
fed to `data_received` and the loop runs until the answer is out. The app answers like the
gateway's relay does (a start message with `--response-headers` headers, one body message, the
empty last one). CPU time of the process (`time.process_time`), so another job on the machine
does not change it much; median of `--rounds`.

    .venv/bin/python bench/server_layer.py [--requests 20000] [--headers 0] [--response-headers 8]

On a loaded machine, count instructions instead (deterministic): run it under
`PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null` with `--rounds 1
--requests 200` and with `--requests 2200`; the difference of the two "Collected" totals divided
by 2000 is the instructions per request, start-up cancelled out (docs/architecture.md, session 5).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import uvicorn
import uvloop
from uvicorn.server import ServerState

from bastion.gateway.edge import EdgeLimits, protocol_for


class Sink:
    """The transport: collects nothing, counts the answers."""

    def __init__(self) -> None:
        self.answers = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.answers += data.count(b"HTTP/1.1 200")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


def make_app(n_headers: int) -> Any:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"34")]
    headers += [(f"x-response-{i}".encode(), b"some-value-%d" % i) for i in range(max(0, n_headers - 2))]
    body = b'{"id":1,"name":"alice","ok":true}\n'

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def run(requests: int, request: bytes, app: Any, server: str = "native") -> float:
    loop = asyncio.get_running_loop()
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=False,
        proxy_headers=False,
    )
    config.load()
    proto_cls = protocol_for(EdgeLimits(), server=server)
    sink = Sink()
    proto = proto_cls(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    proto.connection_made(sink)  # type: ignore[arg-type]
    start = time.process_time()
    for _ in range(requests):
        proto.data_received(request)
        while proto.cycle is not None and not proto.cycle.response_complete:
            await asyncio.sleep(0)
    await asyncio.sleep(0)
    used = time.process_time() - start
    assert sink.answers == requests, (sink.answers, requests)
    proto.connection_lost(None)
    return used / requests * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--headers", type=int, default=0, help="extra request headers")
    ap.add_argument("--response-headers", type=int, default=8)
    ap.add_argument(
        "--server",
        choices=("native", "uvicorn"),
        default="native",
        help="the listener's protocol (ListenerConfig.server)",
    )
    args = ap.parse_args()
    extra = b"".join(b"x-extra-%d: value-%d-abcdefghijklmnop\r\n" % (i, i) for i in range(args.headers))
    request = (
        b"GET /users/1?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n" + extra + b"\r\n"
    )
    app = make_app(args.response_headers)
    results = [uvloop.run(run(args.requests, request, app, args.server)) for _ in range(args.rounds)]
    print(
        f"server layer ({args.server}): {statistics.median(results):.2f} µs/request (median of {args.rounds}; "
        f"{args.headers} extra request headers, {args.response_headers} response headers) "
        + " ".join(f"{r:.2f}" for r in results)
    )


if __name__ == "__main__":
    main()
