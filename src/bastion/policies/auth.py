"""Authentication and scopes: API keys, JWT bearer (static keys or JWKS), OAuth2 introspection.

A route's `require` is OpenAPI's `security`: a list of alternatives (any one suffices), each a
map of scheme name to the scopes it must carry (all of them). `require: []` is public. A
credential that is presented and refused answers 401 `invalid_token` even when another
alternative would not need it; missing scopes answer 403 `insufficient_scope`.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Literal
from urllib.parse import parse_qsl, quote

from pydantic import Field, model_validator

from bastion.auth.errors import AuthError
from bastion.auth.revocation import revocation_store
from bastion.auth.schemes import (  # noqa: F401  (scheme models are part of this policy's config)
    ApiKeys,
    ApiKeyScheme,
    Authenticator,
    Introspection,
    IntrospectionScheme,
    Jwt,
    JwtKeyConfig,
    JwtScheme,
    MtlsScheme,
    Principal,
    Scheme,
    StrictModel,
    build_authenticator,
)
from bastion.http import Request, Response, problem
from bastion.pipeline import SECRET_QUERY_PARAMS, Context, Policy, PolicyConfig

log = logging.getLogger("bastion.auth")


class AuthConfig(PolicyConfig):
    schemes: dict[str, Scheme] = Field(default_factory=dict, description="Named authentication schemes.")
    require: list[dict[str, list[str]]] | None = Field(
        None,
        description="Alternatives (OR) of {scheme: [scopes]} (AND); [] = public; "
        "unset = any one scheme, with `scopes`.",
    )
    scopes: list[str] = Field(default_factory=list, description="With `require` unset: scopes needed (all).")
    allow_query_key: bool = Field(False, description="Accept an API key in the query parameter on this route.")
    forward_credentials: bool = Field(True, description="Pass Authorization / API key on to the upstream.")
    revocation_store: str = Field("memory", description="'memory' or a Redis URL (share it with every gateway).")
    revocation_fail: Literal["closed", "open"] = Field(
        "closed", description="When the revocation store cannot be reached: refuse (503) or accept the credential."
    )
    realm: str = "bastion"

    @model_validator(mode="after")
    def _refs(self) -> AuthConfig:
        # A route's block alone may name schemes defined in the defaults; the merged config
        # (validated again when the gateway builds the route) has them all.
        if self.schemes:
            for alt in self.require or []:
                for name in alt:
                    if name not in self.schemes:
                        raise ValueError(f"require names scheme {name!r}, which is not in schemes")
        return self


class Auth(Policy[AuthConfig]):
    name: ClassVar[str] = "auth"
    priority: ClassVar[int] = 700
    Config = AuthConfig

    def __init__(self, config: AuthConfig, env) -> None:
        super().__init__(config, env)
        for alt in config.require or []:
            for name in alt:
                if name not in config.schemes:
                    raise ValueError(f"require names scheme {name!r}, which is not in schemes")
        prefixes = tuple(k.prefix for k in config.schemes.values() if isinstance(k, ApiKeyScheme) and k.bearer)
        self.schemes: dict[str, Authenticator] = {
            name: build_authenticator(name, sc, env.config_dir, prefixes) for name, sc in config.schemes.items()
        }
        if config.require is None:
            needed = frozenset(config.scopes)
            self.require = [{name: needed} for name in self.schemes]
        else:
            self.require = [{k: frozenset(v) for k, v in alt.items()} for alt in config.require]
        self.public = config.require == [] or not self.require
        self.allow_query = config.allow_query_key
        self.forward = config.forward_credentials
        self.revocation_url = config.revocation_store
        self.revocation_fail = config.revocation_fail
        self.credential_headers = {b"authorization"} | {
            s.header for s in self.schemes.values() if isinstance(s, ApiKeys)
        }
        self.scheme_headers = {
            name: ({s.header, b"authorization"} if isinstance(s, ApiKeys) else {b"authorization"})
            for name, s in self.schemes.items()
        }
        self.query_params = {s.query_param for s in self.schemes.values() if isinstance(s, ApiKeys) and s.query_param}
        self.secret_query = frozenset(p.lower() for p in self.query_params)  # for the log's redaction
        self.cookie_names = {s.cookie for s in self.schemes.values() if isinstance(s, ApiKeys) and s.cookie}
        bearer = any(isinstance(s, (Jwt, Introspection)) for s in self.schemes.values())
        self.challenge = f'Bearer realm="{config.realm}"' if bearer else f'ApiKey realm="{config.realm}"'
        self.failures: dict[str, int] = {}

    def _refuse(self, req: Request, status: int, type_: str, detail: str, challenge: str) -> Response:
        self.failures[detail] = self.failures.get(detail, 0) + 1
        resp = problem(
            status, type_, detail, request_id=req.request_id, headers=[(b"www-authenticate", challenge.encode())]
        )
        resp.reason = detail
        return resp

    def _invalid(self, req: Request, ctx: Context, reason: str, scheme: str | None = None) -> Response:
        ctx.log_fields["auth"] = {"scheme": scheme, "refused": reason} if scheme else {"refused": reason}
        return self._refuse(
            req, 401, "invalid-token", reason, f'{self.challenge}, error="invalid_token", error_description="{reason}"'
        )

    def _insufficient(self, req: Request, ctx: Context, missing: set[str]) -> Response:
        scope = " ".join(sorted(missing))
        ctx.log_fields["auth"] = {"refused": "insufficient_scope", "missing": sorted(missing)}
        return self._refuse(
            req,
            403,
            "insufficient-scope",
            f"missing scopes: {scope}",
            f'{self.challenge}, error="insufficient_scope", scope="{scope}"',
        )

    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        if self.secret_query and req.query:  # the keys' own parameters are never logged in clear
            ctx.values[SECRET_QUERY_PARAMS] = ctx.values.get(SECRET_QUERY_PARAMS, frozenset()) | self.secret_query
        if ctx.principal is not None and ctx.principal.scheme == "session":
            return self._session(req, ctx)
        credentials = self._extract(req)
        if not credentials and req.credential_later is not None:
            # a GraphQL WebSocket handshake with no credential: everything before this policy has
            # let it through, so the socket is accepted now and the credential read from its
            # connection_init (gateway/websocket.py); nothing the gateway can refuse without it
            # is left to an accepted socket
            later = await req.credential_later(req)
            if isinstance(later, Response):
                return later
            if later is not None:
                req.headers = [*req.headers, (b"authorization", later.encode("utf-8", "replace"))]
                req._header_map = None
                credentials = self._extract(req)
        ambiguous = self._ambiguous(req, credentials)
        if ambiguous is not None:
            ctx.log_fields["auth"] = {"refused": ambiguous}
            self.failures[ambiguous] = self.failures.get(ambiguous, 0) + 1
            return problem(400, "ambiguous-credentials", ambiguous, request_id=req.request_id)
        checked = await self._authenticate(req, credentials)
        if isinstance(checked, Response):
            return checked
        ok, refused = checked
        if refused:
            if not self.public:
                return self._invalid(req, ctx, refused[0][1], refused[0][0])
            # a public route passes on without them, but the upstream must not see credentials
            # the gateway refused: it might trust them
            for name, _ in refused:
                ctx.drop_request_headers.update(self.scheme_headers[name])
                scheme = self.schemes[name]
                if isinstance(scheme, ApiKeys):  # its query parameter and cookie too (s9-rt)
                    _take_out(
                        req,
                        {scheme.query_param} if scheme.query_param else set(),
                        {scheme.cookie} if scheme.cookie else set(),
                    )
        chosen = self._choose(req, ctx, ok)
        if isinstance(chosen, Response):
            return chosen
        if chosen is not None:
            try:
                ctx.authenticate(chosen, self.env.principal_headers)
            except ValueError as exc:  # a claim that cannot become a header value
                return self._invalid(req, ctx, str(exc))
        if not self.forward:
            self._withhold_credentials(req, ctx)
        return None

    def _session(self, req: Request, ctx: Context) -> Response | None:
        """The login policy authenticated a browser session: only the scopes are left to check."""
        if self.public:
            return None
        have = ctx.principal.scopes if ctx.principal is not None else frozenset()
        if any(set().union(*alt.values()) <= have for alt in self.require):
            return None
        return self._insufficient(req, ctx, min((set().union(*alt.values()) - have for alt in self.require), key=len))

    def _extract(self, req: Request) -> dict[str, str]:
        """The credential each scheme finds in `req`, by scheme name, read once per request
        (schemes may share one: a bearer value is both a JWT candidate and an API key's)."""
        found = {name: scheme.extract(req, self.allow_query) for name, scheme in self.schemes.items()}
        return {name: credential for name, credential in found.items() if credential is not None}

    async def _authenticate(
        self, req: Request, credentials: dict[str, str]
    ) -> tuple[dict[str, Principal], list[tuple[str, str]]] | Response:
        """Every presented credential checked (signature or lookup, then revocation): the
        principals by scheme and the refusals (scheme, reason); a 503 when revocations cannot be
        checked and the route fails closed."""
        ok: dict[str, Principal] = {}
        refused: list[tuple[str, str]] = []
        for name, credential in credentials.items():
            scheme = self.schemes[name]
            try:
                principal = await scheme.authenticate(credential)
            except AuthError as exc:
                refused.append((name, exc.reason))
                continue
            if scheme.kind != "mtls" and (principal.jti is not None or principal.subject):
                store = revocation_store(self.revocation_url)
                try:
                    revoked = await store.is_revoked(
                        principal.jti, (principal.subject or None) if principal.iat is not None else None, principal.iat
                    )
                except Exception as exc:  # Redis down: the configured fail mode, never a 500
                    log.warning("revocation store unreachable (%s)", type(exc).__name__)
                    if self.revocation_fail == "closed":
                        return problem(
                            503,
                            "revocation-unavailable",
                            "credentials cannot be checked right now",
                            request_id=req.request_id,
                            headers=[(b"retry-after", b"1")],
                        )
                    revoked = False
                if revoked:
                    refused.append((name, "token revoked"))
                    continue
            ok[name] = principal
        return ok, refused

    def _choose(self, req: Request, ctx: Context, ok: dict[str, Principal]) -> Principal | Response | None:
        """The principal of the first requirement alternative the credentials satisfy; on a
        public route whichever authenticated (or None); else 401 (nothing usable) or 403 (the
        closest alternative's missing scopes)."""
        if self.public:
            return next(iter(ok.values()), None)
        missing: set[str] | None = None
        for alt in self.require:
            if all(s in ok for s in alt):
                lacking = set().union(*(alt[s] - ok[s].scopes for s in alt))
                if not lacking:
                    return ok[next(iter(alt))]
                if missing is None or len(lacking) < len(missing):
                    missing = lacking
        if missing is None:
            ctx.log_fields["auth"] = {"refused": "no credentials"}
            return self._refuse(req, 401, "unauthenticated", "authentication required", self.challenge)
        return self._insufficient(req, ctx, missing)

    def _withhold_credentials(self, req: Request, ctx: Context) -> None:
        """`forward_credentials: false`: the upstream gets neither the headers nor the query key."""
        ctx.drop_request_headers.update(self.credential_headers)
        _take_out(req, self.query_params, self.cookie_names)

    def _ambiguous(self, req: Request, credentials: dict[str, str]) -> str | None:
        """Why the request's credentials (`credentials`: what `_extract` found) are ambiguous (a
        header sent twice, one scheme's credential in two places, two schemes' credentials), or None. Two readers — this policy and the upstream — could
        otherwise each take a different one: the first checked here, the last trusted there."""
        counts: dict[bytes, int] = {}
        names = self.credential_headers
        for k, _ in req.headers:
            if 0x5F in k:  # "_": WSGI/CGI servers read X_API_Key as X-API-Key: the same header twice
                k = k.replace(b"_", b"-")
                if k in names:
                    # alone, the gateway would not read it (so neither check nor drop it as refused)
                    # while such an upstream takes it for the credential (s9-rt)
                    return f"the {k.decode()} header is spelled with '_'"
            if k in names:
                counts[k] = counts.get(k, 0) + 1
        for k, n in counts.items():
            if n > 1:
                return f"the {k.decode()} header is sent more than once"
        if (
            req.query
            and req.query.find(b"access_token") >= 0
            and any(k == "access_token" for k, _ in parse_qsl(req.query.decode("latin-1"), keep_blank_values=True))
        ):
            # RFC 6750 2.3: an upstream may take a bearer token from the query, which no scheme
            # here reads: the gateway would pass a credential it never checked
            return "a bearer token in the query (access_token) is not accepted here: send it in Authorization"
        for scheme in self.schemes.values():
            why = scheme.ambiguous(req, self.allow_query)
            if why is not None:
                return why
        # scheme -> its credential (schemes may share one header); a client certificate is not
        # something the upstream could read instead
        presented = {name: c for name, c in credentials.items() if self.schemes[name].kind != "mtls"}
        # two different credentials (a token and an API key) where no alternative asks for both:
        # the gateway would pick one and the upstream might trust the other
        if len(set(presented.values())) > 1 and not any(all(n in alt for n in presented) for alt in self.require):
            return "credentials of more than one scheme (" + ", ".join(presented) + ") where one is expected"
        return None


def _take_out(req: Request, query_params: set[str], cookie_names: set[str]) -> None:
    """`req` without the query parameters `query_params` and the cookies `cookie_names` (what
    the upstream is sent: a credential withheld, or refused on a public route)."""
    if query_params and req.query:
        pairs = [
            (k, v) for k, v in parse_qsl(req.query.decode("latin-1"), keep_blank_values=True) if k not in query_params
        ]
        req.query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs).encode()
    if cookie_names and any(k == b"cookie" for k, _ in req.headers):
        # an API key read from a cookie (`cookie:` of an api_key scheme): the Cookie header goes
        # on without that cookie (s9-rt: it reached the upstream)
        req.headers = _without_cookies(req.headers, cookie_names)
        req._header_map = None
        req._cookies = None


def _without_cookies(headers: list[tuple[bytes, bytes]], names: set[str]) -> list[tuple[bytes, bytes]]:
    """`headers` with the cookies named `names` taken out of every Cookie header (names trimmed,
    as `parse_cookies` reads them); a Cookie header left empty is dropped."""
    out: list[tuple[bytes, bytes]] = []
    for k, v in headers:
        if k == b"cookie":
            kept = [p for p in v.split(b";") if p.partition(b"=")[0].strip().decode("latin-1") not in names]
            v = b";".join(kept).strip()
            if not v.strip(b"; "):
                continue
        out.append((k, v))
    return out
