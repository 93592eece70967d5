"""The gateway config: one pydantic model per section, validated when the file loads."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from bastion.http import check_networks
from bastion.policies import REGISTRY
from bastion.principal import PrincipalHeaders
from bastion.tokens.config import TokenServiceConfig

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TlsConfig(Strict):
    cert: str = Field(description="PEM certificate chain file.")
    key: str = Field(description="PEM private key file.")
    client_ca: str | None = Field(None, description="PEM CA bundle for client certificates (mTLS).")
    client_auth: Literal["optional", "required"] = Field(
        "optional",
        description="With client_ca: ask for a certificate (optional: the `mtls` auth scheme "
        "decides per route) or refuse handshakes without one (required).",
    )


class ListenerConfig(Strict):
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8080, ge=0, le=65535, description="Port to bind (0 picks a free one).")
    tls: TlsConfig | None = Field(None, description="Terminate TLS with this certificate and key.")
    allow_plaintext: bool = Field(
        False, description="Allow a non-loopback listener without TLS (e.g. behind a TLS proxy)."
    )
    client_body_timeout: float = Field(
        30.0, gt=0, description="Seconds to wait for each piece of a request body (408 after)."
    )
    client_header_timeout: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Seconds for a whole request head (request line and headers) to arrive, counted from the "
        "connection (first request; for TLS, from the end of the handshake, which has the same limit) or from "
        "the first byte after a keep-alive wait. Trickled bytes do not extend it. 408 (or a silent close when "
        "nothing was sent) after.",
    )
    keepalive_timeout: float = Field(
        15.0, gt=0, le=3600, description="Seconds an idle keep-alive connection is kept between requests."
    )
    client_send_timeout: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Seconds a client may leave a response unread (the gateway's write buffer full) before the "
        "connection is dropped (nginx send_timeout).",
    )
    max_connections: int | None = Field(
        None,
        ge=1,
        description="Open connections this listener holds at once; more are refused at once (503, closed). "
        "Default: half of the process's open-file limit, shared between the listeners.",
    )
    max_connections_per_ip: int | None = Field(
        256,
        ge=1,
        description="Open connections from one client address (IPv6: one /64) at once; more are refused (503, "
        "closed). Counted by TCP peer, not X-Forwarded-For: behind a load balancer or proxy raise it or set null.",
    )
    max_header_count: int = Field(100, ge=1, le=10000, description="Header lines a request may have (431 after).")
    max_header_bytes: int = Field(
        32768,
        ge=1024,
        le=1048576,
        description="Bytes a request head (request line and all header lines) may take (431 after).",
    )
    server: Literal["native", "uvicorn"] = Field(
        "native",
        description="The listener's HTTP/1.1 server layer: `native` (bastion's own protocol on httptools, "
        "the default) or `uvicorn` (uvicorn's httptools protocol under the same edge limits, as before "
        "session 6; kept as a fallback).",
    )

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class TimeoutsConfig(Strict):
    connect: float = Field(5.0, gt=0, description="Seconds to open a connection to the upstream.")
    read: float = Field(30.0, gt=0, description="Seconds to wait for each read from the upstream.")
    total: float = Field(60.0, gt=0, description="Seconds for the whole upstream exchange.")


class UpstreamConfig(Strict):
    urls: list[str] = Field(min_length=1, description="Base URLs, used round-robin.")
    timeouts: TimeoutsConfig = Field(
        default_factory=TimeoutsConfig, description="Upstream timeouts (502/504 when exceeded)."
    )
    max_connections: int = Field(200, ge=1, description="Pooled connections per gateway process.")
    idle_timeout: float = Field(
        60.0, gt=0, description="Seconds an idle pooled connection to the upstream is kept for reuse."
    )
    unsafe_reuse_within: float = Field(
        1.0,
        ge=0,
        description="A request that cannot be replayed (POST, PATCH, a streamed body) reuses a pooled "
        "connection only if it has been idle at most this many seconds (0: always a new one). An older "
        "one may be closing at the upstream's keep-alive timeout (gunicorn 2 s, uvicorn and Node.js "
        "5 s), and such a request cannot be retried: keep this below that timeout.",
    )
    preserve_host: bool = Field(False, description="Forward the client's Host instead of the upstream's.")
    ca_file: str | None = Field(
        None, description="PEM bundle of CAs trusted for https upstreams (default: the system's)."
    )
    tls_verify: bool = Field(
        True,
        description="Verify https upstreams' certificates. Turning this off is logged "
        "loudly at every start and reported by `bastion check`.",
    )

    @field_validator("urls")
    @classmethod
    def _urls(cls, values: list[str]) -> list[str]:
        out = []
        for v in values:
            m = re.fullmatch(r"(https?)://([^/?#\s]+)(/[^?#\s]*)?", v)
            if not m:
                raise ValueError(f"{v!r} is not an http(s) base URL like http://10.0.0.5:9000")
            out.append(v.rstrip("/"))
        return out


def _policies_model(name: str) -> type[BaseModel]:
    fields: dict[str, Any] = {
        pname: (cls.Config | None, Field(None, description=(cls.__doc__ or "").strip() or None))
        for pname, cls in REGISTRY.items()
    }
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


PoliciesConfig = _policies_model("PoliciesConfig")


class WebSocketConfig(Strict):
    """A route's WebSocket settings (docs/websockets.md). `websocket: false` refuses upgrades."""

    enabled: bool = Field(True, description="Proxy WebSocket upgrades on this route (false: 403 `websocket-refused`).")
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins (`https://app.example.com`, or `https://*.example.com` for one DNS label, as in "
        "`cors`) allowed to open a socket that carries cookies; the handshake's own host (http or https) is "
        "always allowed. Others get 403 `cross-site-websocket` (cross-site WebSocket hijacking: browsers send "
        "cookies on WebSocket handshakes and CORS does not apply).",
    )
    check_origin: Literal["cookies", "always", "never"] = Field(
        "cookies",
        description="When the Origin must be allowed: `cookies` (a handshake that carries a Cookie and no "
        "Authorization header other than Basic/Digest/Negotiate/NTLM; a token subprotocol does not exempt "
        "it), `always`, or `never`.",
    )
    max_message_bytes: int = Field(1 << 20, ge=1, description="Largest message either way (close 1009 above).")
    messages_per_second: str | None = Field(
        "100/second burst 200",
        description="Client messages per connection (a rate as in `rate_limit`; close 1008 above).",
    )
    principal_messages: str | None = Field(
        None,
        description="Client messages per principal over all its sockets (a rate; the rate-limit library, "
        "`store` below); the client IP for anonymous sockets.",
    )
    store: str = Field("memory", description="Rate-limit store for `principal_messages`: 'memory' or a Redis URL.")
    idle_timeout: float = Field(300.0, gt=0, description="Seconds without a message either way before close 1001.")
    max_lifetime: float = Field(3600.0, gt=0, description="Seconds a socket may stay open (close 1001).")
    max_per_principal: int = Field(
        20, ge=1, description="Concurrent sockets per principal (the client IP when anonymous) per process; 429 above."
    )
    expiry_close_code: Literal[4401, 1008] = Field(
        4401, description="Close code when the credential's `exp` passes or its token is revoked."
    )
    revocation_check: float = Field(
        30.0, gt=0, description="Seconds between revocation checks of the socket's token (when it has a `jti`)."
    )
    connection_init_timeout: float = Field(
        10.0,
        gt=0,
        description="GraphQL clients without a credential in the handshake: seconds to wait for "
        "`connection_init` (whose payload may carry the token).",
    )

    @field_validator("messages_per_second", "principal_messages")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is not None:
            from bastion.ratelimit import parse_rate

            parse_rate(v)
        return v


