"""CORS: the gateway answers preflights and owns the Access-Control-* response headers.

Origins are exact (`https://app.example.com`) or anchored patterns where `*` stands for one
DNS label (`https://*.example.com` matches `https://a.example.com`, never
`https://example.com.evil.com` nor `https://evilexample.com`). `null` passes only when listed.
"""

from __future__ import annotations

import re
from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from bastion.http import Request, Response, problem
from bastion.pipeline import Context, Policy, PolicyConfig

SIMPLE_METHODS = ("GET", "HEAD", "POST")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ORIGIN_SHAPE = re.compile(r"(https?)://([a-z0-9.\-\[\]:*]+?)(?::(\d{1,5}))?")


def canonical_origin(origin: str) -> str | None:
    """`scheme://host[:port]` in lower case with default ports dropped, or None if malformed."""
    if origin == "null":
        return "null"
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        return None
    if "%" in origin or "\\" in origin or "@" in origin:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def _pattern(origin: str) -> re.Pattern[str]:
    scheme, _, rest = origin.partition("://")
    host, _, port = rest.partition(":")
    labels = [(_LABEL if label == "*" else re.escape(label)) for label in host.lower().split(".")]
    default = "443" if scheme == "https" else "80"
    port_re = "" if not port or port == default else re.escape(":" + port)
    return re.compile(re.escape(scheme) + "://" + r"\.".join(labels) + port_re)


class CorsConfig(PolicyConfig):
    allow_origins: list[str] = Field(
        default_factory=list,
        description="Exact origins, patterns with `*` for one DNS label, `null`, or `*` for any.",
    )
    allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "HEAD", "POST"], description="Methods a preflight may ask for."
    )
    allow_headers: list[str] = Field(default_factory=list, description="Request headers a preflight may ask for.")
    expose_headers: list[str] = Field(default_factory=list, description="Response headers scripts may read.")
    allow_credentials: bool = Field(False, description="Send Access-Control-Allow-Credentials.")
    max_age: int = Field(600, ge=0, le=86400, description="Seconds a browser may cache a preflight.")
    block_disallowed: bool = Field(
        False, description="Refuse (403) actual requests from origins not allowed, not only omit ACAO."
    )

    def lint(self) -> list[tuple[str, str, str]]:
        out = []
        if "*" in self.allow_origins:
            out.append(("warning", "", "allow_origins '*': any web site may read these responses"))
        if "null" in self.allow_origins:
            out.append(
                (
                    "warning",
                    "",
                    "allow_origins lists 'null': sandboxed iframes and local files of any site send that origin",
                )
            )
        if self.allow_credentials:
            out += [
                ("warning", "", f"{o} is a plain-HTTP origin trusted with credentials")
                for o in self.allow_origins
                if o.startswith("http://")
            ]
        return out

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        for v in values:
            if v in ("*", "null"):
                continue
            m = _ORIGIN_SHAPE.fullmatch(v.lower())
            if not m or "*" in (m.group(3) or "") or v.endswith("."):
                raise ValueError(f"{v!r} is not an origin like https://app.example.com")
            host = m.group(2)
            if "*" in host:
                labels = host.split(".")
                if any("*" in label and label != "*" for label in labels):
                    raise ValueError(f"{v!r}: '*' must stand for a whole DNS label")
                if len([label for label in labels if label != "*"]) < 2:
                    raise ValueError(f"{v!r}: a pattern needs at least two fixed labels")
        return values

    @field_validator("allow_methods")
    @classmethod
    def _methods(cls, values: list[str]) -> list[str]:
        return [v.upper() for v in values]

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> CorsConfig:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError(
                "allow_origins '*' with allow_credentials: true would let any site read "
                "credentialed responses; list the origins instead"
            )
        return self


