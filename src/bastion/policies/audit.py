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

    `Audit.on_log` appends a record of the request's raw values (a tuple, in `_line_dicts`'
    order); the lines are made and written at most every 100 ms (or at 256 records), off the
    request's path, in one loop and one write system call per batch. Closing flushes.
    """

    _open: ClassVar[dict[str, _Sink]] = {}
    _lock = threading.Lock()
    FLUSH_SECONDS = 0.1
    FLUSH_RECORDS = 256  # (~64-100 KiB of lines: the bound the 64 KiB of made lines was)

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.buffer: list[tuple[Any, ...]] = []  # records waiting for the flush
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

    def settle(self) -> None:
        """After a record was added: write now when the buffer is full, else make sure a flush
        is scheduled (`Audit.on_log` adds its record itself and calls this only when it must)."""
        if len(self.buffer) >= self.FLUSH_RECORDS:
            self.flush()
        elif not self.scheduled:
            try:
                asyncio.get_running_loop().call_later(self.FLUSH_SECONDS, self.flush)
                self.scheduled = True
            except RuntimeError:  # no loop (tests, shutdown): write now
                self.flush()

    def flush(self) -> None:
        self.scheduled = False
        records = self.buffer
        if not records:
            return
        self.buffer = []
        data = _lines(records)
        try:
            self.stream.write(data)
            self.stream.flush()
        except (OSError, ValueError) as exc:  # disk full, closed stream: report, keep serving
            logging.getLogger("bastion.audit").error("audit lines lost: %s", exc)


_time_cache: tuple[int, str] = (-1, "")  # (second, its "YYYY-MM-DDTHH:MM:SS" in UTC)
_MILLIS = tuple(f".{i:03d}Z" for i in range(1000))  # the rest of the stamp, made once


def _second_text(sec: int) -> str:
    """The date-and-seconds part for `sec`, formatted once a second."""
    global _time_cache
    _time_cache = (sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return _time_cache[1]


def _line_dicts(records: list[tuple[Any, ...]]) -> list[Any]:
    """Each record's line as a dict (keys in the line's order)."""
    out: list[Any] = []
    append = out.append
    sec_seen, sec_text = _time_cache
    last_ip: Any = None
    last_client: str | None = None
    millis = _MILLIS
    for (
        now,
        policy,
        request_id,
        ip,
        method,
        path,
        query,
        route,
        status,
        bytes_in,
        bytes_out,
        duration_ms,
        upstream_ms,
        principal,
        user_agent,
        stopped_by,
        reason,
        fields,
    ) in records:
        sec = int(now)
        if sec != sec_seen:
            sec_seen, sec_text = sec, _second_text(sec)
        if ip is None:
            client = None
        elif ip is last_ip:  # the same client's requests come in runs: its text once a run
            client = last_client
        else:
            last_ip = ip
            client = last_client = ip_text(ip)
        line = {
            "time": sec_text + millis[int((now - sec) * 1000)],
            "request_id": request_id,
            "client_ip": client,
            "method": method,
            "path": path,
            "query": policy.redact_query(query) if query else "",
            "route": route or None,
            "status": status,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "duration_ms": duration_ms,
            "upstream_ms": upstream_ms,
            "principal": principal,
        }
        if user_agent is not False:  # (False: this policy leaves the user agent out)
            line["user_agent"] = user_agent.decode("latin-1")[:256] if user_agent else None
        if stopped_by:
            line["stopped_by"] = stopped_by
            line["reason"] = reason
        if fields is not None:
            line.update(fields)
        append(line)
    return out


def _lines(records: list[tuple[Any, ...]]) -> bytes:
    """The records' lines, in order, each ending in a newline. A line orjson cannot encode (a
    lone surrogate, an object of unknown type) is written by the standard library's encoder
    instead, with an error in the log; the others are as ever."""
    try:
        lines = _line_dicts(records)
    except Exception:  # (not expected: then record by record, so that only a bad one is told apart)
        lines = []
        for record in records:
            try:
                lines.extend(_line_dicts([record]))
            except Exception as exc:
                logging.getLogger("bastion.audit").error("audit line lost: %s", exc)
    out: list[bytes] = []
    append = out.append
    dumps = orjson.dumps
    for line in lines:
        try:
            append(dumps(line))
        except Exception as exc:
            append(_stand_in(line, exc))
    append(b"")
    return b"\n".join(out)


def _stand_in(line: dict[str, Any], exc: Exception) -> bytes:
    """The line orjson refused, encoded by the standard library instead (lone surrogates as
    `\\udXXX` escapes, unknown objects as their repr), so that no request goes unlogged."""
    logging.getLogger("bastion.audit").error("audit line written by the fallback encoder: %s", exc)
    try:
        return json.dumps(line, ensure_ascii=True, default=repr, skipkeys=True, separators=(",", ":")).encode()
    except Exception as again:  # (not a line at all: reported, the batch's others still written)
        logging.getLogger("bastion.audit").error("audit line lost: %s", again)
        return b"{}"


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
        # `;` separates parameters too for some servers (and Python's parse_qsl before 3.9.2):
        # `a=1;token=x` must not log x inside a's value
        pairs = parse_qsl(text.replace(";", "&") if ";" in text else text, keep_blank_values=True)
        return "&".join(
            f"{quote(k, safe='')}=" + ("[REDACTED]" if k.lower() in self.secret_params else quote(v, safe=""))
            for k, v in pairs
        )

    def on_log(self, req: Request, resp: Response, ctx: Context, record: dict[str, Any]) -> None:
        # The line is made at the flush, for the whole batch at once (`_lines`): here only the
        # values, taken now (all immutable but the log fields, copied), in `_line_dicts`' order.
        principal = ctx.principal
        fields = ctx.log_fields
        get = record.get
        sink = self.sink
        records = sink.buffer
        records.append(
            (
                _time(),
                self,
                req.request_id,
                req.client_ip,
                req.method,
                req.path,
                req.query,
                req.route_name,
                resp.status,
                get("bytes_in", 0),
                get("bytes_out", 0),
                get("duration_ms"),
                get("upstream_ms"),
                None if principal is None else principal.subject,
                req.header(b"user-agent") if self.user_agent else False,
                resp.stopped_by,
                resp.reason,
                dict(fields) if fields else None,
            )
        )
        if not sink.scheduled or len(records) >= sink.FLUSH_RECORDS:
            sink.settle()

    async def close(self) -> None:
        self.sink.flush()
