"""Authentication schemes: their config models and the authenticators built from them.
The `auth` policy wires them to routes; the token service and the middleware can reuse them."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bastion.auth.apikeys import ApiKeyRecord, StaticApiKeys, check, hash_key
from bastion.auth.errors import AuthError
from bastion.auth.introspection import Introspector
from bastion.auth.jwt import (
    MIN_HMAC_SECRET,
    Issuer,
    JwksFile,
    JwksSource,
    JwtVerifier,
    KeySet,
    decode_secret_base64,
    keys_from_jwk,
    load_pem,
    typ_media_type,
    typed_keys,
)
from bastion.http import Request
from bastion.principal import Principal

Alg = Literal[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JwtKeyConfig(StrictModel):
    """One verification key: exactly one of `pem`, `pem_file`, `jwk`, `secret`, `secret_base64`."""

    kid: str | None = Field(
        None,
        description="Key id tokens name in their header. A key without one verifies tokens "
        "without a `kid`, and tokens whose `kid` no key carries when it is the issuer's only key of its type.",
    )
    pem: str | None = Field(None, description="PEM public key or certificate, inline.")
    pem_file: str | None = Field(None, description="Path of a PEM public key or certificate.")
    jwk: dict[str, Any] | None = Field(None, description="A public JWK.")
    secret: str | None = Field(
        None, description="HMAC secret, its UTF-8 bytes (at least 32 bytes; use ${ENV}). Weaker secrets are refused."
    )
    secret_base64: str | None = Field(
        None,
        description="HMAC secret written in base64 or base64url, padding optional (at least 32 bytes once decoded).",
    )

    @model_validator(mode="after")
    def _one(self) -> JwtKeyConfig:
        given = [x for x in (self.pem, self.pem_file, self.jwk, self.secret, self.secret_base64) if x]
        if len(given) != 1:
            raise ValueError("a key is exactly one of pem, pem_file, jwk, secret or secret_base64")
        if self.secret is not None and len(self.secret.encode()) < MIN_HMAC_SECRET:
            raise ValueError(f"an HMAC secret must be at least {MIN_HMAC_SECRET} bytes")
        if self.secret_base64 is not None and len(decode_secret_base64(self.secret_base64)) < MIN_HMAC_SECRET:
            raise ValueError(f"an HMAC secret must be at least {MIN_HMAC_SECRET} bytes (secret_base64 decoded)")
        return self

    def hmac_secret(self) -> bytes | None:
        if self.secret is not None:
            return self.secret.encode()
        if self.secret_base64 is not None:
            return decode_secret_base64(self.secret_base64)
        return None


class IssuerConfig(StrictModel):
    """One token issuer: the keys and rules for the tokens whose `iss` names it."""

    issuer: str | None = Field(
        None,
        min_length=1,
        description="The exact `iss` of accepted tokens. Unset: this entry verifies tokens that carry "
        "no `iss` (at most one such entry per scheme); a token that carries an `iss` must match "
        "some entry's `issuer`.",
    )
    audiences: list[str] = Field(default_factory=list, description="Accepted `aud` values (empty: not checked).")
    algorithms: list[Alg] = Field(min_length=1, description="Algorithms accepted from this issuer.")
    keys: list[JwtKeyConfig] = Field(default_factory=list, description="Static verification keys.")
    jwks_url: str | None = Field(
        None, description="JWKS endpoint of the issuer (fetched; refreshed on an unknown `kid`)."
    )
    jwks_file: str | None = Field(
        None,
        description="A JWKS JSON file (relative to the config file), reloaded when it changes; a "
        "file that cannot be loaded then keeps the last good keys (logged). `oct` keys allowed (32+ bytes).",
    )
    jwks_cache_seconds: float = Field(600, gt=0, description="Refetch the JWKS after this long.")
    jwks_min_refresh_seconds: float = Field(30, ge=0, description="At most one refetch per this long (unknown kid).")
    required_claims: list[str] = Field(
        default_factory=lambda: ["exp", "iat", "sub"],
        description="Claims a token must carry (default `exp`, `iat`, `sub`; e.g. `[exp, sub]` for apps "
        "whose tokens have no `iat`). `exp`, `nbf`, `iat`, `aud` are checked whenever present.",
    )
    leeway: float = Field(30, ge=0, le=600, description="Clock skew tolerated for exp/nbf/iat, seconds.")
    max_age: float | None = Field(None, gt=0, description="Refuse tokens issued longer ago than this (seconds).")
    typ_values: list[str] = Field(
        default_factory=list,
        description="Accepted `typ` claim values, case-insensitive (empty: any but "
        "refresh, offline, id and logout tokens).",
    )
    header_typ: list[str] = Field(
        default_factory=list,
        description="Accepted header `typ` values, case-insensitive, `application/` "
        "optional (e.g. `at+jwt` for RFC 9068 access tokens; empty: not checked).",
    )
    scope_claim: str = Field("scope", description="Claim with the scopes (space-separated string or list).")
    tier_claim: str = Field("tier", description="Claim naming the principal's rate-limit tier.")

    @model_validator(mode="after")
    def _keys(self) -> IssuerConfig:
        if not self.keys and not self.jwks_url and not self.jwks_file:
            raise ValueError("an issuer needs keys, a jwks_url or a jwks_file")
        if self.jwks_url and self.jwks_file:
            raise ValueError("an issuer has a jwks_url or a jwks_file, not both")
        hmac_algs = {"HS256", "HS384", "HS512"}
        if self.jwks_url and set(self.algorithms) <= hmac_algs:
            raise ValueError("HMAC algorithms cannot use keys from a JWKS URL")
        if self.issuer is None and "iss" in self.required_claims:
            raise ValueError("an entry without `issuer` is for tokens without `iss`: it cannot require `iss`")
        return self


class JwtScheme(StrictModel):
    """JWT bearer tokens, verified with PyJWT against each issuer's keys."""

    type: Literal["jwt"]
    issuers: list[IssuerConfig] = Field(
        min_length=1, description="Accepted issuers; a token is checked by the entry its `iss` names."
    )
    max_token_bytes: int = Field(8192, ge=512, description="Longer tokens are refused unparsed.")

    @model_validator(mode="after")
    def _distinct(self) -> JwtScheme:
        names = [i.issuer for i in self.issuers]
        if names.count(None) > 1:
            raise ValueError("at most one issuer entry without `issuer` (for tokens without `iss`)")
        dup = {n for n in names if n is not None and names.count(n) > 1}
        if dup:
            raise ValueError(f"issuer {sorted(dup)[0]!r} is listed twice")
        return self