class OriginMatcher:
    """Whether an Origin is in an `allow_origins` list, by the policy's rules: origins compared in
    canonical form, `*` inside an entry one DNS label, `null` only when listed, `*` alone any
    origin but `null`. Shared with `bastion cors-audit`, which must judge origins the same way."""

    def __init__(self, allow_origins: list[str]) -> None:
        self.any_origin = "*" in allow_origins
        self.exact = {canonical_origin(o) or o for o in allow_origins if "*" not in o}
        self.patterns = tuple(_pattern(o) for o in allow_origins if "*" in o and o != "*")

    def allows(self, origin: str) -> bool:
        canon = canonical_origin(origin)
        if canon is None:
            return False
        if canon in self.exact:
            return True
        if canon == "null":
            return False
        return self.any_origin or any(p.fullmatch(canon) for p in self.patterns)


class Cors(Policy[CorsConfig]):
    name: ClassVar[str] = "cors"
    priority: ClassVar[int] = 800
    Config = CorsConfig
    CACHE_SIZE = 4096
    KEY_MAX = 512  # longer Origin values are not remembered

    def __init__(self, config: CorsConfig, env) -> None:
        super().__init__(config, env)
        self.matcher = OriginMatcher(config.allow_origins)
        self.any_origin = self.matcher.any_origin
        self.methods = frozenset(config.allow_methods)
        self.headers = frozenset(h.lower() for h in config.allow_headers)
        self.credentials = config.allow_credentials
        self.block = config.block_disallowed
        self.preflight_headers = [
            (b"access-control-allow-methods", ", ".join(config.allow_methods).encode()),
            (b"access-control-max-age", str(config.max_age).encode()),
        ]
        if config.allow_credentials:
            self.preflight_headers.append((b"access-control-allow-credentials", b"true"))
        self.expose = ", ".join(config.expose_headers).encode() if config.expose_headers else None
        self._decisions: dict[str, bool] = {}
        # Origin value (as sent) -> what the response phase appends to an answer whose upstream set
        # neither Vary nor access-control-* headers: (Vary: Origin, *the Access-Control-* headers)
        # for an allowed origin, () for one that is not: a function of this config and that value
        # alone (a reload builds a new policy)
        self._answers: dict[bytes, tuple[tuple[bytes, bytes], ...]] = {}

    def allowed(self, origin: str) -> bool:
        """The matcher's answer, remembered per Origin value (bounded): a browser sends the same
        few origins on every call, and parsing one (urlsplit, canonical form, patterns) was
        most of this policy's cost per request."""
        cache = self._decisions
        ok = cache.get(origin)
        if ok is None:
            ok = self.matcher.allows(origin)
            if len(cache) >= self.CACHE_SIZE:
                cache.clear()
            cache[origin] = ok
        return ok

    def _allow_origin_value(self, origin: bytes) -> bytes:
        return b"*" if self.any_origin and not self.credentials else origin

    def answer(self, origin: bytes) -> tuple[tuple[bytes, bytes], ...]:
        """The Access-Control-* headers an actual request from `origin` is answered with; () when
        the origin is not allowed."""
        return self._appended(origin)[1:]

    def _appended(self, origin: bytes) -> tuple[tuple[bytes, bytes], ...]:
        """`_answers`' entry for `origin`, made when missing. Remembered per value (bounded in
        number and length: clients choose them)."""
        made = self._answers.get(origin)
        if made is None:
            made = self._answer_uncached(origin)
            if made:
                made = (_VARY_ORIGIN, *made)
            if len(origin) <= self.KEY_MAX:
                if len(self._answers) >= self.CACHE_SIZE:
                    self._answers.clear()
                self._answers[origin] = made
        return made

    def _answer_uncached(self, origin: bytes) -> tuple[tuple[bytes, bytes], ...]:
        if not self.matcher.allows(origin.decode("latin-1")):
            return ()
        out = [(b"access-control-allow-origin", self._allow_origin_value(origin))]
        if self.credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        if self.expose:
            out.append((b"access-control-expose-headers", self.expose))
        return tuple(out)

    def on_request_sync(self, req: Request, ctx: Context) -> Response | None:
        # (`req.header`, inline when the request's header map is built: one call less)
        m = req._header_map
        origin = req.header(b"origin") if m is None else m.get(b"origin")
        if origin is None:
            return None
        made = self._answers.get(origin)  # (`_appended`, its cache read here: one call less)
        if made is None:
            made = self._appended(origin)
        if made:
            ctx.values["cors.answer"] = made  # for the response phase (not set: no ACAO)
            if req.method != "OPTIONS":
                return None  # (the usual request: an allowed origin, not a preflight)
        elif req.method != "OPTIONS" and not self.block:
            return None
        if req.method == "OPTIONS" and (acrm := req.header(b"access-control-request-method")) is not None:
            return self._preflight(req, origin, bool(made), acrm)
        if not made and self.block:
            return problem(
                403,
                "cors-origin-forbidden",
                "this origin may not call this API",
                request_id=req.request_id,
                headers=[(b"vary", b"Origin")],
            )
        return None

    def _preflight(self, req: Request, origin: bytes, ok: bool, acrm: bytes) -> Response:
        vary = [(b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers")]
        if not ok:
            return problem(
                403,
                "cors-origin-forbidden",
                "preflight from an origin that is not allowed",
                request_id=req.request_id,
                headers=vary,
            )
        method = acrm.decode("latin-1").strip().upper()
        if method not in self.methods:
            return problem(
                403,
                "cors-method-forbidden",
                f"method {method} is not allowed cross-origin",
                request_id=req.request_id,
                headers=vary,
            )
        requested = req.header(b"access-control-request-headers") or b""
        names = [h.strip().lower() for h in requested.decode("latin-1").split(",") if h.strip()]
        refused = [h for h in names if h not in self.headers]
        if refused:
            return problem(
                403,
                "cors-header-forbidden",
                "headers not allowed cross-origin: " + ", ".join(refused),
                request_id=req.request_id,
                headers=vary,
            )
        headers = [(b"access-control-allow-origin", self._allow_origin_value(origin)), *vary, *self.preflight_headers]
        if names:
            headers.append((b"access-control-allow-headers", ", ".join(names).encode()))
        return Response(204, headers, stopped_by=self.name, reason="cors preflight")

    def on_response_sync(self, req: Request, resp: Response, ctx: Context) -> None:
        if resp.stopped_by == self.name:
            return  # our own answers (preflights, refusals) are complete as they are
        # The gateway owns CORS on this route: whatever the upstream said is dropped.
        for k, _ in resp.headers:
            if k == b"vary" or (k[:1] == b"a" and k.startswith(b"access-control-")):  # (a call only for a-names)
                self._merge(resp, ctx)
                return
        # the usual answer: the upstream set neither; Vary: Origin and the request phase's headers
        resp.headers.extend(ctx.values.get("cors.answer", _ONLY_VARY))

    def _merge(self, resp: Response, ctx: Context) -> None:
        """The response phase for an answer whose upstream set Vary or access-control-* headers."""
        vary = strip = False
        for k, _ in resp.headers:
            if k == b"vary":
                vary = True
            elif k.startswith(b"access-control-"):
                strip = True
        if strip:
            resp.headers = [(k, v) for k, v in resp.headers if not k.startswith(b"access-control-")]
        if vary:
            _add_vary(resp, b"Origin")
        else:
            resp.headers.append(_VARY_ORIGIN)
        made = ctx.values.get("cors.answer")  # set by the request phase for an allowed Origin
        if made:
            resp.headers.extend(made[1:])  # (after its own Vary: Origin)


_VARY_ORIGIN = (b"vary", b"Origin")
_ONLY_VARY = (_VARY_ORIGIN,)


def _add_vary(resp: Response, token: bytes) -> None:
    for i, (k, v) in enumerate(resp.headers):
        if k == b"vary":
            existing = [t.strip().lower() for t in v.split(b",")]
            if token.lower() not in existing and b"*" not in existing:
                resp.headers[i] = (k, v + b", " + token)
            return
    resp.headers.append((b"vary", token))
