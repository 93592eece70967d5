"""Security headers on every response, set unless the upstream chose its own."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from bastion.http import Request, Response
from bastion.pipeline import Context, Policy, PolicyConfig


class SecurityHeadersConfig(PolicyConfig):
    hsts: str | None = Field(
        "max-age=31536000; includeSubDomains",
        description="Strict-Transport-Security value, sent on HTTPS requests only; null to omit.",
    )
    content_type_options: str | None = Field("nosniff", description="X-Content-Type-Options.")
    frame_options: str | None = Field("DENY", description="X-Frame-Options.")
    content_security_policy: str | None = Field(
        "default-src 'none'; frame-ancestors 'none'",
        description="Content-Security-Policy; the default suits JSON APIs.",
    )
    referrer_policy: str | None = Field("no-referrer", description="Referrer-Policy.")
    no_store_with_credentials: bool = Field(
        True,
        description="Cache-Control: no-store on responses to requests that carried credentials "
        "(Authorization, Cookie, X-API-Key, or any credential the auth policy accepted: an API key "
        "in a header or query parameter of its own name), unless the upstream said private or no-store.",
    )
    override: bool = Field(False, description="Replace headers the upstream already set instead of keeping them.")
    extra: dict[str, str] = Field(default_factory=dict, description="More headers to set.")


class SecurityHeaders(Policy[SecurityHeadersConfig]):
    name: ClassVar[str] = "security_headers"
    priority: ClassVar[int] = 950  # runs late in the response phase: sees every other header
    Config = SecurityHeadersConfig
    warn_when_off: ClassVar[bool] = True
    unrouted: ClassVar[bool] = True
    default_on: ClassVar[bool] = True

    def __init__(self, config: SecurityHeadersConfig, env) -> None:
        super().__init__(config, env)
        pairs = [
            ("x-content-type-options", config.content_type_options),
            ("x-frame-options", config.frame_options),
            ("content-security-policy", config.content_security_policy),
            ("referrer-policy", config.referrer_policy),
            *((k.lower(), v) for k, v in config.extra.items()),
        ]
        self.always = tuple((k.encode(), v.encode()) for k, v in pairs if v)
        self.hsts = config.hsts.encode() if config.hsts else None
        # built once per state: the headers for plain HTTP and for HTTPS (HSTS), and their names
        self.always_https = self.always + (((b"strict-transport-security", self.hsts),) if self.hsts else ())
        self.names = frozenset(k for k, _ in self.always_https)
        self.no_store = config.no_store_with_credentials
        self.override = config.override

    def on_response_sync(self, req: Request, resp: Response, ctx: Context) -> None:
        names = self.names
        for k, _ in resp.headers:
            if k in names:  # the upstream set some of them: one by one
                self._merge(req, resp)
                break
        else:  # the usual case: the upstream set none of them
            resp.headers.extend(self.always_https if req.scheme == "https" else self.always)
        # (a principal: the auth policy accepted a credential, wherever its scheme reads it from)
        if not self.no_store:
            return
        if ctx.principal is None and not req.carries_credentials():
            return
        cc = (resp.get_header(b"cache-control") or b"").lower()
        if not _not_shared(cc):
            resp.set_header(b"cache-control", b"no-store")
        for k, _ in resp.headers:
            if k in TARGETED_CACHE_CONTROL:  # a CDN obeys these instead of Cache-Control
                resp.headers = [(k, v) for k, v in resp.headers if k not in TARGETED_CACHE_CONTROL]
                break

    def _merge(self, req: Request, resp: Response) -> None:
        present = {k for k, _ in resp.headers}
        for name, value in self.always_https if req.scheme == "https" else self.always:
            if name not in present:
                resp.headers.append((name, value))
            elif self.override:
                resp.set_header(name, value)


# RFC 9213 targeted fields (and the older Surrogate-Control): a CDN that reads one ignores
# Cache-Control, so `no-store` there would not keep a credentialed response out of it (s9-rt)
TARGETED_CACHE_CONTROL = frozenset(
    (b"cdn-cache-control", b"surrogate-control", b"cloudflare-cdn-cache-control", b"akamai-cache-control")
)


def _not_shared(cc: bytes) -> bool:
    """Whether Cache-Control `cc` (lower case) keeps the response out of shared caches: an
    unqualified `no-store` or `private` directive. `private="set-cookie"` makes only the named
    fields private (RFC 9111 5.2.2.7): the rest may be stored by a shared cache (s9-rt)."""
    for part in cc.split(b","):
        directive = part.strip()
        if directive in (b"no-store", b"private"):
            return True
    return False
