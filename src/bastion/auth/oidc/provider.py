"""The provider side of the relying party: discovery, client authentication, the token endpoint
(code exchange and refresh), who the user is (ID token or userinfo), revocation and end-session.

HTTP goes through `bastion.net.fetch` (the gateway's own pooled client), so Authlib's HTTP
clients (requests/httpx) are not used; ID tokens are checked by `bastion.auth.jwt.JwtVerifier`
(the same verifier as bearer tokens: JWKS cache, algorithm allow-list, `iss`/`aud`/`exp`), and
the `private_key_jwt` assertion is signed with PyJWT.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

import jwt as pyjwt
import orjson
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bastion.auth.errors import AuthError
from bastion.auth.jwt import Issuer, JwksSource, JwtVerifier, KeySet
from bastion.net.fetch import FetchError, fetch

FORM = (b"content-type", b"application/x-www-form-urlencoded")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    issuer: str | None = Field(None, description="OIDC issuer: endpoints come from its discovery document.")
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    jwks_uri: str | None = None
    userinfo_endpoint: str | None = Field(None, description="Plain OAuth 2.0 (no ID token): who the user is.")
    revocation_endpoint: str | None = None
    end_session_endpoint: str | None = None
    subject_field: str = Field(
        "sub", description="With userinfo_endpoint: the field naming the user ('id' for GitHub)."
    )
    client_id: str
    client_secret: str | None = Field(None, description="Sent with client_secret_post; use ${ENV}.")
    client_auth: Literal["client_secret_post", "private_key_jwt"] = Field(
        "client_secret_post", description="How the gateway authenticates to the token endpoint."
    )
    private_key_file: str | None = Field(None, description="With private_key_jwt: the PEM private key.")
    private_key_kid: str | None = Field(None, description="With private_key_jwt: the key's kid.")
    private_key_alg: Literal["RS256", "ES256", "EdDSA"] = "RS256"
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])

    @model_validator(mode="after")
    def _endpoints(self) -> ProviderConfig:
        if self.client_auth == "private_key_jwt" and not self.private_key_file:
            raise ValueError("private_key_jwt needs private_key_file")
        if self.issuer is None and not (self.authorization_endpoint and self.token_endpoint):
            raise ValueError("a provider needs an issuer (OIDC discovery) or authorization_endpoint + token_endpoint")
        if self.issuer is None and not (self.jwks_uri or self.userinfo_endpoint):
            raise ValueError("a provider without discovery needs jwks_uri (OIDC) or userinfo_endpoint (OAuth 2.0)")
        return self


@dataclass(frozen=True)
class Endpoints:
    """The provider's endpoints: configured ones win over the discovery document's."""

    issuer: str | None
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str | None
    userinfo_endpoint: str | None
    revocation_endpoint: str | None
    end_session_endpoint: str | None


_ENDPOINT_NAMES = (
    "authorization_endpoint",
    "token_endpoint",
    "jwks_uri",
    "userinfo_endpoint",
    "revocation_endpoint",
    "end_session_endpoint",
)


def load_signing_key(p: ProviderConfig, config_dir: str) -> Any:
    """private_key_jwt: the RSA, EC or Ed25519 key from `private_key_file` (None otherwise)."""
    if p.client_auth != "private_key_jwt":
        return None
    path = Path(config_dir) / str(p.private_key_file)
    try:
        return load_pem_private_key(path.read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"login: private_key_file {path} cannot be used ({exc})") from None


class RelyingParty:
    """One client registration at one provider. Discovery happens on first use and is kept."""

    def __init__(self, provider: ProviderConfig, redirect_uri: str, config_dir: str) -> None:
        self.p = provider
        self.redirect_uri = redirect_uri
        self.signing_key = load_signing_key(provider, config_dir)
        self.endpoints: Endpoints | None = None
        self.verifier: JwtVerifier | None = None  # set when the provider issues ID tokens

    async def discover(self) -> Endpoints:
        """The endpoints (OIDC discovery when an issuer is configured). Raises FetchError,
        OSError or ValueError when the provider cannot be reached or answers nonsense."""
        if self.endpoints is not None:
            return self.endpoints
        p = self.p
        doc: dict[str, Any] = {}
        if p.issuer:
            status, body = await fetch(p.issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=5)
            if status != 200:
                raise FetchError(f"discovery answered {status}")
            doc = orjson.loads(body)
            if doc.get("issuer") != p.issuer:
                raise FetchError("the discovery document names another issuer")
        found: dict[str, str | None] = {k: getattr(p, k) or doc.get(k) for k in _ENDPOINT_NAMES}
        authorization, token = found.pop("authorization_endpoint"), found.pop("token_endpoint")
        if not (authorization and token):
            raise FetchError("the provider names no authorization or token endpoint")
        ep = Endpoints(
            issuer=p.issuer or doc.get("issuer"), authorization_endpoint=authorization, token_endpoint=token, **found
        )
        if ep.jwks_uri and ep.issuer:
            self.verifier = self._id_token_verifier(ep.issuer, ep.jwks_uri)
        self.endpoints = ep
        return ep

    def _id_token_verifier(self, issuer: str, jwks_uri: str) -> JwtVerifier:
        algorithms = tuple(self.p.algorithms)
        return JwtVerifier(
            [
                Issuer(
                    issuer=issuer,
                    algorithms=algorithms,
                    audiences=(self.p.client_id,),
                    static=KeySet(),
                    jwks=JwksSource(jwks_uri, algorithms, min_refresh=5),
                    required=("exp", "iat", "sub"),
                    leeway=30,
                    max_age=None,
                    typ_values=("id", ""),  # ID tokens: typ "id" or none
                )
            ]
        )

    def client_auth(self, endpoint: str) -> dict[str, str]:
        """The client's credentials for a call to the provider's `endpoint`."""
        if self.signing_key is None:
            out = {"client_id": self.p.client_id}
            if self.p.client_secret:
                out["client_secret"] = self.p.client_secret
            return out
        now = int(time.time())
        audience = self.endpoints.token_endpoint if self.endpoints is not None else endpoint
        assertion = pyjwt.encode(
            {
                "iss": self.p.client_id,
                "sub": self.p.client_id,
                "aud": audience,
                "jti": secrets.token_urlsafe(16),
                "iat": now,
                "exp": now + 60,
            },
            self.signing_key,
            algorithm=self.p.private_key_alg,
            headers={"kid": self.p.private_key_kid} if self.p.private_key_kid else None,
        )
        return {"client_id": self.p.client_id, "client_assertion": assertion, "client_assertion_type": ASSERTION_TYPE}

    async def _token_call(self, fields: dict[str, str]) -> dict[str, Any]:
        ep = await self.discover()
        fields = {**fields, **self.client_auth(ep.token_endpoint)}
        status, body = await fetch(
            ep.token_endpoint,
            method="POST",
            body=urlencode(fields).encode(),
            headers=[FORM, (b"accept", b"application/json")],
            timeout=10,
        )
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = dict(parse_qsl(body.decode("latin-1")))  # GitHub answers form-encoded without Accept
        if status != 200 or "access_token" not in doc:
            raise AuthError(f"the provider refused the token request ({doc.get('error', status)})")
        return dict(doc)

    async def exchange_code(self, code: str, verifier: str) -> dict[str, Any]:
        """The token response for an authorization code (with its PKCE verifier)."""
        return await self._token_call(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": verifier,
            }
        )

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        return await self._token_call({"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def identify(self, tokens: dict[str, Any], nonce: str) -> dict[str, Any]:
        """Who logged in: the checked ID token's claims (its `nonce` must be ours), or, from a
        plain OAuth 2.0 provider, its userinfo. Raises AuthError when the answer is refused."""
        ep = await self.discover()
        if self.verifier is not None:
            id_token = tokens.get("id_token")
            if not id_token:
                raise AuthError("the provider sent no ID token")
            claims = (await self.verifier.verify(id_token)).claims
            if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
                raise AuthError("the ID token's nonce does not match")
            return {k: claims[k] for k in ("sub", "email", "preferred_username", "name") if k in claims}
        if ep.userinfo_endpoint is None:
            raise AuthError("the provider has neither a JWKS nor a userinfo endpoint")
        status, body = await fetch(
            ep.userinfo_endpoint,
            headers=[
                (b"authorization", b"Bearer " + tokens["access_token"].encode("latin-1")),
                (b"accept", b"application/json"),
            ],
        )
        if status != 200:
            raise AuthError("the provider's userinfo refused the token")
        info = orjson.loads(body)
        sub = info.get(self.p.subject_field)
        if sub in (None, ""):
            raise AuthError("the provider's userinfo names no user")
        return {"sub": str(sub), **{k: info[k] for k in ("email", "login", "name") if isinstance(info.get(k), str)}}

    async def revoke(self, session: dict[str, Any]) -> None:
        """RFC 7009: revoke the session's refresh and access tokens, when the provider can."""
        ep = await self.discover()
        if not ep.revocation_endpoint:
            return
        for hint in ("refresh_token", "access_token"):
            if session.get(hint):
                fields = {"token": session[hint], "token_type_hint": hint, **self.client_auth(ep.revocation_endpoint)}
                await fetch(
                    ep.revocation_endpoint, method="POST", body=urlencode(fields).encode(), headers=[FORM], timeout=5
                )

    async def end_session_url(self, id_token: str | None, post_logout_redirect: str) -> str | None:
        """The provider's end-session URL (RP-initiated logout), or None when it has none."""
        ep = await self.discover()
        if not ep.end_session_endpoint:
            return None
        params = {"client_id": self.p.client_id}
        if id_token:
            params["id_token_hint"] = id_token
        if post_logout_redirect.startswith("http"):
            params["post_logout_redirect_uri"] = post_logout_redirect
        return ep.end_session_endpoint + "?" + urlencode(params)
