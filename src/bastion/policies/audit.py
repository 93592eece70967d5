"""Audit log: one JSON line per request, written after the response, secrets redacted."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
from datetime import UTC, datetime
from time import time as _time
from typing import IO, Any, ClassVar
from urllib.parse import parse_qsl, quote

import orjson
from pydantic import Field

from bastion.http import Request, Response, ip_text
from bastion.pipeline import SECRET_QUERY_PARAMS, Context, Policy, PolicyConfig

DEFAULT_SECRET_PARAMS = [
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "api_key",
    "apikey",
    "key",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "code",
    "signature",
    "sig",
    "auth",
]


class AuditConfig(PolicyConfig):
    output: str = Field("stdout", description="Where lines go: stdout, stderr, or a file path (appended).")
    redact_query_params: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SECRET_PARAMS),
        description="Query parameters whose values are replaced by [REDACTED] (case-insensitive).",
    )
    include_user_agent: bool = Field(True, description="Record the User-Agent header.")


class _NoLoop:
    """`_Sink.timer_loop` before any flush was scheduled (none to lose)."""

    @staticmethod
    def is_closed() -> bool:
        return False


_NO_LOOP = _NoLoop()


class _Sink:
    """A line writer shared by every policy instance writing to the same place.

    Lines are buffered and written at most every 100 ms (or at 64 KiB), off the request's
    path: one write system call per batch instead of one per request. Closing flushes.
    """

    _open: ClassVar[dict[str, _Sink]] = {}
    _lock = threading.Lock()
    FLUSH_SECONDS = 0.1
    FLUSH_BYTES = 64 * 1024
    # A scheduled flush that has not run this long after its time is taken as lost (its loop
    # stopped without closing: an embedder's): the next line schedules anew. A flush whose loop
    # closed is known lost at once (`timer_loop.is_closed()`).
    LATE_SECONDS = 1.0

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.buffer: list[bytes] = []
        self.size = 0
        # when (`time.time()`) the scheduled flush should have run, plus LATE_SECONDS; 0.0: none
        # scheduled. A line added after it (`scheduled < now`) makes sure a flush is scheduled.
        self.scheduled = 0.0
        self.timer_loop: Any = _NO_LOOP  # the loop holding the scheduled flush
        self._flushing = threading.Lock()  # threads each with a loop may share one sink
        self.torn = False  # a failed write left a line cut short in the stream

    @classmethod
    def get(cls, output: str, base_dir: str) -> _Sink:
        if output in ("stdout", "stderr"):
            key = output
        else:
            key = output if os.path.isabs(output) else os.path.join(base_dir, output)
        with cls._lock:
            sink = cls._open.get(key)
            if sink is None or sink.stream.closed:
                stream = getattr(sys, key).buffer if key in ("stdout", "stderr") else open(key, "ab", buffering=0)
                sink = cls(stream)
                cls._open[key] = sink
            return sink

    def write(self, line: bytes) -> None:
        """Add `line` (without its newline: the flush puts one after each)."""
        self.buffer.append(line)
        self.size += len(line) + 1
        if self.size >= self.FLUSH_BYTES or self.scheduled < _time() or self.timer_loop.is_closed():
            self.settle()

    def settle(self) -> None:
        """After a line was added: write now when the buffer is full, else make sure a flush is
        scheduled (`Audit.on_log` adds its line itself and calls this only when it must)."""
        if self.size >= self.FLUSH_BYTES:
            self.flush()
        else:
            try:
                loop = asyncio.get_running_loop()
                loop.call_later(self.FLUSH_SECONDS, self.flush)
                self.timer_loop = loop
                self.scheduled = _time() + self.FLUSH_SECONDS + self.LATE_SECONDS
            except RuntimeError:  # no loop (tests, shutdown): write now
                self.flush()

    def flush(self) -> None:
        self.scheduled = 0.0
        # The lines present now are taken and removed in one step each (a slice, then deleting
        # it: each one C call under the GIL), under a lock: another thread's flush cannot take
        # them twice, and a line another thread appends meanwhile stays for the next flush.
        with self._flushing:
            count = len(self.buffer)
            if not count:
                return
            lines = self.buffer[:count]
            del self.buffer[:count]
            self.size = sum(len(line) + 1 for line in self.buffer)  # (those added meanwhile: few)
            lines.append(b"")  # (each line ends in a newline)
            if self.torn:  # the last write stopped inside a line: the next lines start on their own
                lines.insert(0, b"")
            whole = data = memoryview(b"\n".join(lines))
            try:
                # a file opened unbuffered writes what it can (a full disk, a file size limit): the
                # rest is written on, or its loss reported (s9-rt: it was dropped silently)
                while data:
                    written = self.stream.write(data)
                    if written is None:  # (a non-blocking stream that took nothing)
                        raise BlockingIOError("the stream took nothing")
                    data = data[written:]
                self.torn = False
                self.stream.flush()
            except (OSError, ValueError) as exc:  # disk full, closed stream: report, keep serving
                done = len(whole) - len(data)
                if done:
                    self.torn = whole[done - 1] != 0x0A
                logging.getLogger("bastion.audit").error("audit lines lost: %s", exc)


_time_cache: tuple[int, str] = (-1, "")  # (second, its "YYYY-MM-DDTHH:MM:SS" in UTC)
_MILLIS = tuple(f".{i:03d}Z" for i in range(1000))  # the rest of the stamp, made once


def _second_text(sec: int) -> str:
    """The date-and-seconds part for `sec`, formatted once a second."""
    global _time_cache
    _time_cache = (sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return _time_cache[1]


def _stand_in(line: dict[str, Any], exc: Exception) -> bytes:
    """The line orjson refused, encoded by the standard library instead (lone surrogates as
    `\\udXXX` escapes, unknown objects as their repr), so that no request goes unlogged."""
    logging.getLogger("bastion.audit").error("audit line written by the fallback encoder: %s", exc)
    return json.dumps(line, ensure_ascii=True, default=repr, skipkeys=True, separators=(",", ":")).encode()


class Audit(Policy[AuditConfig]):
    name: ClassVar[str] = "audit"
    priority: ClassVar[int] = 10
    Config = AuditConfig
    warn_when_off: ClassVar[bool] = True
    unrouted: ClassVar[bool] = True
    default_on: ClassVar[bool] = True

    def __init__(self, config: AuditConfig, env) -> None:
        super().__init__(config, env)
        self.sink = _Sink.get(config.output, env.config_dir)
        self.secret_params = frozenset(p.lower() for p in config.redact_query_params)
        self.user_agent = config.include_user_agent
        self._client: tuple[Any, str | None] = (None, None)  # the last client address and its text

    def redact_query(self, query: bytes, also: frozenset[str] | None = None) -> str:
        """The query for the log, the values of secret parameters replaced: those configured and
        `also` (lower-case names a policy marked secret for this request: `SECRET_QUERY_PARAMS`)."""
        if not query:
            return ""
        secret = self.secret_params | also if also else self.secret_params
        text = query.decode("latin-1")
        # `;` separates parameters too for some servers (and Python's parse_qsl before 3.9.2):
        # `a=1;token=x` must not log x inside a's value
        pairs = parse_qsl(text.replace(";", "&") if ";" in text else text, keep_blank_values=True)
        return "&".join(
            f"{quote(k, safe='')}=" + ("[REDACTED]" if k.lower() in secret else quote(v, safe="")) for k, v in pairs
        )

    def on_log(self, req: Request, resp: Response, ctx: Context, record: dict[str, Any]) -> None:
        # (the time stamp, the client's text and the sink's write inline: Python calls less)
        now = _time()
        sec = int(now)
        cached = _time_cache
        stamp = (cached[1] if cached[0] == sec else _second_text(sec)) + _MILLIS[int((now - sec) * 1000)]
        ip = req.client_ip
        if ip is None:
            client = None
        else:
            last = self._client  # the same client's requests come in runs: its text once a run
            if last[0] is ip:
                client = last[1]
            else:
                client = ip_text(ip)
                self._client = (ip, client)
        query = req.query
        principal = ctx.principal
        line: dict[str, Any] = {
            "time": stamp,
            "request_id": req.request_id,
            "client_ip": client,
            "method": req.method,
            "path": req.path,
            "query": self.redact_query(query, ctx.values.get(SECRET_QUERY_PARAMS)) if query else "",
            "route": req.route_name or None,
            "status": resp.status,
            "bytes_in": record.get("bytes_in", 0),
            "bytes_out": record.get("bytes_out", 0),
            "duration_ms": record.get("duration_ms"),
            "upstream_ms": record.get("upstream_ms"),
            "principal": principal.subject if principal is not None else None,
        }
        if self.user_agent:
            ua = req.header(b"user-agent")
            line["user_agent"] = ua.decode("latin-1")[:256] if ua else None
        if resp.stopped_by:
            line["stopped_by"] = resp.stopped_by
            line["reason"] = resp.reason
        if ctx.log_fields:
            line.update(ctx.log_fields)
        try:  # (no option argument: orjson parses keywords slowly; the flush adds the newlines)
            data = orjson.dumps(line)
        except orjson.JSONEncodeError as exc:  # a lone surrogate: a stand-in line, not none
            data = _stand_in(line, exc)
        sink = self.sink
        sink.buffer.append(data)
        sink.size += len(data) + 1
        if sink.scheduled < now or sink.size >= sink.FLUSH_BYTES or sink.timer_loop.is_closed():
            sink.settle()

    async def close(self) -> None:
        self.sink.flush()