class RouteConfig(Strict):
    name: str | None = Field(None, description="Name used in logs and metrics (default: the path).")
    path: str | None = Field(
        None,
        description="Path pattern: literal segments, `{param}`, and a final `*`. "
        "Required unless `openapi` is set (then: the prefix whose undocumented "
        "requests are refused, default the spec's base path + `/*`).",
    )
    openapi: str | None = Field(
        None,
        description="An OpenAPI 3.0/3.1 document (YAML or JSON, relative to the "
        "config file): each operation becomes a route with its security, "
        "validation and `x-bastion-*` policies.",
    )
    base_path: str | None = Field(
        None,
        description="With `openapi`: the prefix of the spec's paths (default: the path of its first `servers` URL).",
    )
    passthrough_undocumented: bool = Field(
        False,
        description="With `openapi`: forward requests to paths "
        "and methods the spec does not declare instead of refusing them.",
    )
    default_security: Literal["require", "public"] = Field(
        "require",
        description="With `openapi`: what an operation gets when neither it nor the spec declares "
        "`security` (public in OpenAPI's semantics): `require` a credential of any scheme in "
        "`policies.auth.schemes` (fail closed), or make it `public`. `security: []` in the spec "
        "marks one operation public; `bastion check` lists the operations concerned.",
    )
    methods: list[str] | None = Field(None, description="Allowed methods (default: all).")
    host: str | None = Field(None, description="Match only this Host (`*.example.com` allowed).")
    upstream: str | None = Field(
        None,
        description="Name of an entry in `upstreams` (required for "
        "`bastion serve`; unused by the ASGI middleware, whose app is the upstream).",
    )
    case_sensitive: bool | None = Field(
        None, description="Match literal segments case-sensitively (default: `edge.case_sensitive_paths`)."
    )
    policies: PoliciesConfig = Field(  # type: ignore[valid-type]
        default_factory=PoliciesConfig, description="Per-route policy settings over the defaults."
    )
    websocket: WebSocketConfig = Field(
        default_factory=WebSocketConfig,
        description="WebSocket upgrades on this route (`false`: refused); docs/websockets.md.",
    )

    @field_validator("websocket", mode="before")
    @classmethod
    def _websocket(cls, v: Any) -> Any:
        return {"enabled": v} if isinstance(v, bool) else v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith("/"):
            raise ValueError("a route path starts with '/'")
        segs = v.strip("/").split("/") if v != "/" else []
        for i, seg in enumerate(segs):
            if seg == "*":
                if i != len(segs) - 1:
                    raise ValueError("'*' may only be the last segment")
            elif "{" in seg or "}" in seg:
                if not _PARAM.fullmatch(seg):
                    raise ValueError(f"segment {seg!r}: a parameter is a whole segment like {{id}}")
            elif seg in ("", ".", "..") or "%" in seg or ";" in seg or "\\" in seg:
                raise ValueError(f"segment {seg!r} can never match a normalised path")
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        out = [m.upper() for m in values]
        for m in out:
            if m not in HTTP_METHODS:
                raise ValueError(f"unknown HTTP method {m!r}")
        return out

    @model_validator(mode="after")
    def _path_or_spec(self) -> RouteConfig:
        if self.path is None and self.openapi is None:
            raise ValueError("a route needs a path (or an openapi spec)")
        if self.openapi is None and (
            self.base_path is not None or self.passthrough_undocumented or self.default_security != "require"
        ):
            raise ValueError("base_path, passthrough_undocumented and default_security apply to routes with openapi")
        if self.base_path is not None and (
            not self.base_path.startswith("/") or "{" in self.base_path or "*" in self.base_path
        ):
            raise ValueError("base_path is a literal prefix starting with '/'")
        return self


