"""Request id: keep a well-formed incoming id or make one; echo it and the response time."""

from __future__ import annotations

import os
import re
from operator import itemgetter
from time import perf_counter
from typing import ClassVar

from pydantic import Field

from bastion.http import Request, Response
from bastion.pipeline import Context, Policy, PolicyConfig


class RequestIdConfig(PolicyConfig):
    header: str = Field("X-Request-Id", description="Header carrying the id, in and out.")
    trust_incoming: bool = Field(True, description="Keep a well-formed id sent by the client.")
    max_length: int = Field(128, ge=8, le=1024, description="Longest incoming id accepted.")
    response_time_header: str | None = Field(
        "X-Response-Time", description="Header with the gateway's time to first byte, or null."
    )


_WELL_FORMED = re.compile(rb"[A-Za-z0-9._:\-]+")


_POOL_BYTES = 4096  # one system call per 256 ids
_pool: list[str] = []  # ids not yet given out; `pop` is atomic (two threads never share an id)


def _refill() -> str:
    """128-bit random ids from the OS CSPRNG, 256 from one 4 KiB read, hex-encoded once for all
    of them; returns one, keeps the others in `_pool`."""
    text = os.urandom(_POOL_BYTES).hex()
    _pool.extend([text[i : i + 32] for i in range(0, len(text), 32)])
    return _pool.pop()


def new_id() -> str:
    """A fresh id: 32 lower-case hex digits, 128 bits from the OS CSPRNG."""
    try:
        return _pool.pop()
    except IndexError:
        return _refill()


if hasattr(os, "register_at_fork"):  # a forked child draws its own ids, never its parent's unused ones
    os.register_at_fork(after_in_child=_pool.clear)

_first = itemgetter(0)


class RequestId(Policy[RequestIdConfig]):
    name: ClassVar[str] = "request_id"
    priority: ClassVar[int] = 1000
    Config = RequestIdConfig
    per_route: ClassVar[bool] = False
    unrouted: ClassVar[bool] = True
    edge_once: ClassVar[bool] = True  # the route's pipeline does not call on_request again
    default_on: ClassVar[bool] = True

    def __init__(self, config: RequestIdConfig, env) -> None:
        super().__init__(config, env)
        self.header = config.header.lower().encode()
        self.trust = config.trust_incoming
        self.max_length = config.max_length
        rt = config.response_time_header
        self.time_header = rt.lower().encode() if rt else None
        self.mine = frozenset(h for h in (self.header, self.time_header) if h is not None)

    def assign(self, req: Request) -> None:
        incoming = req.header(self.header) if self.trust else None
        if incoming and len(incoming) <= self.max_length and _WELL_FORMED.fullmatch(incoming) is not None:
            req.request_id = incoming.decode("ascii")
        else:
            req.request_id = new_id()

    def on_request_sync(self, req: Request, ctx: Context) -> Response | None:
        if req.request_id:  # already assigned when the request entered the gateway
            return None
        # (`assign` inline: a Python call less per request)
        incoming = req.header(self.header) if self.trust else None
        if incoming and len(incoming) <= self.max_length and _WELL_FORMED.fullmatch(incoming) is not None:
            rid = req.request_id = incoming.decode("ascii")
        else:
            try:
                rid = req.request_id = _pool.pop()
            except IndexError:
                rid = req.request_id = _refill()
        ctx.drop_request_headers.add(self.header)
        ctx.upstream_headers.append((self.header, rid.encode()))
        return None

    def on_response_sync(self, req: Request, resp: Response, ctx: Context) -> None:
        mine = self.mine
        headers = resp.headers
        if not mine.isdisjoint(map(_first, headers)):  # the upstream's own are replaced
            headers = resp.headers = [h for h in headers if h[0] not in mine]
        headers.append((self.header, req.request_id.encode()))
        if self.time_header is not None:
            headers.append((self.time_header, b"%.2fms" % ((perf_counter() - req.started) * 1000)))
