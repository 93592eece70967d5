"""Authentication and scopes: API keys, JWT bearer (static keys or JWKS), OAuth2 introspection.

A route's `require` is OpenAPI's `security`: a list of alternatives (any one suffices), each a
map of scheme name to the scopes it must carry (all of them). `require: []` is public. A
credential that is presented and refused answers 401 `invalid_token` even when another
alternative would not need it; missing scopes answer 403 `insufficient_scope`.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Union
from urllib.parse import parse_qsl, quote

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bastion.auth.apikeys import ApiKeyRecord, StaticApiKeys, check, hash_key
from bastion.auth.errors import AuthError
from bastion.auth.introspection import Introspector
from bastion.auth.jwt import Issuer, JwksSource, JwtVerifier, KeySet, keys_from_jwk, load_pem, typed_keys
from bastion.auth.revocation import MemoryRevocations, RedisRevocations
from bastion.http import Request, Response, problem
from bastion.pipeline import Context, Policy, PolicyConfig

Alg = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
              "ES256", "ES384", "ES512", "EdDSA"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JwtKeyConfig(_Strict):
    kid: str | None = Field(None, description="Key id tokens name in their header.")
    pem: str | None = Field(None, description="PEM public key or certificate, inline.")
    pem_file: str | None = Field(None, description="Path of a PEM public key or certificate.")
    jwk: dict[str, Any] | None = Field(None, description="A public JWK.")
    secret: str | None = Field(None, description="HMAC secret (at least 32 bytes; use ${ENV}).")

    @model_validator(mode="after")
    def _one(self) -> "JwtKeyConfig":
        given = [x for x in (self.pem, self.pem_file, self.jwk, self.secret) if x]
        if len(given) != 1:
            raise ValueError("a key is exactly one of pem, pem_file, jwk or secret")
        if self.secret is not None and len(self.secret.encode()) < 32:
            raise ValueError("an HMAC secret must be at least 32 bytes")
        return self


class IssuerConfig(_Strict):
    issuer: str = Field(description="The exact `iss` of accepted tokens.")
    audiences: list[str] = Field(default_factory=list, description="Accepted `aud` values (empty: not checked).")
    algorithms: list[Alg] = Field(min_length=1, description="Algorithms accepted from this issuer.")
    keys: list[JwtKeyConfig] = Field(default_factory=list, description="Static verification keys.")
    jwks_url: str | None = Field(None, description="JWKS endpoint of the issuer.")
    jwks_cache_seconds: float = Field(600, gt=0, description="Refetch the JWKS after this long.")
    jwks_min_refresh_seconds: float = Field(30, ge=0, description="At most one refetch per this long (unknown kid).")
    required_claims: list[str] = Field(default_factory=lambda: ["exp", "iat", "sub"],
                                       description="Claims a token must carry.")
    leeway: float = Field(30, ge=0, le=600, description="Clock skew tolerated for exp/nbf/iat, seconds.")
    max_age: float | None = Field(None, gt=0, description="Refuse tokens issued longer ago than this (seconds).")
    typ_values: list[str] = Field(default_factory=list,
                                  description="Accepted `typ` claim values (empty: any but 'refresh').")
    scope_claim: str = Field("scope", description="Claim with the scopes (space-separated string or list).")
    tier_claim: str = Field("tier", description="Claim naming the principal's rate-limit tier.")

    @model_validator(mode="after")
    def _keys(self) -> "IssuerConfig":
        if not self.keys and not self.jwks_url:
            raise ValueError("an issuer needs keys or a jwks_url")
        hmac_algs = {"HS256", "HS384", "HS512"}
        if self.jwks_url and set(self.algorithms) <= hmac_algs:
            raise ValueError("HMAC algorithms cannot use keys from a JWKS URL")
        return self


class JwtScheme(_Strict):
    type: Literal["jwt"]
    issuers: list[IssuerConfig] = Field(min_length=1)
    max_token_bytes: int = Field(8192, ge=512, description="Longer tokens are refused unparsed.")


class ApiKeyEntry(_Strict):
    id: str
    hash: str = Field(description="`sha256:<hex>` of the key (`bastion keys hash`).")
    owner: str
    scopes: list[str] = Field(default_factory=list)
    tier: str | None = None
    expires: datetime | None = None
    status: Literal["active", "revoked"] = "active"

    @field_validator("hash")
    @classmethod
    def _hash(cls, v: str) -> str:
        if not (v.startswith("sha256:") and len(v) == 71 and all(c in "0123456789abcdef" for c in v[7:])):
            raise ValueError("hash must be 'sha256:' and 64 lower-case hex digits")
        return v


class ApiKeyScheme(_Strict):
    type: Literal["api_key"]
    header: str = Field("X-API-Key", description="Header carrying the key.")
    bearer: bool = Field(True, description="Also accept `Authorization: Bearer <key>` for keys with the key prefix.")
    prefix: str = Field("bk_", description="Keys start with this (tells them from JWTs in Authorization).")
    query_param: str | None = Field(None, description="Query parameter carrying the key, used only on "
                                    "routes with `allow_query_key: true`; always redacted from logs.")
    keys: list[ApiKeyEntry] = Field(default_factory=list, description="Keys declared in the config, by hash.")


class IntrospectionScheme(_Strict):
    type: Literal["introspection"]
    url: str = Field(description="RFC 7662 introspection endpoint.")
    client_id: str
    client_secret: str
    cache_seconds: float = Field(60, gt=0, description="Cache results until min(exp, this).")
    scope_claim: str = "scope"


class MtlsScheme(_Strict):
    type: Literal["mtls"]
    subjects: dict[str, list[str]] = Field(
        default_factory=dict, description="Certificate common name → scopes. Empty: any certificate the "
        "listener's client_ca verified, with no scopes.")


Scheme = Annotated[Union[JwtScheme, ApiKeyScheme, IntrospectionScheme, MtlsScheme], Field(discriminator="type")]


class PrincipalHeaders(_Strict):
    subject: str = "X-Bastion-Subject"
    scopes: str = "X-Bastion-Scopes"
    key_id: str = "X-Bastion-Key-Id"
    tier: str = "X-Bastion-Tier"


class AuthConfig(PolicyConfig):
    schemes: dict[str, Scheme] = Field(default_factory=dict, description="Named authentication schemes.")
    require: list[dict[str, list[str]]] | None = Field(
        None, description="Alternatives (OR) of {scheme: [scopes]} (AND); [] = public; "
        "unset = any one scheme, with `scopes`.")
    scopes: list[str] = Field(default_factory=list, description="With `require` unset: scopes needed (all).")
    allow_query_key: bool = Field(False, description="Accept an API key in the query parameter on this route.")
    forward_credentials: bool = Field(True, description="Pass Authorization / API key on to the upstream.")
    revocation_store: str = Field("memory", description="'memory' or a Redis URL (share it with every gateway).")
    principal_headers: PrincipalHeaders = Field(default_factory=PrincipalHeaders)
    realm: str = "bastion"

    @model_validator(mode="after")
    def _refs(self) -> "AuthConfig":
        # A route's block alone may name schemes defined in the defaults; the merged config
        # (validated again when the gateway builds the route) has them all.
        if self.schemes:
            for alt in self.require or []:
                for name in alt:
                    if name not in self.schemes:
                        raise ValueError(f"require names scheme {name!r}, which is not in schemes")
        return self


@dataclass(slots=True)
class Principal:
    subject: str
    scopes: frozenset[str]
    scheme: str
    tier: str | None = None
    key_id: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)
    jti: str | None = None
    iat: float | None = None
    exp: float | None = None


def _scopes(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(str(v) for v in value)
    return frozenset()


class _Authenticator:
    kind: ClassVar[str]

    def extract(self, req: Request, allow_query: bool) -> str | None:
        raise NotImplementedError

    async def authenticate(self, credential: str) -> Principal:
        raise NotImplementedError


def _bearer(req: Request) -> str | None:
    value = req.header(b"authorization")
    if value is None or len(value) < 8 or value[:7].lower() != b"bearer ":
        return None
    return value[7:].strip().decode("latin-1")


class _ApiKeys(_Authenticator):
    kind = "api_key"

    def __init__(self, name: str, c: ApiKeyScheme) -> None:
        self.name = name
        self.header = c.header.lower().encode()
        self.bearer = c.bearer
        self.prefix = c.prefix
        self.query_param = c.query_param
        self.lookup = StaticApiKeys([
            ApiKeyRecord(e.id, e.hash, e.owner, frozenset(e.scopes), e.tier,
                         e.expires.timestamp() if e.expires else None, e.status) for e in c.keys])

    def extract(self, req: Request, allow_query: bool) -> str | None:
        value = req.header(self.header)
        if value is not None:
            return value.decode("latin-1").strip()
        if self.bearer:
            token = _bearer(req)
            if token is not None and token.startswith(self.prefix):
                return token
        if allow_query and self.query_param and req.query:
            for k, v in parse_qsl(req.query.decode("latin-1"), keep_blank_values=True):
                if k == self.query_param:
                    return v
        return None

    async def authenticate(self, credential: str) -> Principal:
        record = await self.lookup.find(hash_key(credential))
        why = check(record)
        if why is not None:
            raise AuthError(why)
        assert record is not None
        return Principal(record.owner, record.scopes, self.name, record.tier, record.id,
                         {"sub": record.owner, "scope": " ".join(sorted(record.scopes))})


class _Jwt(_Authenticator):
    kind = "jwt"

    def __init__(self, name: str, c: JwtScheme, config_dir: str) -> None:
        self.name = name
        issuers = []
        self.claim_names: dict[str, tuple[str, str]] = {}
        for ic in c.issuers:
            allowed = tuple(ic.algorithms)
            static = KeySet()
            for k in ic.keys:
                if k.secret is not None:
                    static.add(k.kid, typed_keys(k.secret.encode(), allowed))
                elif k.jwk is not None:
                    static.add(k.kid or k.jwk.get("kid"), keys_from_jwk(k.jwk, allowed, allow_symmetric=False))
                else:
                    pem = k.pem
                    if k.pem_file:
                        import os

                        path = k.pem_file if os.path.isabs(k.pem_file) else os.path.join(config_dir, k.pem_file)
                        with open(path, encoding="utf-8") as f:
                            pem = f.read()
                    static.add(k.kid, typed_keys(load_pem(pem or ""), allowed))
            jwks = JwksSource(ic.jwks_url, allowed, cache_seconds=ic.jwks_cache_seconds,
                              min_refresh=ic.jwks_min_refresh_seconds) if ic.jwks_url else None
            issuers.append(Issuer(ic.issuer, allowed, tuple(ic.audiences), static, jwks, tuple(ic.required_claims),
                                  ic.leeway, ic.max_age, tuple(ic.typ_values)))
            self.claim_names[ic.issuer] = (ic.scope_claim, ic.tier_claim)
        self.verifier = JwtVerifier(issuers, max_token_bytes=c.max_token_bytes)

    def extract(self, req: Request, allow_query: bool) -> str | None:
        token = _bearer(req)
        return token if token is not None and token.count(".") == 2 else None

    async def authenticate(self, credential: str) -> Principal:
        v = await self.verifier.verify(credential)
        scope_claim, tier_claim = self.claim_names[v.issuer]
        c = v.claims
        sub = c.get("sub")
        return Principal(str(sub) if sub is not None else "", _scopes(c.get(scope_claim)), self.name,
                         c.get(tier_claim) if isinstance(c.get(tier_claim), str) else None, None, c,
                         c.get("jti") if isinstance(c.get("jti"), str) else None,
                         c.get("iat") if isinstance(c.get("iat"), (int, float)) else None, v.expires)


class _Introspection(_Authenticator):
    kind = "introspection"

    def __init__(self, name: str, c: IntrospectionScheme, api_key_prefixes: tuple[str, ...] = ()) -> None:
        self.name = name
        self.api_key_prefixes = api_key_prefixes  # such bearer values are API keys, not opaque tokens
        self.scope_claim = c.scope_claim
        self.introspector = Introspector(c.url, c.client_id, c.client_secret, cache_seconds=c.cache_seconds)

    def extract(self, req: Request, allow_query: bool) -> str | None:
        token = _bearer(req)
        if token is None or token.count(".") == 2 or (self.api_key_prefixes and token.startswith(self.api_key_prefixes)):
            return None
        return token

    async def authenticate(self, credential: str) -> Principal:
        r = await self.introspector.introspect(credential)
        sub = r.get("sub") or r.get("username") or r.get("client_id") or ""
        return Principal(str(sub), _scopes(r.get(self.scope_claim)), self.name,
                         r.get("tier") if isinstance(r.get("tier"), str) else None, None, r,
                         r.get("jti") if isinstance(r.get("jti"), str) else None,
                         r.get("iat") if isinstance(r.get("iat"), (int, float)) else None,
                         r.get("exp") if isinstance(r.get("exp"), (int, float)) else None)


class _Mtls(_Authenticator):
    """The client certificate the TLS handshake verified (against the listener's client_ca)."""

    kind = "mtls"

    def __init__(self, name: str, c: MtlsScheme) -> None:
        self.name = name
        self.subjects = {k: frozenset(v) for k, v in c.subjects.items()}

    def extract(self, req: Request, allow_query: bool) -> str | None:
        tls = req.tls
        if not tls or not tls.get("client_cert_chain"):
            return None
        return str(tls.get("client_cert_subject", {}).get("commonName") or tls.get("client_cert_name") or "")

    async def authenticate(self, credential: str) -> Principal:
        if self.subjects and credential not in self.subjects:
            raise AuthError("client certificate not allowed here")
        return Principal(credential, self.subjects.get(credential, frozenset()), self.name, None, None,
                         {"sub": credential})


_memory_revocations = MemoryRevocations()
_redis_revocations: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, RedisRevocations]]" = (
    weakref.WeakKeyDictionary())