class ApiKeyEntry(StrictModel):
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


class ApiKeyScheme(StrictModel):
    type: Literal["api_key"]
    header: str = Field("X-API-Key", description="Header carrying the key.")
    bearer: bool = Field(True, description="Also accept `Authorization: Bearer <key>` for keys with the key prefix.")
    prefix: str = Field("bk_", description="Keys start with this (tells them from JWTs in Authorization).")
    query_param: str | None = Field(
        None,
        description="Query parameter carrying the key, used only on "
        "routes with `allow_query_key: true`; always redacted from logs.",
    )
    cookie: str | None = Field(None, description="Cookie carrying the key (OpenAPI `in: cookie`).")
    keys: list[ApiKeyEntry] = Field(default_factory=list, description="Keys declared in the config, by hash.")
    database: str | None = Field(
        None,
        description="Also look keys up in the token service's database "
        "(the same URL as token_service.database; `bastion keys create`).",
    )
    cache_seconds: float = Field(
        5, ge=0, le=300, description="With `database`: cache a lookup this long (a revocation takes effect within it)."
    )


class IntrospectionScheme(StrictModel):
    type: Literal["introspection"]
    url: str = Field(description="RFC 7662 introspection endpoint.")
    client_id: str
    client_secret: str
    cache_seconds: float = Field(60, gt=0, description="Cache results until min(exp, this).")
    scope_claim: str = "scope"


class MtlsScheme(StrictModel):
    type: Literal["mtls"]
    subjects: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Certificate common name → scopes. Empty: any certificate the "
        "listener's client_ca verified, with no scopes.",
    )


Scheme = Annotated[JwtScheme | ApiKeyScheme | IntrospectionScheme | MtlsScheme, Field(discriminator="type")]


def _revocation_fields(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "jti": c.get("jti") if isinstance(c.get("jti"), str) else None,
        "iat": c.get("iat") if isinstance(c.get("iat"), (int, float)) else None,
    }


def _scopes(value: Any) -> frozenset[str]:
    if isinstance(value, str):  # RFC 6749 3.3: separated by spaces (U+0020) only, not any white space
        return frozenset(s for s in value.split(" ") if s)
    if isinstance(value, list):
        return frozenset(str(v) for v in value)
    return frozenset()


