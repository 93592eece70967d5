"""`bastion serve --workers N`: worker processes behind one set of listeners, and their supervisor.

The supervisor binds every listener once and the workers inherit the listening sockets (one
kernel accept queue per listener, shared), as gunicorn and `uvicorn --workers` do. Not
SO_REUSEPORT: with a socket per worker the kernel hashes each new connection to one worker's
queue, and while a dead worker is being replaced the connections hashed to it wait in its queue
(or are reset if nobody holds it); a shared queue is drained by the survivors at once. A shared
socket also works on every OS, makes `port: 0` one port for all, reports a bind error once, and
no other process of the same user can join the group. What it costs: the kernel does not balance
accepts as evenly as SO_REUSEPORT's hashing (idle workers race for each connection).

Each worker is a fresh interpreter (`python -m bastion.gateway.workers`, sockets passed as file
descriptors): nothing of the supervisor's event loop or clients is forked. A worker also gets a
private admin socket (a Unix socket in a 0700 directory, and a token only the supervisor knows):
the public admin listener is the supervisor's, and it asks every worker for its metrics, its
dashboard data and revocations there, and answers for the whole gateway (see `merge_metrics`).

Reload: SIGHUP, a file change or POST /admin/reload reaches the supervisor, which builds the new
config first; a bad one is refused there, once, and no worker is disturbed. A good one is
announced to every worker with SIGHUP (each rebuilds it, as a single process does). SIGTERM: every
worker stops accepting and finishes its in-flight requests (uvicorn's graceful shutdown), then
the supervisor exits. A worker that dies is replaced, after a delay that doubles with each quick
death (0.5 s … 30 s) so a crash loop does not spin the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Metric, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from bastion.config.lint import lint_workers
from bastion.config.loader import ConfigError, ConfigIssue, load_config_text
from bastion.config.model import GatewayConfig, ListenerConfig
from bastion.gateway.admin import AdminApp, _json_body, _reply
from bastion.gateway.edge import protocol_for
from bastion.gateway.server import (
    GatewayServer,
    WorkerSockets,
    _bind,
    _Server,
    build_for_reload,
    edge_limits,
    file_stat,
    raise_open_file_limit,
)
from bastion.gateway.state import compile_state
from bastion.http import problem

log = logging.getLogger("bastion.workers")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request to a worker's admin socket

QUICK_DEATH = 30.0  # a worker that dies sooner counts as a crash loop
MAX_BACKOFF = 30.0
DRAIN_SECONDS = 20.0  # uvicorn's graceful shutdown is 10 s; then SIGKILL


@dataclass
class Slot:
    index: int
    admin_path: str
    admin: socket.socket
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restarts: int = 0
    restart_at: float | None = None


@dataclass
class _State:
    """What `AdminApp` reads as `server.gateway.state`: the supervisor's validated config."""

    state: Any


