"""How answers that a policy changes are handled: decoding limits, size caps, JSON sniffing and
what happens to a body that cannot be filtered (refused with 502 unless a route opts into
`on_unfilterable: pass`). The engine is `bastion.response_body`; this policy only sets its rules
for a route (without it, the defaults below hold)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from bastion.http import Request, Response
from bastion.pipeline import Context, Policy, PolicyConfig
from bastion.response_body import BodyRules

_D = BodyRules()


class ResponseBodyConfig(PolicyConfig):
    on_unfilterable: Literal["refuse", "pass"] = Field(
        "refuse",
        description="A body a response policy cannot filter (malformed JSON, unknown content coding, "
        "over a limit): 'refuse' answers 502 problem+json; 'pass' lets it through as the upstream sent it "
        "(`bastion check` warns).",
    )
    sniff_json: bool = Field(
        _D.sniff_json,
        description="Treat an answer declared text/plain, text/html or "
        "without a type as JSON when its body starts with `{` or `[`.",
    )
    max_decoded_bytes: int = Field(_D.max_decoded_bytes, ge=1024, description="Hard cap on a body's decoded size.")
    max_ratio: float = Field(
        _D.max_ratio, ge=2, description="Decompression-bomb limit: decoded/encoded size (checked past 1 MiB of output)."
    )
    max_buffered_bytes: int = Field(
        _D.max_buffered_bytes,
        ge=1024,
        description="Most bytes held for policies that need a whole body, and of output held before the head is sent.",
    )
    max_depth: int = Field(_D.max_depth, ge=1, le=100_000, description="Deepest JSON nesting filtered as a stream.")
    max_string_bytes: int = Field(
        _D.max_string_bytes, ge=1024, description="Longest JSON string (or name) filtered as a stream."
    )

    def lint(self) -> list[tuple[str, str, str]]:
        if self.on_unfilterable == "pass":
            return [
                (
                    "warning",
                    "on_unfilterable",
                    "'pass': an answer the response policies cannot filter "
                    "(malformed JSON, an unknown content coding, over a size or decompression limit) "
                    "reaches the client unfiltered",
                )
            ]
        return []


class ResponseBody(Policy[ResponseBodyConfig]):
    name: ClassVar[str] = "response_body"
    priority: ClassVar[int] = 980
    Config = ResponseBodyConfig

    def __init__(self, config: ResponseBodyConfig, env) -> None:
        super().__init__(config, env)
        self.rules = BodyRules(
            on_unfilterable=config.on_unfilterable,
            sniff_json=config.sniff_json,
            max_decoded_bytes=config.max_decoded_bytes,
            max_ratio=config.max_ratio,
            max_buffered_bytes=config.max_buffered_bytes,
            max_depth=config.max_depth,
            max_string_bytes=config.max_string_bytes,
        )

    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        ctx.body_rules = self.rules
        return None
