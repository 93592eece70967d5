"""Audit log: one JSON line per request, written after the response, secrets redacted."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO, Any, ClassVar
from urllib.parse import parse_qsl, quote

import orjson
from pydantic import Field

from bastion.http import Request, Response, ip_text
from bastion.pipeline import Context, Policy, PolicyConfig

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


class _Sink:
    """A line writer shared by every policy instance writing to the same place.

    Lines are buffered and written at most every 100 ms (or at 64 KiB), off the request's
    path: one write system call per batch instead of one per request. Closing flushes.
    """

    _open: ClassVar[dict[str, _Sink]] = {}
    _lock = threading.Lock()
    FLUSH_SECONDS = 0.1
    FLUSH_BYTES = 64 * 1024

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.buffer: list[bytes] = []
        self.size = 0
        self.scheduled = False

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
        self.buffer.append(line)
        self.size += len(line)
        if self.size >= self.FLUSH_BYTES:
            self.flush()
        elif not self.scheduled:
            try:
                asyncio.get_running_loop().call_later(self.FLUSH_SECONDS, self.flush)
                self.scheduled = True
            except RuntimeError:  # no loop (tests, shutdown): write now
                self.flush()

    def flush(self) -> None:
        self.scheduled = False
        if not self.buffer:
            return
        data = b"".join(self.buffer)
        self.buffer.clear()
        self.size = 0
        try:
            self.stream.write(data)
            self.stream.flush()
        except (OSError, ValueError) as exc:  # disk full, closed stream: report, keep serving
            logging.getLogger("bastion.audit").error("audit lines lost: %s", exc)


_time_cache: tuple[int, str] = (-1, "")


def _now_iso() -> str:
    """UTC time with milliseconds; the date-and-seconds part is formatted once a second."""
    global _time_cache
    now = time.time()
    sec = int(now)
    if _time_cache[0] != sec:
        _time_cache = (sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_time_cache[1]}.{int((now - sec) * 1000):03d}Z"


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

    def redact_query(self, query: bytes) -> str:
        if not query:
            return ""
        text = query.decode("latin-1")
        pairs = parse_qsl(text, keep_blank_values=True)
        return "&".join(
            f"{quote(k, safe='')}=" + ("[REDACTED]" if k.lower() in self.secret_params else quote(v, safe=""))
            for k, v in pairs
        )

    def on_log(self, req: Request, resp: Response, ctx: Context, record: dict[str, Any]) -> None:
        line: dict[str, Any] = {
            "time": _now_iso(),
            "request_id": req.request_id,
            "client_ip": ip_text(req.client_ip) if req.client_ip else None,
            "method": req.method,
            "path": req.path,
            "query": self.redact_query(req.query),
            "route": req.route_name or None,
            "status": resp.status,
            "bytes_in": record.get("bytes_in", 0),
            "bytes_out": record.get("bytes_out", 0),
            "duration_ms": record.get("duration_ms"),
            "upstream_ms": record.get("upstream_ms"),
            "principal": ctx.principal.subject if ctx.principal is not None else None,
        }
        if self.user_agent:
            ua = req.header(b"user-agent")
            line["user_agent"] = ua.decode("latin-1")[:256] if ua else None
        if resp.stopped_by:
            line["stopped_by"] = resp.stopped_by
            line["reason"] = resp.reason
        if ctx.log_fields:
            line.update(ctx.log_fields)
        self.sink.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))

    async def close(self) -> None:
        self.sink.flush()