class Authenticator:
    kind: ClassVar[str]

    def extract(self, req: Request, allow_query: bool) -> str | None:
        raise NotImplementedError

    async def authenticate(self, credential: str) -> Principal:
        raise NotImplementedError

    def ambiguous(self, req: Request, allow_query: bool) -> str | None:
        """Why this scheme's credential is ambiguous in `req` (e.g. in two places), or None."""
        return None


def _bearer(req: Request) -> str | None:
    value = req.header(b"authorization")
    if value is None or len(value) < 8 or value[:7].lower() != b"bearer ":
        return None
    return value[7:].strip().decode("latin-1")


class ApiKeys(Authenticator):
    kind = "api_key"

    def __init__(self, name: str, c: ApiKeyScheme) -> None:
        self.name = name
        self.header = c.header.lower().encode()
        self.bearer = c.bearer
        self.prefix = c.prefix
        self.query_param = c.query_param
        self.cookie = c.cookie
        self.lookup = StaticApiKeys(
            [
                ApiKeyRecord(
                    e.id,
                    e.hash,
                    e.owner,
                    frozenset(e.scopes),
                    e.tier,
                    e.expires.timestamp() if e.expires else None,
                    e.status,
                )
                for e in c.keys
            ]
        )
        self.database = None
        if c.database is not None:
            from bastion.tokens.apikeys import DatabaseApiKeys

            self.database = DatabaseApiKeys(c.database, c.cache_seconds)

    def _places(self, req: Request, allow_query: bool) -> list[str]:
        """Where this scheme's key appears in `req` (a place listed once per occurrence)."""
        places = ["header" for k, _ in req.headers if k == self.header]
        if self.bearer:
            token = _bearer(req)
            if token is not None and token.startswith(self.prefix):
                places.append("authorization")
        if self.cookie is not None and req.header(b"cookie") is not None:
            for k, v in req.headers:
                if k == b"cookie":
                    places += [
                        "cookie"
                        for part in v.split(b";")
                        if part.split(b"=", 1)[0].strip() == self.cookie.encode("latin-1")
                    ]
        if allow_query and self.query_param and req.query:
            places += [
                "query"
                for k, _ in parse_qsl(req.query.decode("latin-1"), keep_blank_values=True)
                if k == self.query_param
            ]
        return places

    def ambiguous(self, req: Request, allow_query: bool) -> str | None:
        places = self._places(req, allow_query)
        if len(places) > 1:
            return "the API key is sent more than once (" + ", ".join(places) + ")"
        return None

    def extract(self, req: Request, allow_query: bool) -> str | None:
        value = req.header(self.header)
        if value is not None:
            return value.decode("latin-1").strip()
        if self.bearer:
            token = _bearer(req)
            if token is not None and token.startswith(self.prefix):
                return token
        if self.cookie is not None:
            cookie = req.cookies().get(self.cookie)
            if cookie:
                return cookie
        if allow_query and self.query_param and req.query:
            for k, v in parse_qsl(req.query.decode("latin-1"), keep_blank_values=True):
                if k == self.query_param:
                    return v
        return None

    async def authenticate(self, credential: str) -> Principal:
        key_hash = hash_key(credential)
        record = await self.lookup.find(key_hash)
        if record is None and self.database is not None:
            record = await self.database.find(key_hash)
        why = check(record)
        if why is not None:
            raise AuthError(why)
        assert record is not None
        return Principal(
            record.owner,
            record.scopes,
            self.name,
            record.tier,
            record.id,
            {"sub": record.owner, "scope": " ".join(sorted(record.scopes))},
        )


