"""Running the gateway: one uvicorn server per listener in one event loop, reload on SIGHUP
and on file change (validated first; a bad config leaves the old one serving)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

from bastion.config.loader import ConfigError, load_config
from bastion.config.model import AdminConfig, GatewayConfig, ListenerConfig
from bastion.gateway.app import Gateway
from bastion.gateway.edge import EDGE_COLLECTOR, ConnectionGate, EdgeLimits, protocol_for
from bastion.gateway.state import compile_state
from bastion.observability import note_certificate

log = logging.getLogger("bastion.server")


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: the gateway owns the signals.

    With TLS, `startup` is uvicorn's own for pre-bound sockets plus `ssl_handshake_timeout`:
    uvicorn leaves asyncio's 60 s default, and a client that opens TCP and never finishes the
    handshake is not seen by the protocol (nor its caps and header deadline) until it does."""

    handshake_timeout: float | None = None

    @contextlib.contextmanager
    def capture_signals(self):
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config
        if sockets is None or config.ssl is None or self.handshake_timeout is None:
            await super().startup(sockets=sockets)
            return
        await self.lifespan.startup()

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        loop = asyncio.get_running_loop()
        self.servers = [
            await loop.create_server(
                create_protocol,
                sock=sock,
                ssl=config.ssl,
                backlog=config.backlog,
                ssl_handshake_timeout=self.handshake_timeout,
            )
            for sock in sockets
        ]
        self.started = True


def build_state(path: str, version: int, config_dir: str | None = None, source: str | None = None):
    """The compiled config at `path`; relative paths in it resolve against `config_dir` (default:
    the file's directory; a worker reads its supervisor's copy of the file, elsewhere)."""
    cfg = load_config(path)
    config_dir = config_dir or os.path.dirname(os.path.abspath(path)) or "."
    return compile_state(cfg, config_dir=config_dir, version=version, source=source or path)


