"""Upstream error masking (OWASP API8): a 5xx body from the upstream (stack traces, SQL
errors, debug pages) is replaced by problem+json with the request id; the original is logged,
bounded, so operators can still debug."""

from __future__ import annotations

import logging
from typing import ClassVar

from pydantic import Field

from bastion.http import Request, Response, problem
from bastion.pipeline import Context, Policy, PolicyConfig

log = logging.getLogger("bastion.upstream_errors")


class ErrorMaskingConfig(PolicyConfig):
    log_bytes: int = Field(2048, ge=0, le=65536, description="How much of the original body to log.")


class ErrorMasking(Policy):
    name: ClassVar[str] = "error_masking"
    priority: ClassVar[int] = 390
    Config = ErrorMaskingConfig
    default_on: ClassVar[bool] = True

    def __init__(self, config: ErrorMaskingConfig, env) -> None:
        super().__init__(config, env)
        self.log_bytes = config.log_bytes

    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        ctx.response_rewriters.append(_Mask(self.log_bytes, req, ctx))
        return None


class _Mask:
    __slots__ = ("log_bytes", "req", "ctx")

    def __init__(self, log_bytes: int, req: Request, ctx: Context) -> None:
        self.log_bytes, self.req, self.ctx = log_bytes, req, ctx

    @staticmethod
    def wants(resp: Response) -> bool:
        return resp.status >= 500

    def __call__(self, resp: Response, body: bytes) -> bytes:
        log.warning("request %s: upstream answered %d; original body (first %d bytes): %r",
                    self.req.request_id, resp.status, self.log_bytes, body[: self.log_bytes])
        self.ctx.log_fields["upstream_error_masked"] = True
        return resp.become(problem(resp.status, "upstream-error",
                                   "the service failed to handle this request; quote the request id to its "
                                   "operators", request_id=self.req.request_id))