class Jwt(Authenticator):
    kind = "jwt"

    def __init__(self, name: str, c: JwtScheme, config_dir: str) -> None:
        self.name = name
        issuers = []
        self.claim_names: dict[str | None, tuple[str, str]] = {}
        for ic in c.issuers:
            allowed = tuple(ic.algorithms)
            static = KeySet()
            for k in ic.keys:
                secret = k.hmac_secret()
                if secret is not None:
                    static.add(k.kid, typed_keys(secret, allowed))
                elif k.jwk is not None:
                    static.add(k.kid or k.jwk.get("kid"), keys_from_jwk(k.jwk, allowed, allow_symmetric=False))
                else:
                    pem = k.pem
                    if k.pem_file:
                        path = k.pem_file if os.path.isabs(k.pem_file) else os.path.join(config_dir, k.pem_file)
                        with open(path, encoding="utf-8") as f:
                            pem = f.read()
                    static.add(k.kid, typed_keys(load_pem(pem or ""), allowed))
            jwks: JwksSource | JwksFile | None = None
            if ic.jwks_url:
                jwks = JwksSource(
                    ic.jwks_url, allowed, cache_seconds=ic.jwks_cache_seconds, min_refresh=ic.jwks_min_refresh_seconds
                )
            elif ic.jwks_file:
                path = ic.jwks_file if os.path.isabs(ic.jwks_file) else os.path.join(config_dir, ic.jwks_file)
                jwks = JwksFile(path, allowed)
            issuers.append(
                Issuer(
                    ic.issuer,
                    allowed,
                    tuple(ic.audiences),
                    static,
                    jwks,
                    tuple(ic.required_claims),
                    ic.leeway,
                    ic.max_age,
                    tuple(t.lower() for t in ic.typ_values),
                    tuple(typ_media_type(t) for t in ic.header_typ),
                )
            )
            self.claim_names[ic.issuer] = (ic.scope_claim, ic.tier_claim)
        self.verifier = JwtVerifier(issuers, max_token_bytes=c.max_token_bytes)

    def extract(self, req: Request, allow_query: bool) -> str | None:
        token = _bearer(req)
        return token if token is not None and token.count(".") == 2 else None

    async def authenticate(self, credential: str) -> Principal:
        v = await self.verifier.verify(credential)
        scope_claim, tier_claim = self.claim_names[v.issuer]
        c = v.claims
        sub = c.get("sub")  # a string when present (checked with the other registered claims)
        tier = c.get(tier_claim)
        if tier is not None and not isinstance(tier, str):
            raise AuthError(f"malformed claim {tier_claim!r}")
        scopes = c.get(scope_claim)
        if (
            scopes is not None
            and not isinstance(scopes, str)
            and not (isinstance(scopes, list) and all(isinstance(x, str) for x in scopes))
        ):
            raise AuthError(f"malformed claim {scope_claim!r}")
        return Principal(
            sub if sub is not None else "",
            _scopes(scopes),
            self.name,
            tier,
            None,
            c,
            exp=v.expires,
            issuer=v.issuer,
            **_revocation_fields(c),
        )


class Introspection(Authenticator):
    kind = "introspection"

    def __init__(self, name: str, c: IntrospectionScheme, api_key_prefixes: tuple[str, ...] = ()) -> None:
        self.name = name
        self.api_key_prefixes = api_key_prefixes  # such bearer values are API keys, not opaque tokens
        self.scope_claim = c.scope_claim
        self.introspector = Introspector(c.url, c.client_id, c.client_secret, cache_seconds=c.cache_seconds)

    def extract(self, req: Request, allow_query: bool) -> str | None:
        token = _bearer(req)
        if (
            token is None
            or token.count(".") == 2
            or (self.api_key_prefixes and token.startswith(self.api_key_prefixes))
        ):
            return None
        return token

    async def authenticate(self, credential: str) -> Principal:
        r = await self.introspector.introspect(credential)
        sub = r.get("sub") or r.get("username") or r.get("client_id") or ""
        return Principal(
            str(sub),
            _scopes(r.get(self.scope_claim)),
            self.name,
            r.get("tier") if isinstance(r.get("tier"), str) else None,
            None,
            r,
            r.get("jti") if isinstance(r.get("jti"), str) else None,
            r.get("iat") if isinstance(r.get("iat"), (int, float)) else None,
            r.get("exp") if isinstance(r.get("exp"), (int, float)) else None,
        )


class Mtls(Authenticator):
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
        return Principal(
            credential, self.subjects.get(credential, frozenset()), self.name, None, None, {"sub": credential}
        )


def build_authenticator(name: str, sc: Any, config_dir: str, api_key_prefixes: tuple[str, ...]) -> Authenticator:
    if isinstance(sc, JwtScheme):
        return Jwt(name, sc, config_dir)
    if isinstance(sc, ApiKeyScheme):
        return ApiKeys(name, sc)
    if isinstance(sc, MtlsScheme):
        return Mtls(name, sc)
    return Introspection(name, sc, api_key_prefixes)