class Supervisor:
    """Runs `count` worker processes of the gateway configured at `config_path`."""

    def __init__(
        self,
        config_path: str,
        count: int,
        *,
        watch: bool = True,
        on_ready: Callable[[list[tuple[str, int]]], None] | None = None,
    ) -> None:
        self.path = config_path
        self.count = count
        self.watch = watch
        self.on_ready = on_ready
        self.version = 1
        self.reloads = 0
        self.config_dir = os.path.dirname(os.path.abspath(config_path))
        self.rundir = tempfile.mkdtemp(prefix="bastion-workers-")  # mode 0700
        self.copy = os.path.join(self.rundir, "config.yaml")  # what the workers read: validated
        try:
            state = self._validate(self.version)  # raises ConfigError: never half-started
        except BaseException:
            shutil.rmtree(self.rundir, ignore_errors=True)
            raise
        self.config: GatewayConfig = state.config
        self.gateway = _State(state)
        self.token = secrets.token_urlsafe(32)
        self.slots: list[Slot] = []
        self.listeners: list[socket.socket] = []
        self.admin_port: int | None = None
        self._stat = file_stat(config_path)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.stopping = False

    def _validate(self, version: int) -> Any:
        """Read the user's file once, build it, and only if it builds, make it the copy the workers
        read (written aside, then renamed): a worker started or reloaded later gets exactly the
        config validated here, whatever happens to the file meanwhile."""
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(self.path, [ConfigIssue((), None, f"cannot read the config: {exc}")]) from None
        cfg = load_config_text(text, self.path)
        refused = [f for f in lint_workers(cfg, self.count) if f.severity == "error"]
        if refused:  # e.g. a reload that turns a store into `memory` under N workers
            raise ConfigError(self.path, [ConfigIssue((), None, f"{f.key}: {f.message}") for f in refused])
        state = compile_state(cfg, config_dir=self.config_dir, version=version, source=self.path)
        tmp = self.copy + ".new"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.copy)
        return state

    # --- processes -------------------------------------------------------------------------
    def _spawn(self, slot: Slot) -> None:
        fds = [s.fileno() for s in self.listeners] + [slot.admin.fileno()]
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        cmd = [
            sys.executable,
            "-m",
            "bastion.gateway.workers",
            self.copy,
            f"--config-dir={self.config_dir}",
            f"--source={self.path}",
            f"--slot={slot.index}",
            f"--fds={','.join(map(str, fds))}",
            f"--version={self.version}",
            f"--parent={os.getpid()}",
            f"--log-level={level}",
        ]
        env = dict(os.environ, BASTION_WORKER_TOKEN=self.token)
        slot.proc = subprocess.Popen(cmd, pass_fds=fds, env=env)
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info("worker %d started (pid %d)", slot.index, slot.proc.pid)

    def _reap(self) -> None:
        """Notice dead workers and schedule their replacement (backoff on quick deaths)."""
        now = time.monotonic()
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is not None:
                code = slot.proc.returncode
                lived = now - slot.started
                slot.failures = slot.failures + 1 if lived < QUICK_DEATH else 0
                delay = min(MAX_BACKOFF, 0.5 * 2 ** (slot.failures - 1)) if slot.failures else 0.1
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
                log.error(
                    "worker %d (pid %d) died (%s) after %.1fs; replaced in %.1fs",
                    slot.index,
                    slot.proc.pid,
                    how,
                    lived,
                    delay,
                )
                slot.proc = None
                slot.restart_at = now + delay
            stopping = self.stopping or (self._stop is not None and self._stop.is_set())
            if slot.proc is None and slot.restart_at is not None and now >= slot.restart_at and not stopping:
                slot.restarts += 1
                self._spawn(slot)

    async def _monitor(self) -> None:
        while not self.stopping:
            self._reap()
            await asyncio.sleep(0.2)

    def alive(self) -> list[Slot]:
        return [s for s in self.slots if s.proc is not None and s.proc.poll() is None]

    # --- reload ------------------------------------------------------------------------------
    async def reload(self, why: str) -> bool:
        """Validate the file here, once; only a good one is announced to the workers."""
        state = build_for_reload(self._validate, self.version + 1, self.config, why)
        if state is None:
            return False
        if state.config.workers != self.config.workers:
            log.warning("a new worker count takes effect on restart")
        old, self.gateway.state, self.config = self.gateway.state, state, state.config
        self.version += 1
        self.reloads += 1
        with contextlib.suppress(Exception):
            await old.close()
        for slot in self.alive():
            assert slot.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.proc.pid, signal.SIGHUP)
        log.info("config reloaded (%s), version %d, announced to %d worker(s)", why, self.version, len(self.alive()))
        return True

    async def _watch_file(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            stat = file_stat(self.path)
            if stat is not None and stat != self._stat:
                self._stat = stat
                await self.reload("file changed")

    # --- the workers' private admin sockets ----------------------------------------------------
    async def ask_each(
        self, method: str, path: str, body: Any = None, timeout: float = 5.0
    ) -> list[tuple[Slot, httpx.Response]]:
        """The same admin request to every live worker: (worker, answer) for the ones that answer."""

        async def one(slot: Slot) -> httpx.Response | None:
            transport = httpx.AsyncHTTPTransport(uds=slot.admin_path)
            async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
                try:
                    return await client.request(
                        method,
                        f"http://worker{path}",
                        headers={"authorization": f"Bearer {self.token}"},
                        content=orjson.dumps(body) if body is not None else None,
                    )
                except httpx.HTTPError as exc:
                    log.warning("worker %d did not answer %s: %s", slot.index, path, type(exc).__name__)
                    return None

        slots = self.alive()
        answers = await asyncio.gather(*(one(s) for s in slots))
        return [(s, a) for s, a in zip(slots, answers, strict=True) if a is not None]

    async def ask(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> list[httpx.Response]:
        return [a for _, a in await self.ask_each(method, path, body, timeout)]

    async def _wait_ready(self, slot: Slot, deadline: float) -> None:
        """A worker is ready when its private admin socket answers (the supervisor bound it, so
        the request waits in its queue until the worker serves)."""
        while time.monotonic() < deadline:
            if slot.proc is None or slot.proc.poll() is not None:
                raise RuntimeError(f"worker {slot.index} exited during startup (see its log above)")
            transport = httpx.AsyncHTTPTransport(uds=slot.admin_path)
            async with httpx.AsyncClient(transport=transport, timeout=1.0) as client:
                try:
                    if (await client.get("http://worker/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"worker {slot.index} did not start within the deadline")

    async def describe(self) -> dict[str, Any]:
        """Each worker: pid, restarts, uptime, the config version it serves and the requests it
        answered in the last five minutes (both asked)."""
        configs = {s.index: a.json() for s, a in await self.ask_each("GET", "/admin/config") if a.status_code == 200}
        lives = {
            s.index: a.json() for s, a in await self.ask_each("GET", "/admin/live?seconds=300") if a.status_code == 200
        }
        out = []
        for slot in self.slots:
            pid = slot.proc.pid if slot.proc is not None and slot.proc.poll() is None else None
            doc = configs.get(slot.index, {}) if pid is not None else {}
            out.append(
                {
                    "worker": slot.index,
                    "pid": pid,
                    "restarts": slot.restarts,
                    "uptime": round(time.monotonic() - slot.started, 1) if pid is not None else 0,
                    "version": doc.get("version"),
                    "reloads": doc.get("reloads"),
                    "requests_5m": sum(p["total"] for p in lives.get(slot.index, {}).get("series", [])),
                }
            )
        return {"workers": out, "version": self.version, "reloads": self.reloads}

    def extra_metrics(self) -> list[Metric]:
        running = Metric("bastion_workers", "Worker processes running", "gauge")
        running.add_sample("bastion_workers", {}, len(self.alive()))
        restarts = Metric("bastion_worker_restarts", "Workers replaced after they died", "counter")
        restarts.add_sample("bastion_worker_restarts_total", {}, sum(s.restarts for s in self.slots))
        return [running, restarts]

    # --- running -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask a running `serve()` to finish (safe from another thread)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def serve(self, *, install_signals: bool = True) -> None:
        loop = self._loop = asyncio.get_running_loop()
        stop = self._stop = asyncio.Event()
        admin_server: _Server | None = None
        admin_task: asyncio.Task[None] | None = None
        tasks: list[asyncio.Task[None]] = []
        try:
            for listener in self.config.listeners:
                sock = _bind(listener)
                sock.listen(2048)
                self.listeners.append(sock)
            for i in range(self.count):
                path = os.path.join(self.rundir, f"worker-{i}.sock")
                admin = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                admin.bind(path)
                admin.listen(64)
                admin.set_inheritable(True)
                self.slots.append(Slot(i, path, admin))
            if self.config.admin is not None:
                admin_server, admin_sock = self._admin_server()
                admin_task = asyncio.create_task(admin_server.serve(sockets=[admin_sock]))
            for slot in self.slots:
                self._spawn(slot)
            deadline = time.monotonic() + 60
            await asyncio.gather(*(self._wait_ready(s, deadline) for s in self.slots))
            if admin_server is not None:
                while not admin_server.started:
                    if admin_task is not None and admin_task.done():
                        admin_task.result()
                        raise RuntimeError("the admin listener failed to start")
                    await asyncio.sleep(0.01)
            if install_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self._on_hup()))
            tasks.append(asyncio.create_task(self._monitor()))
            if self.watch:
                tasks.append(asyncio.create_task(self._watch_file()))
            bound = [s.getsockname()[:2] for s in self.listeners]
            log.info(
                "%d workers serving %s",
                self.count,
                ", ".join(
                    f"{'https' if lst.tls else 'http'}://{h}:{p}"
                    for (h, p), lst in zip(bound, self.config.listeners, strict=False)
                ),
            )
            if self.on_ready:
                self.on_ready(bound)
            await stop.wait()
        finally:
            await self._shutdown(tasks, admin_server, admin_task)
            if install_signals:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    loop.remove_signal_handler(sig)

    async def _on_hup(self) -> None:
        self._stat = file_stat(self.path)
        await self.reload("SIGHUP")

    async def _shutdown(
        self, tasks: list[asyncio.Task[None]], admin_server: _Server | None, admin_task: asyncio.Task[None] | None
    ) -> None:
        """Workers stop accepting and finish their in-flight requests; then the admin listener
        closes. The supervisor's copies of the listening sockets close first, so the listeners
        are gone once the last worker has closed its own."""
        self.stopping = True
        for t in tasks:
            t.cancel()
        log.info("shutting down: %d worker(s) finish their in-flight requests", len(self.alive()))
        for sock in self.listeners:
            sock.close()
        for slot in self.alive():
            assert slot.proc is not None
            with contextlib.suppress(ProcessLookupError):
                slot.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + DRAIN_SECONDS
        while self.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for slot in self.alive():
            assert slot.proc is not None
            log.error("worker %d (pid %d) still running after %gs: killed", slot.index, slot.proc.pid, DRAIN_SECONDS)
            slot.proc.kill()
            slot.proc.wait()
        if admin_server is not None and admin_task is not None:
            admin_server.should_exit = True
            await asyncio.gather(admin_task, return_exceptions=True)
        for slot in self.slots:
            slot.admin.close()
        with contextlib.suppress(Exception):
            await self.gateway.state.close()
        shutil.rmtree(self.rundir, ignore_errors=True)

    def _admin_server(self) -> tuple[_Server, socket.socket]:
        admin = self.config.admin
        assert admin is not None
        listener = ListenerConfig(host=admin.host, port=admin.port)
        sock = _bind(listener)
        self.admin_port = sock.getsockname()[1]
        config = uvicorn.Config(
            SupervisorAdmin(self, admin.token),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            http=protocol_for(edge_limits(listener, raise_open_file_limit(), 1), "AdminEdgeProtocol"),
            loop="uvloop",
            timeout_keep_alive=listener.keepalive_timeout,  # type: ignore[arg-type]  # a float works
        )
        log.info("admin listening on http://%s:%d (for all workers)", admin.host, self.admin_port)
        return _Server(config), sock


# --- the admin listener for the whole gateway --------------------------------------------------


class SupervisorAdmin(AdminApp):
    """The admin listener of a multi-worker gateway: what is per process (metrics, the
    dashboard's live data, recent blocks, in-memory revocations) is gathered from every worker;
    the rest (config, reload, readiness, the token service) is answered from the supervisor's
    validated config, as in one process."""

    supervisor: Supervisor

    def __init__(self, supervisor: Supervisor, token: str | None) -> None:
        super().__init__(supervisor, token)
        self.supervisor = supervisor

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        sup = self.supervisor
        if path == "/metrics":
            answers = await sup.ask("GET", "/metrics")
            body = merge_metrics([a.text for a in answers if a.status_code == 200], sup.extra_metrics())
            return await _reply(send, 200, body, CONTENT_TYPE_LATEST.encode())
        if path == "/readyz":
            ready, checks = await self._ready()
            alive = len(sup.alive())
            checks["workers"] = f"{alive} of {sup.count} running"
            ready = ready and alive > 0
            return await _reply(send, 200 if ready else 503, orjson.dumps({"ready": ready, "checks": checks}))
        merged = ("/admin/live", "/admin/events", "/admin/revoke", "/admin/workers")
        if path not in merged or not self._authorised(scope):
            return await super().__call__(scope, receive, send)
        query = scope.get("query_string", b"").decode("latin-1")
        try:
            if path == "/admin/live" and method == "GET":
                answers = await sup.ask("GET", f"/admin/live?{query}")
                return await _reply(
                    send, 200, orjson.dumps(merge_live([a.json() for a in answers if a.status_code == 200]))
                )
            if path == "/admin/events" and method == "GET":
                answers = await sup.ask("GET", "/admin/events")
                events = [e for a in answers if a.status_code == 200 for e in a.json()["events"]]
                events.sort(key=lambda e: e.get("time", 0), reverse=True)
                return await _reply(send, 200, orjson.dumps({"events": events}))
            if path == "/admin/revoke" and method == "POST":  # each worker's store (Redis: the same one)
                doc = await _json_body(receive)
                answers = await sup.ask("POST", "/admin/revoke", doc)
                if not answers:
                    resp = problem(503, "unavailable", "no worker answered")
                    return await _reply(send, 503, resp.body, b"application/problem+json")
                worst = max(answers, key=lambda a: a.status_code)
                ctype = worst.headers.get("content-type", "application/json").encode()
                return await _reply(send, worst.status_code, worst.content, ctype)
            if path == "/admin/workers" and method == "GET":
                return await _reply(send, 200, orjson.dumps(await sup.describe()))
        except (ValueError, orjson.JSONDecodeError) as exc:
            resp = problem(400, "bad-request", str(exc)[:200])
            return await _reply(send, 400, resp.body, b"application/problem+json")
        return await super().__call__(scope, receive, send)


# --- aggregation -----------------------------------------------------------------------------

# Gauges are summed (requests in flight, open connections, connection caps) except these, which
# describe one shared thing that every worker measures: the worst value is the gateway's.
_GAUGE_MIN = {"bastion_store_up", "bastion_config_version", "bastion_tls_certificate_expiry_timestamp_seconds"}
_GAUGE_MAX = {"bastion_store_latency_seconds"}


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def merge_metrics(texts: list[str], extra: Sequence[Metric] = ()) -> bytes:
    """The workers' Prometheus texts as one: counters and histograms summed sample by sample
    (same name and labels), gauges summed or, for shared things, the worst value kept.

    Our own aggregation rather than prometheus-client's multiprocess mode: that mode cannot carry
    custom collectors (the policies' counters, store health and edge gauges are read at scrape
    time from the process's own objects), needs PROMETHEUS_MULTIPROC_DIR set before the library
    is imported and its files wiped on restart, and the dashboard's data has to be gathered from
    the workers anyway; one channel serves both."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            merged = families.get(fam.name)
            if merged is None:
                merged = families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
                values[fam.name] = {}
            acc = values[fam.name]
            for sample in fam.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = acc.get(key)
                if old is None:
                    acc[key] = sample.value
                elif sample.name.endswith("_created") or fam.name in _GAUGE_MIN:
                    acc[key] = min(old, sample.value)
                elif fam.name in _GAUGE_MAX:
                    acc[key] = max(old, sample.value)
                else:
                    acc[key] = old + sample.value
    for name, fam in families.items():
        for (sname, labels), value in values[name].items():
            fam.add_sample(sname, dict(labels), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*families.values(), *extra]))
    return generate_latest(registry)


def merge_live(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """The dashboard's view of every worker: per-second series added, top lists re-ranked (from
    each worker's top 8, so a long tail is approximate), the newest headroom per route."""
    if not snaps:
        return {"now": int(time.time()), "seconds": 0, "series": [], "policies": [], "top_clients": [],
                "top_limited": [], "headroom": [], "events": []}  # fmt: skip
    seconds = max(s["seconds"] for s in snaps)
    now = max(s["now"] for s in snaps)
    series: dict[int, dict[str, Any]] = {
        t: {"t": t, "total": 0, "classes": Counter(), "rejections": Counter()}
        for t in range(now - seconds + 1, now + 1)
    }
    clients: Counter[str] = Counter()
    limited: Counter[str] = Counter()
    headroom: dict[str, dict[str, Any]] = {}
    for snap in snaps:
        for point in snap["series"]:
            row = series.get(point["t"])
            if row is None:
                continue
            row["total"] += point["total"]
            row["classes"].update(point["classes"])
            row["rejections"].update(point["rejections"])
        clients.update(dict(snap["top_clients"]))
        limited.update(dict(snap["top_limited"]))
        for h in snap["headroom"]:
            if h["route"] not in headroom or h["time"] > headroom[h["route"]]["time"]:
                headroom[h["route"]] = h
    events = sorted((e for s in snaps for e in s["events"]), key=lambda e: e.get("time", 0), reverse=True)
    return {
        "now": now,
        "seconds": seconds,
        "series": [{**r, "classes": dict(r["classes"]), "rejections": dict(r["rejections"])} for r in series.values()],
        "policies": sorted({p for s in snaps for p in s["policies"]}),
        "top_clients": clients.most_common(8),
        "top_limited": limited.most_common(8),
        "headroom": [headroom[r] for r in sorted(headroom)],
        "events": events[:50],
        "workers": len(snaps),
    }


# --- the worker process --------------------------------------------------------------------


async def _run_worker(server: GatewayServer, parent: int) -> None:
    """Serve; stop when the supervisor is gone (an orphan must not hold the port)."""

    async def orphan_watch() -> None:
        while os.getppid() == parent:
            await asyncio.sleep(1.0)
        log.error("the supervisor (pid %d) is gone: stopping", parent)
        server.stop()

    watch = asyncio.create_task(orphan_watch())
    try:
        await server.serve()
    finally:
        watch.cancel()


def worker_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bastion-worker")
    parser.add_argument("config")
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--config-dir", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--fds", required=True)
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s[worker {args.slot}]: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    fds = [int(fd) for fd in args.fds.split(",")]
    socks = [socket.socket(fileno=fd) for fd in fds]
    token = os.environ.pop("BASTION_WORKER_TOKEN", "")
    sockets = WorkerSockets(
        listeners=socks[:-1],
        admin=socks[-1],
        admin_token=token,
        version=args.version,
        config_dir=args.config_dir,
        source=args.source,
    )
    try:
        server = GatewayServer(args.config, watch=False, worker=sockets)
    except ConfigError as exc:
        log.error("cannot start:\n%s", exc)
        return 2
    import uvloop

    uvloop.run(_run_worker(server, args.parent))
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