def _bind(listener: ListenerConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((listener.host, listener.port))
    sock.set_inheritable(True)
    return sock


MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"  # TLS 1.2 suites; TLS 1.3 has only modern ones


def _tls_files(listener: ListenerConfig, config_dir: str) -> tuple[str, str]:
    assert listener.tls is not None

    def rel(p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(config_dir, p)

    return rel(listener.tls.cert), rel(listener.tls.key)


def raise_open_file_limit(cap: int = 1 << 20) -> int:
    """Raise the soft open-file limit to the hard one (as Go and nginx's worker_rlimit_nofile do):
    every client and upstream connection is a file descriptor. Returns the soft limit in force."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix
        return 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return cap if soft == resource.RLIM_INFINITY else soft


def edge_limits(listener: ListenerConfig, open_files: int, listeners: int) -> EdgeLimits:
    """The listener's connection limits; `max_connections` unset means half the open-file limit,
    shared between the listeners (the other half is for upstream connections, logs and files)."""
    auto = max(16, open_files // 2 // max(1, listeners))
    return EdgeLimits(
        header_timeout=listener.client_header_timeout,
        keepalive_timeout=listener.keepalive_timeout,
        send_timeout=listener.client_send_timeout,
        max_connections=listener.max_connections or auto,
        max_per_client=listener.max_connections_per_ip,
        max_header_count=listener.max_header_count,
        max_header_bytes=listener.max_header_bytes,
    )


def _uvicorn_config(
    app: Any, listener: ListenerConfig, config_dir: str, protocol: type[Any] | None = None
) -> uvicorn.Config:
    kwargs: dict[str, Any] = {}
    if listener.tls:
        cert, key = _tls_files(listener, config_dir)
        kwargs.update(
            ssl_certfile=cert, ssl_keyfile=key, ssl_version=ssl.PROTOCOL_TLS_SERVER, ssl_ciphers=MODERN_CIPHERS
        )
        note_certificate(f"{listener.host}:{listener.port}", cert)
    if protocol is None:
        protocol = protocol_for(edge_limits(listener, raise_open_file_limit(), 1), server=listener.server)

    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        date_header=False,
        http=protocol,
        ws="websockets-sansio",  # WebSocket upgrades: gateway/websocket.py (per-route limits there)
        ws_max_size=16 * 1024 * 1024,
        loop="uvloop",
        timeout_keep_alive=listener.keepalive_timeout,  # type: ignore[arg-type]  # used as a float
        timeout_graceful_shutdown=10,
        **kwargs,
    )
    if listener.tls:
        config.load()
        assert config.ssl is not None
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.0 and 1.1 are refused
        if listener.tls.client_ca:
            ca = listener.tls.client_ca
            config.ssl.load_verify_locations(ca if os.path.isabs(ca) else os.path.join(config_dir, ca))
            config.ssl.verify_mode = ssl.CERT_REQUIRED if listener.tls.client_auth == "required" else ssl.CERT_OPTIONAL
    return config


# The cyclic GC's youngest generation is collected when allocations of tracked objects exceed
# deallocations by this many (CPython's default: 700). A serving process's request objects die
# by reference counting; what the count measures is mostly the requests in flight (50 of them
# hold a few thousand containers), so at 700 the collector ran every ~15 requests and walked
# those live objects each time: 3.0 % of the process's CPU under wrk for pass-through, 2.2 % with
# every policy on (bench/gc_share.py, session 8), none at 20,000 (no collection in 5 s of load).
# Garbage cycles are still collected, after 20,000 net allocations instead of 700 (a few MB).
GC_YOUNG_THRESHOLD = 20_000


def freeze_heap() -> None:
    """Collect once, then move every object alive at startup (modules, config, compiled
    policies, CRS rules: ~90,000 objects) out of the cyclic GC's reach (`gc.freeze`, as
    Instagram's Django servers do). Measured with gc.callbacks under wrk, every policy on: the
    collector took 12.6 % of the process's CPU time serving requests, each full collection
    walking those long-lived objects again; half that once they are frozen. A reload thaws
    everything (`thaw_after_reload`) so the replaced config can be collected. Also raises the
    youngest generation's threshold (`GC_YOUNG_THRESHOLD`)."""
    gc.collect()
    gc.freeze()
    young, older, oldest = gc.get_threshold()
    if young:  # (0: automatic collection turned off by the embedder; left so)
        gc.set_threshold(max(GC_YOUNG_THRESHOLD, young), older, oldest)


def thaw_after_reload(retired_inflight: bool) -> None:
    """After a reload, when the heap was frozen: unfreeze, so the replaced state (frozen at
    startup, possibly holding reference cycles) can be collected; freeze again at once when it
    is already released, else leave the heap collectable (as before `freeze_heap`)."""
    if gc.get_freeze_count():
        gc.unfreeze()
        if not retired_inflight:
            freeze_heap()


def file_stat(path: str) -> tuple[int, int, int] | None:
    """What tells a changed config file (a rename over it included), or None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def build_for_reload(build: Callable[[int], Any], version: int, running: GatewayConfig, why: str) -> Any:
    """The state a reload would run, or None (logged) when the file is refused; the running
    config stays. Shared by the single process and the workers' supervisor."""
    try:
        state = build(version)
    except ConfigError as exc:
        log.error("reload (%s) refused, the running config stays:\n%s", why, exc)
        return None
    except Exception as exc:  # a config that validates but cannot be built
        log.error("reload (%s) refused, the running config stays: %s", why, exc)
        return None
    if [lst.model_dump() for lst in state.config.listeners] != [lst.model_dump() for lst in running.listeners]:
        log.warning("listener changes take effect on restart; routes and policies reloaded")
    return state


@dataclass
class WorkerSockets:
    """What a worker process gets from its supervisor (gateway/workers.py): the listeners' sockets,
    bound and listening, in config order; a private admin socket (the supervisor gathers metrics
    and the dashboard's data there, with `admin_token`); the config version to start at. The
    config file the worker reads is the supervisor's validated copy; `config_dir` and `source`
    are the user's file's."""

    listeners: list[socket.socket]
    admin: socket.socket
    admin_token: str
    version: int
    config_dir: str
    source: str


class GatewayServer:
    """The gateway, its listeners and its reload machinery."""

    def __init__(
        self,
        config_path: str,
        *,
        watch: bool = True,
        on_ready: Callable[[list[tuple[str, int]]], None] | None = None,
        worker: WorkerSockets | None = None,
    ) -> None:
        self.path = config_path
        self.watch = watch
        self.on_ready = on_ready
        self.worker = worker  # set: one of `bastion serve --workers N`'s processes (gateway/workers.py)
        self.version = worker.version if worker else 1
        self.config_dir = worker.config_dir if worker else os.path.dirname(os.path.abspath(config_path))
        state = self._build(self.version)  # raises ConfigError: never half-started
        self.config: GatewayConfig = state.config
        timeout = min((lst.client_body_timeout for lst in state.config.listeners), default=30.0)
        self.gateway = Gateway(state, client_body_timeout=timeout)
        self.servers: list[_Server] = []
        self.gates: list[ConnectionGate] = []  # one per listener (then the admin one), in order
        self.reloads = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.admin_port: int | None = None
        self._stop: asyncio.Event | None = None
        self._stat = self._file_stat()

    def _build(self, version: int):
        return build_state(self.path, version, self.config_dir, self.worker.source if self.worker else None)

    def _file_stat(self) -> tuple[int, int, int] | None:
        return file_stat(self.path)

    async def reload(self, why: str) -> bool:
        state = build_for_reload(self._build, self.version + 1, self.config, why)
        if state is None:
            return False
        self.version += 1
        self.reloads += 1
        await self.gateway.swap(state)
        thaw_after_reload(bool(self.gateway._retired))
        log.info("config reloaded (%s), version %d", why, self.version)
        return True

    def _reload_certificates(self) -> None:
        """Renewed certificates take effect for new handshakes without a restart."""
        config_dir = self.config_dir
        for server, listener in zip(self.servers, self.config.listeners, strict=False):
            if listener.tls is None or server.config.ssl is None:
                continue
            cert, key = _tls_files(listener, config_dir)
            try:
                server.config.ssl.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as exc:
                log.error("certificate %s could not be reloaded (%s); the old one stays", cert, exc)
            else:
                note_certificate(f"{listener.host}:{listener.port}", cert)
                log.info("certificate %s reloaded", cert)

    async def _watch_file(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            stat = self._file_stat()
            if stat is not None and stat != self._stat:
                self._stat = stat
                await self.reload("file changed")

    def stop(self) -> None:
        """Ask a running `serve()` to finish (safe from another thread)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def serve(self, *, install_signals: bool = True) -> None:
        loop = self._loop = asyncio.get_running_loop()
        stop = self._stop = asyncio.Event()
        config_dir = self.config_dir
        sockets = []
        open_files = raise_open_file_limit()
        count = len(self.config.listeners) + (self.worker is not None or self.config.admin is not None)
        for i, listener in enumerate(self.config.listeners):
            sock = self.worker.listeners[i] if self.worker else _bind(listener)
            sockets.append(sock)
            protocol = protocol_for(edge_limits(listener, open_files, count), server=listener.server)
            self.gates.append(protocol.gate)
            server = _Server(_uvicorn_config(self.gateway, listener, config_dir, protocol))
            server.handshake_timeout = listener.client_header_timeout
            self.servers.append(server)

        def on_hup() -> None:
            self._reload_certificates()
            self._stat = self._file_stat()
            loop.create_task(self.reload("SIGHUP"))

        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            loop.add_signal_handler(signal.SIGHUP, on_hup)
        admin_token = self.worker.admin_token if self.worker else self.config.admin.token if self.config.admin else None
        if self.worker or self.config.admin is not None:
            from bastion.gateway.admin import AdminApp

            admin = self.config.admin or AdminConfig()
            admin_listener = ListenerConfig(host=admin.host, port=admin.port)
            sock = self.worker.admin if self.worker else _bind(admin_listener)
            sockets.append(sock)
            protocol = protocol_for(edge_limits(admin_listener, open_files, count), "AdminEdgeProtocol")
            self.gates.append(protocol.gate)
            self.servers.append(
                _Server(
                    uvicorn.Config(
                        AdminApp(self, admin_token),
                        lifespan="off",
                        log_config=None,
                        access_log=False,
                        server_header=False,
                        http=protocol,
                        loop="uvloop",
                        timeout_keep_alive=admin_listener.keepalive_timeout,  # type: ignore[arg-type]  # a float works
                    )
                )
            )
        held = sum(gate.limits.max_connections for gate in self.gates)
        if held > open_files * 0.9:
            log.warning(
                "the listeners may hold %d connections but the process may open only %d files (ulimit -n): "
                "lower max_connections or raise the limit, or connections will fail with EMFILE "
                "before the caps refuse them",
                held,
                open_files,
            )
        if install_signals:  # the process is the gateway's own (the CLI), not a test's or an embedder's
            freeze_heap()  # before listening: the full collection must not hold up a first request
        tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock in zip(self.servers, sockets, strict=False)]
        while not all(s.started for s in self.servers):
            if any(t.done() for t in tasks):
                for t in tasks:
                    if t.done() and t.exception():
                        raise t.exception()  # type: ignore[misc]
                raise RuntimeError("a listener failed to start")
            await asyncio.sleep(0.01)
        bound = [sock.getsockname()[:2] if sock.family != socket.AF_UNIX else ("unix", 0) for sock in sockets]
        for (host, port), listener, gate in zip(bound, self.config.listeners, self.gates, strict=False):
            scheme = "https" if listener.tls else "http"
            limits = gate.limits
            log.info(
                "listening on %s://%s:%d (at most %d connections, %s per client address; head within %gs)",
                scheme,
                host if ":" not in host else f"[{host}]",
                port,
                limits.max_connections,
                limits.max_per_client or "any number",
                limits.header_timeout,
            )
        for (host, port), gate in zip(bound, self.gates, strict=False):
            gate.name = f"{host if ':' not in host else f'[{host}]'}:{port}"
        EDGE_COLLECTOR.gates = lambda: self.gates  # the latest server's (one per process in production)
        if self.config.admin is not None and not self.worker:
            host, port = bound[-1]
            self.admin_port = port
            log.info("admin listening on http://%s:%d", host if ":" not in host else f"[{host}]", port)
        if self.on_ready:
            self.on_ready(bound)
        watcher = asyncio.create_task(self._watch_file()) if self.watch else None
        await stop.wait()
        log.info("shutting down: finishing in-flight requests")
        for s in self.servers:
            s.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        if watcher:
            watcher.cancel()
        await self.gateway.aclose()
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