# Edge-owned headers a client must not set. Rewrite/override headers ask a server to act on another
# URL or method than the request line's (IIS/Symfony/Laravel `X-Original-URL`, `X-Rewrite-URL`,
# Azure's `X-MS-Original-URL`, Envoy's `X-Envoy-Original-Path`, Spring's `X-Forwarded-Prefix`,
# Next.js internal routing incl. `X-Middleware-Subrequest` (CVE-2025-29927), the method overrides
# of Rails, Express, ASP.NET, Google APIs). Client-address, host and scheme aliases (`True-Client-IP`,
# `CF-Connecting-IP`, `X-Forwarded-Ssl`, ...) are what CDNs and proxies set; from a client they are
# spoofing (the gateway's own `X-Forwarded-*`/`Forwarded` carry the real values). An upstream that
# honours one would act on a value the gateway never routed or checked.
OVERRIDE_HEADERS = (
    "x-original-url",
    "x-rewrite-url",
    "x-override-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-forwarded-method",
    "x-ms-original-url",
    "x-envoy-original-path",
    "x-original-path",
    "x-rewrite-path",
    "x-request-uri",
    "x-invoke-path",
    "x-invoke-query",
    "x-invoke-output",
    "x-middleware-subrequest",
    "x-matched-path",
    "x-now-route-matches",
    # client address, host and scheme aliases
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "x-custom-ip-authorization",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "client-ip",
    "x-forwarded",
    "forwarded-for",
    "x-forwarded-server",
    "x-forwarded-port",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-url-scheme",
    "front-end-https",
    "x-original-host",
    "x-host",
    "wl-proxy-client-ip",
    "proxy-client-ip",
    "x-original-forwarded-for",
    "x-proxyuser-ip",
    # identity set by authenticating proxies and platforms (oauth2-proxy, Apache/
    # nginx auth modules, ASP.NET Core certificate forwarding, Envoy's XFCC)
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-access-token",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-access-token",
    "x-remote-user",
    "remote-user",
    "x-webauth-user",
    "x-forwarded-client-cert",
    "x-arr-clientcert",
    "x-client-cert",
    "ssl-client-cert",
    "x-ssl-client-cert",
    "x-client-verify",
    "x-ssl-client-verify",
    # a WSGI prefix (Flask's ReverseProxied recipe rewrites the path by it)
    "x-script-name",
)


