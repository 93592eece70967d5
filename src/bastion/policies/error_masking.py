"""Upstream error masking (OWASP API8): a 5xx body from the upstream (stack traces, SQL
errors, debug pages) is replaced by problem+json with the request id; the original is logged,
bounded, so operators can still debug."""

from __future__ import annotations

import logging
from typing import ClassVar

from pydantic import Field

from bastion.http import Request, Response, problem
from bastion.pipeline import Context, Policy, PolicyConfig
from bastion.response_body import BodyInfo

log = logging.getLogger("bastion.upstream_errors")


class ErrorMaskingConfig(PolicyConfig):
    log_bytes: int = Field(2048, ge=0, le=65536, description="How much of the original body to log.")


class ErrorMasking(Policy[ErrorMaskingConfig]):
    name: ClassVar[str] = "error_masking"
    priority: ClassVar[int] = 390
    Config = ErrorMaskingConfig
    default_on: ClassVar[bool] = True
    replaces_body: ClassVar[bool] = True  # the body is dropped: no other rewriter need see it
    # `wants` only answers of status 500 and over: `open_gate` passes the others without asking
    server_errors_only: ClassVar[bool] = True

    def __init__(self, config: ErrorMaskingConfig, env) -> None:
        super().__init__(config, env)
        self.log_bytes = config.log_bytes

    def on_request_sync(self, req: Request, ctx: Context) -> Response | None:
        ctx.response_rewriters.append(self)
        return None

    @staticmethod
    def wants(resp: Response, json: bool) -> bool:
        return resp.status >= 500

    def transform(self, req: Request, resp: Response, ctx: Context, info: BodyInfo) -> _Masked:
        return _Masked(self, req, resp, ctx)


class _Masked:
    """Keeps the first `log_bytes` of the (decoded, already filtered) body for the log, drops
    the rest as it comes (any size, no memory), and answers the problem at the end."""

    __slots__ = ("policy", "req", "resp", "ctx", "head")

    def __init__(self, policy: ErrorMasking, req: Request, resp: Response, ctx: Context) -> None:
        self.policy, self.req, self.resp, self.ctx = policy, req, resp, ctx
        self.head = b""

    def feed(self, data: bytes) -> bytes:
        room = self.policy.log_bytes - len(self.head)
        if room > 0:
            self.head += data[:room]
        return b""

    def finish(self) -> bytes:
        req, resp = self.req, self.resp
        log.warning(
            "request %s: upstream answered %d; original body (first %d bytes): %r",
            req.request_id,
            resp.status,
            self.policy.log_bytes,
            self.head,
        )
        self.ctx.log_fields["upstream_error_masked"] = True
        return resp.become(
            problem(
                resp.status,
                "upstream-error",
                "the service failed to handle this request; quote the request id to its operators",
                request_id=req.request_id,
            )
        )