def revocation_store(url: str) -> MemoryRevocations | RedisRevocations:
    """One revocation list per store URL for the whole process (per event loop for Redis)."""
    if url == "memory":
        return _memory_revocations
    stores = _redis_revocations.setdefault(asyncio.get_running_loop(), {})
    if url not in stores:
        stores[url] = RedisRevocations(url)
    return stores[url]


class Auth(Policy):
    name: ClassVar[str] = "auth"
    priority: ClassVar[int] = 700
    Config = AuthConfig

    def __init__(self, config: AuthConfig, env) -> None:
        super().__init__(config, env)
        for alt in config.require or []:
            for name in alt:
                if name not in config.schemes:
                    raise ValueError(f"require names scheme {name!r}, which is not in schemes")
        self.schemes: dict[str, _Authenticator] = {}
        for name, sc in config.schemes.items():
            if isinstance(sc, JwtScheme):
                self.schemes[name] = _Jwt(name, sc, env.config_dir)
            elif isinstance(sc, ApiKeyScheme):
                self.schemes[name] = _ApiKeys(name, sc)
            elif isinstance(sc, MtlsScheme):
                self.schemes[name] = _Mtls(name, sc)
            else:
                prefixes = tuple(k.prefix for k in config.schemes.values() if isinstance(k, ApiKeyScheme) and k.bearer)
                self.schemes[name] = _Introspection(name, sc, prefixes)
        if config.require is None:
            needed = frozenset(config.scopes)
            self.require = [{name: needed} for name in self.schemes]
        else:
            self.require = [{k: frozenset(v) for k, v in alt.items()} for alt in config.require]
        self.public = config.require == [] or not self.require
        self.allow_query = config.allow_query_key
        self.forward = config.forward_credentials
        self.revocation_url = config.revocation_store
        h = config.principal_headers
        self.h_subject, self.h_scopes = h.subject.lower().encode(), h.scopes.lower().encode()
        self.h_key, self.h_tier = h.key_id.lower().encode(), h.tier.lower().encode()
        self.credential_headers = {b"authorization"} | {
            s.header for s in self.schemes.values() if isinstance(s, _ApiKeys)}
        self.query_params = {s.query_param for s in self.schemes.values()
                             if isinstance(s, _ApiKeys) and s.query_param}
        bearer = any(isinstance(s, (_Jwt, _Introspection)) for s in self.schemes.values())
        self.challenge = f'Bearer realm="{config.realm}"' if bearer else f'ApiKey realm="{config.realm}"'
        self.failures: dict[str, int] = {}

    def _refuse(self, req: Request, status: int, type_: str, detail: str, challenge: str) -> Response:
        self.failures[detail] = self.failures.get(detail, 0) + 1
        resp = problem(status, type_, detail, request_id=req.request_id,
                       headers=[(b"www-authenticate", challenge.encode())])
        resp.reason = detail
        return resp

    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        ctx.drop_request_headers.update((self.h_subject, self.h_scopes, self.h_key, self.h_tier))
        ok: dict[str, Principal] = {}
        refused: list[tuple[str, str]] = []
        for name, scheme in self.schemes.items():
            credential = scheme.extract(req, self.allow_query)
            if credential is None:
                continue
            try:
                principal = await scheme.authenticate(credential)
            except AuthError as exc:
                refused.append((name, exc.reason))
                continue
            if scheme.kind != "mtls" and (principal.jti is not None or principal.subject):
                store = revocation_store(self.revocation_url)
                if await store.is_revoked(principal.jti, principal.subject or None, principal.iat):
                    refused.append((name, "token revoked"))
                    continue
            ok[name] = principal
        if refused and not self.public:
            name, reason = refused[0]
            ctx.log_fields["auth"] = {"scheme": name, "refused": reason}
            return self._refuse(req, 401, "invalid-token", reason,
                                f'{self.challenge}, error="invalid_token", error_description="{reason}"')
        chosen: Principal | None = None
        if self.public:
            chosen = next(iter(ok.values()), None)
        else:
            missing: set[str] | None = None
            for alt in self.require:
                if all(s in ok for s in alt):
                    lacking = set().union(*(alt[s] - ok[s].scopes for s in alt))
                    if not lacking:
                        chosen = ok[next(iter(alt))]
                        break
                    if missing is None or len(lacking) < len(missing):
                        missing = lacking
            if chosen is None:
                if missing is None:
                    ctx.log_fields["auth"] = {"refused": "no credentials"}
                    return self._refuse(req, 401, "unauthenticated", "authentication required", self.challenge)
                scope = " ".join(sorted(missing))
                ctx.log_fields["auth"] = {"refused": "insufficient_scope", "missing": sorted(missing)}
                resp = self._refuse(req, 403, "insufficient-scope", f"missing scopes: {scope}",
                                    f'{self.challenge}, error="insufficient_scope", scope="{scope}"')
                return resp
        if chosen is not None:
            self._publish(chosen, ctx)
        if not self.forward:
            ctx.drop_request_headers.update(self.credential_headers)
            if self.query_params and req.query:
                pairs = [(k, v) for k, v in parse_qsl(req.query.decode("latin-1"), keep_blank_values=True)
                         if k not in self.query_params]
                req.query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs).encode()
        return None

    def _publish(self, p: Principal, ctx: Context) -> None:
        ctx.principal = p.subject
        ctx.values.update({"scopes": p.scopes, "claims": p.claims, "auth_scheme": p.scheme})
        up = ctx.upstream_headers
        up.append((self.h_subject, p.subject.encode("utf-8", "replace")))
        up.append((self.h_scopes, " ".join(sorted(p.scopes)).encode("utf-8", "replace")))
        if p.tier is not None:
            ctx.values["tier"] = p.tier
            up.append((self.h_tier, p.tier.encode("utf-8", "replace")))
        if p.key_id is not None:
            ctx.values["api_key_id"] = p.key_id
            up.append((self.h_key, p.key_id.encode("utf-8", "replace")))