class EdgeConfig(Strict):
    case_sensitive_paths: bool = Field(
        False,
        description="Match literal route segments case-sensitively. Off by default: many servers match "
        "case-insensitively, so `/Admin` gets the policies of `/admin` (a route may set `case_sensitive`).",
    )
    forward_override_headers: list[str] = Field(
        default_factory=list,
        description="Rewrite/override headers (" + ", ".join(OVERRIDE_HEADERS) + ") that "
        "may reach the upstream; all others of that family are dropped.",
    )
    method_override: bool = Field(
        False,
        description="Honour X-HTTP-Method-Override / X-HTTP-Method / X-Method-Override on POST: the "
        "overridden method is routed, checked and forwarded (the header itself is dropped).",
    )

    @field_validator("forward_override_headers")
    @classmethod
    def _known(cls, values: list[str]) -> list[str]:
        out = [v.lower() for v in values]
        for v in out:
            if v not in OVERRIDE_HEADERS:
                raise ValueError(f"{v!r} is not one of the override headers ({', '.join(OVERRIDE_HEADERS)})")
        return out


class AdminConfig(Strict):
    host: str = Field("127.0.0.1", description="Admin listener address (keep it private).")
    port: int = Field(9901, ge=0, le=65535, description="Admin listener port (0 picks a free one).")
    token: str | None = Field(
        None,
        description="Bearer token for /admin/* (use ${ENV}); without it the "
        "admin API is off and only /healthz, /readyz and /metrics answer.",
    )


class GatewayConfig(Strict):
    """bastion gateway configuration."""

    listeners: list[ListenerConfig] = Field(
        default_factory=lambda: [ListenerConfig()], description="Where the gateway listens."
    )
    upstreams: dict[str, UpstreamConfig] = Field(default_factory=dict, description="Named upstream services.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs of proxies whose X-Forwarded-For and X-Forwarded-Proto are believed.",
    )
    policies: PoliciesConfig = Field(  # type: ignore[valid-type]
        default_factory=PoliciesConfig, description="Default policy settings for every route."
    )
    routes: list[RouteConfig] = Field(default_factory=list, description="Routes, most specific wins.")
    principal_headers: PrincipalHeaders = Field(
        default_factory=PrincipalHeaders,
        description="Headers that carry the authenticated principal to the "
        "upstream (set by the auth and login policies; the client's own are always dropped).",
    )
    edge: EdgeConfig = Field(
        default_factory=EdgeConfig,
        description="How requests are read at the edge: path case, rewrite and method-override headers.",
    )
    admin: AdminConfig | None = Field(None, description="The admin listener: health, metrics, admin API.")
    token_service: TokenServiceConfig | None = Field(
        None, description="Serve the token service (users, tokens, API keys, OAuth 2.0) under its prefix."
    )
    workers: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Worker processes sharing the listeners (`bastion serve --workers` overrides it). "
        "Unset: one per usable core, or 1 when a store keeps its state in one process's memory "
        "(a `memory` rate-limit, revocation or session store; the rate-limit policy's default store is "
        "`memory`).",
    )
    allow_per_worker_state: bool = Field(
        False,
        description="Run several workers although a rate-limit or revocation store is `memory`: each "
        "worker then keeps its own counters and revocations (a limit of N allows up to N per worker), "
        "and the default worker count becomes every core. "
        "A Redis store is the answer that keeps limits exact.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        return check_networks(values)


def cross_checks(cfg: GatewayConfig, *, proxy: bool = True) -> list[tuple[tuple[Any, ...], str]]:
    """Checks that span sections, each with the location of the offending key. `proxy`: the
    config drives the gateway (every route needs an upstream), not the middleware."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    known = ", ".join(sorted(cfg.upstreams)) or "none defined"
    seen: set[tuple[Any, ...]] = set()
    for i, route in enumerate(cfg.routes):
        if route.upstream is None:
            if proxy:
                problems.append((("routes", i, "upstream"), "a route needs an upstream"))
        elif route.upstream not in cfg.upstreams:
            problems.append((("routes", i, "upstream"), f"upstream {route.upstream!r} is not in upstreams ({known})"))
        if route.path is None:
            continue  # an openapi route: its operations are checked when the spec is compiled
        key = (route.host, route.path.rstrip("/") or "/", tuple(route.methods or ()))
        if key in seen:
            problems.append(
                (("routes", i, "path"), f"route {route.path!r} is declared twice for the same host and methods")
            )
        seen.add(key)
    return problems
