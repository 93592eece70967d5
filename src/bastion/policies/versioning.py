"""API lifecycle: versions by path segment, header or media type, each current, deprecated or
retired. Deprecated answers carry `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and a
`successor-version` link; after the sunset (or when retired) 410 names the successor; an
unknown version is 400 listing the supported ones. Calls to deprecated versions are counted
per client, so operators can see who still uses them."""

from __future__ import annotations

import re
import time
from datetime import datetime
from email.utils import formatdate
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.http import Request, Response, ip_text, problem
from bastion.pipeline import Context, Policy, PolicyConfig


class VersionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="The version as it appears in the path, header or media type (v1).")
    status: Literal["current", "deprecated", "retired"] = "current"
    deprecated_at: datetime | None = Field(None, description="When it was deprecated (Deprecation header).")
    sunset: datetime | None = Field(None, description="After this, 410 Gone.")
    successor: str | None = Field(None, description="URL or path of the version that replaces it.")


class VersioningConfig(PolicyConfig):
    versions: list[VersionConfig] = Field(default_factory=list)
    path_pattern: str | None = Field(
        r"^/(?:api/)?(?P<version>v[0-9]+)(?:/|$)", description="Regex on the path with a `version` group."
    )
    header: str | None = Field("X-API-Version", description="Header naming the version.")
    media_type: str | None = Field(
        None,
        description=r"Regex on Accept / Content-Type with a `version` group, "
        r"e.g. application/vnd\.example\.(?P<version>v\d+)\+json.",
    )
    track_clients: int = Field(10_000, ge=0, description="Most (version, client) pairs counted.")

    @field_validator("path_pattern", "media_type")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                compiled = re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
            if "version" not in compiled.groupindex:
                raise ValueError("the pattern needs a (?P<version>…) group")
        return v


class Versioning(Policy[VersioningConfig]):
    name: ClassVar[str] = "versioning"
    priority: ClassVar[int] = 780
    Config = VersioningConfig

    def __init__(self, config: VersioningConfig, env) -> None:
        super().__init__(config, env)
        self.versions = {v.name: v for v in config.versions}
        self.path_re = re.compile(config.path_pattern) if config.path_pattern else None
        self.header = config.header.lower().encode() if config.header else None
        self.media_re = re.compile(config.media_type) if config.media_type else None
        self.supported = ", ".join(n for n, v in self.versions.items() if v.status != "retired")
        self.track = config.track_clients
        self.usage: dict[tuple[str, str], int] = {}
        self.clock = time.time

    def _detect(self, req: Request) -> str | None:
        if self.path_re is not None:
            m = self.path_re.search(req.path)
            if m:
                return m.group("version")
        if self.header is not None:
            value = req.header(self.header)
            if value:
                return value.decode("latin-1").strip()
        if self.media_re is not None:
            for name in (b"accept", b"content-type"):
                value = req.header(name)
                if value:
                    m = self.media_re.search(value.decode("latin-1"))
                    if m:
                        return m.group("version")
        return None

    def on_request_sync(self, req: Request, ctx: Context) -> Response | None:
        name = self._detect(req)
        if name is None:
            return None
        v = self.versions.get(name)
        if v is None:
            return problem(
                400,
                "unknown-api-version",
                f"API version {name[:32]!r} does not exist; supported: {self.supported}",
                request_id=req.request_id,
                extra={"supported": self.supported.split(", ")},
            )
        ctx.log_fields["api_version"] = name
        now = self.clock()
        if v.status == "retired" or (v.sunset is not None and now >= v.sunset.timestamp()):
            detail = f"API version {name} is retired"
            headers = []
            if v.successor:
                detail += f"; use {v.successor}"
                headers.append((b"link", f'<{v.successor}>; rel="successor-version"'.encode()))
            return problem(
                410,
                "api-version-retired",
                detail,
                request_id=req.request_id,
                headers=headers,
                extra={"successor": v.successor} if v.successor else None,
            )
        if v.status == "deprecated":
            ctx.values["versioning.deprecated"] = v
            ctx.log_fields["deprecated_version"] = True
            client = (
                ctx.principal.subject
                if ctx.principal is not None
                else (ip_text(req.client_ip) if req.client_ip else "-")
            )
            key = (name, client)
            if key in self.usage or len(self.usage) < self.track:
                self.usage[key] = self.usage.get(key, 0) + 1
        return None

    def on_response_sync(self, req: Request, resp: Response, ctx: Context) -> None:
        v: VersionConfig | None = ctx.values.get("versioning.deprecated")
        if v is None:
            return
        when = int(v.deprecated_at.timestamp()) if v.deprecated_at else None
        resp.headers.append((b"deprecation", f"@{when}".encode() if when is not None else b"@0"))
        if v.sunset is not None:
            resp.headers.append((b"sunset", formatdate(v.sunset.timestamp(), usegmt=True).encode()))
        if v.successor:
            resp.headers.append((b"link", f'<{v.successor}>; rel="successor-version"'.encode()))
