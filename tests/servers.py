"""Real servers for tests, each on 127.0.0.1 and a free port, in a thread: a WSGI app on
Werkzeug's server, an ASGI app on uvicorn with TLS. (Plain ASGI: `helpers.ThreadedUvicorn`.)"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers import STARTUP_SECONDS


@contextlib.contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """A WSGI app (Flask, ...) on Werkzeug's threaded server; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@contextlib.contextmanager
def serve_tls(app: Any, files: dict[str, Path], host: str = "localhost") -> Iterator[str]:
    """An ASGI app on uvicorn with the certificate and key of `files` (`bastion.certs`);
    yields `https://{host}:{port}`."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        ssl_certfile=str(files["cert"]),
        ssl_keyfile=str(files["key"]),
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    thread = threading.Thread(target=lambda: asyncio.run(server.serve([sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the TLS server did not start")
        time.sleep(0.01)
    try:
        yield f"https://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
