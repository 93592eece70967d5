"""Request id: keep a well-formed incoming id or make one; echo it and the response time."""

from __future__ import annotations

import re
import secrets
import time
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


class RequestId(Policy):
    name: ClassVar[str] = "request_id"
    priority: ClassVar[int] = 1000
    Config = RequestIdConfig
    per_route: ClassVar[bool] = False
    unrouted: ClassVar[bool] = True
    default_on: ClassVar[bool] = True

    def __init__(self, config: RequestIdConfig, env) -> None:
        super().__init__(config, env)
        self.header = config.header.lower().encode()
        self.trust = config.trust_incoming
        self.max_length = config.max_length
        rt = config.response_time_header
        self.time_header = rt.lower().encode() if rt else None

    def assign(self, req: Request) -> None:
        incoming = req.header(self.header) if self.trust else None
        if (
            incoming
            and len(incoming) <= self.max_length
            and _WELL_FORMED.fullmatch(incoming) is not None
        ):
            req.request_id = incoming.decode("ascii")
        else:
            req.request_id = secrets.token_hex(16)

    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        if req.request_id:  # already assigned when the request entered the gateway
            return None
        self.assign(req)
        ctx.drop_request_headers.add(self.header)
        ctx.upstream_headers.append((self.header, req.request_id.encode()))
        return None

    async def on_response(self, req: Request, resp: Response, ctx: Context) -> None:
        resp.set_header(self.header, req.request_id.encode())
        if self.time_header is not None:
            ms = (time.perf_counter() - req.started) * 1000
            resp.set_header(self.time_header, b"%.2fms" % ms)
