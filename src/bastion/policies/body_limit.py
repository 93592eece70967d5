"""Body size limit: 413 before the upstream sees an oversized body, streamed or not."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from bastion.http import Request, Response, problem
from bastion.http.messages import CONTENT_LENGTH_DIGITS
from bastion.pipeline import Context, Policy, PolicyConfig


class BodyLimitConfig(PolicyConfig):
    max_bytes: int = Field(1024 * 1024, ge=0, description="Largest request body accepted, in bytes (default 1 MiB).")
    max_uri_length: int = Field(8192, ge=64, description="Longest request target (path and query) accepted, in bytes.")

    def lint(self) -> list[tuple[str, str, str]]:
        if self.max_bytes > 100 * 1024 * 1024:
            return [("warning", "", f"max_bytes {self.max_bytes} is over 100 MiB")]
        return []


class BodyLimit(Policy[BodyLimitConfig]):
    name: ClassVar[str] = "body_limit"
    priority: ClassVar[int] = 850
    Config = BodyLimitConfig
    default_on: ClassVar[bool] = True
    warn_when_off: ClassVar[bool] = True

    def __init__(self, config: BodyLimitConfig, env) -> None:
        super().__init__(config, env)
        self.max_bytes = config.max_bytes
        self.max_uri = config.max_uri_length

    def on_request_sync(self, req: Request, ctx: Context) -> Response | None:
        if len(req.path) + len(req.query) > self.max_uri:
            return problem(
                414,
                "uri-too-long",
                f"the request target is longer than {self.max_uri} bytes",
                request_id=req.request_id,
            )
        # (`req.content_length()`, inline; `req.header`, inline when the request's header map is built)
        m = req._header_map
        value = req.header(b"content-length") if m is None else m.get(b"content-length")
        if value is not None:
            if not value.isdigit() or len(value) > CONTENT_LENGTH_DIGITS:
                return problem(
                    400, "bad-request", "the Content-Length header is not a number", request_id=req.request_id
                )
            if int(value) > self.max_bytes:
                return problem(
                    413,
                    "body-too-large",
                    f"the request body is larger than {self.max_bytes} bytes",
                    request_id=req.request_id,
                    extra={"max_bytes": self.max_bytes},
                )
        # A chunked body is counted while it streams; the gateway answers 413 when it passes.
        limit = req.body_limit
        if limit is None or limit > self.max_bytes:
            req.body_limit = self.max_bytes
        return None
