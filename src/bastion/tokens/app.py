"""The token service over HTTP (Starlette), mounted by the gateway under its prefix.

POST register · login · refresh · logout · logout-all; GET userinfo; the JWKS and OpenID
discovery documents; the service's own OpenAPI document; and the OAuth 2.0 endpoints
(`oauth.py`). Every refusal is problem+json; no answer says whether an account exists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion.auth.revocation import revocation_store
from bastion.http import problem
from bastion.store.db import open_store
from bastion.tokens.config import TokenServiceConfig
from bastion.tokens.keyring import Keyring, fernet
from bastion.tokens.oauth import OAuthEndpoints
from bastion.tokens.passwords import Argon2Params, Passwords
from bastion.tokens.service import Issued, ServiceError, Settings, TokenService

log = logging.getLogger("bastion.tokens")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=1024)


class RegisterBody(Strict):
    username: str = Field(max_length=64)
    email: str = Field(max_length=320)
    password: str = Field(max_length=256)


class LoginBody(Strict):
    username: str = Field(max_length=320, description="Username or email.")
    password: str = Field(max_length=256)
    scope: str | None = Field(None, max_length=1024)


class RefreshBody(Strict):
    refresh_token: str = Field(max_length=4096)


class LogoutBody(Strict):
    refresh_token: str | None = Field(None, max_length=4096)


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    h = {"cache-control": "no-store", **(headers or {})}
    return Response(orjson.dumps(doc), status, h, media_type="application/json")


def problem_response(
    status: int,
    kind: str,
    detail: str,
    request: Request,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    rid = request.headers.get("x-request-id", "")
    p = problem(status, kind, detail, request_id=rid, extra={"errors": errors} if errors else None)
    return Response(
        p.body, status, {"cache-control": "no-store", **(headers or {})}, media_type="application/problem+json"
    )


M = TypeVar("M", bound=BaseModel)


async def parse(request: Request, model: type[M]) -> M:
    if (request.headers.get("content-type") or "").split(";")[0].strip().lower() != "application/json":
        raise ServiceError(415, "unsupported-media-type", "send application/json")
    raw = await request.body()
    try:
        data = orjson.loads(raw or b"null")
    except orjson.JSONDecodeError:
        raise ServiceError(400, "malformed-body", "the body is not valid JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {
                "pointer": "/" + "/".join(str(p) for p in e["loc"]),
                "message": "this property is not accepted" if e["type"] == "extra_forbidden" else e["msg"],
            }
            for e in exc.errors(include_input=False)
        ]
        raise ServiceError(
            422, "validation-failed", "the request does not match what this endpoint accepts", errors
        ) from None


def issued(doc: Issued) -> dict[str, Any]:
    out = {"access_token": doc.access_token, "token_type": "Bearer", "expires_in": doc.expires_in, "scope": doc.scope}
    if doc.refresh_token:
        out["refresh_token"] = doc.refresh_token
    return out


def database_ping(app: TokenApp) -> float:
    """Milliseconds for a trivial query on the identity store (readiness and metrics)."""
    from sqlalchemy import text

    t0 = time.perf_counter()
    with app.sessions() as s:
        s.execute(text("SELECT 1"))
    return (time.perf_counter() - t0) * 1000


class TokenApp:
    def __init__(self, config: TokenServiceConfig) -> None:
        self.config = config
        _, maker = open_store(config.database)
        self.sessions = maker
        self.keyring = Keyring(
            maker,
            fernet(config.key_encryption_key),
            config.algorithm,
            config.rotate_keys_days * 86400,
            float(config.refresh_ttl),
        )
        self.passwords = Passwords(
            Argon2Params(config.argon2.time_cost, config.argon2.memory_kib, config.argon2.parallelism)
        )
        self.service = TokenService(
            maker,
            self.keyring,
            self.passwords,
            Settings(
                issuer=config.issuer,
                audience=config.audience,
                access_ttl=config.access_ttl,
                refresh_ttl=config.refresh_ttl,
                default_scopes=tuple(config.default_scopes),
                max_failures=config.max_failures,
                lockout_seconds=config.lockout_seconds,
                api_key_env=config.api_key_env,
            ),
        )
        self.keyring.active()  # make (or load) the signing key now: a bad key_encryption_key fails at start
        p = config.prefix
        routes = [
            Route(f"{p}/login", self.login, methods=["POST"]),
            Route(f"{p}/refresh", self.refresh, methods=["POST"]),
            Route(f"{p}/logout", self.logout, methods=["POST"]),
            Route(f"{p}/logout-all", self.logout_all, methods=["POST"]),
            Route(f"{p}/userinfo", self.userinfo, methods=["GET"]),
            Route(f"{p}/.well-known/jwks.json", self.jwks, methods=["GET"]),
            Route(f"{p}/.well-known/openid-configuration", self.discovery, methods=["GET"]),
            Route(f"{p}/openapi.json", self.openapi, methods=["GET"]),
        ]
        if config.registration:
            routes.append(Route(f"{p}/register", self.register, methods=["POST"]))
        self.oauth = OAuthEndpoints(self)
        routes += self.oauth.routes(p)
        self.app = Starlette(routes=routes)
        self.app.add_exception_handler(ServiceError, self._service_error)  # type: ignore[arg-type]
        self.app.add_exception_handler(404, self._not_found)
        self.app.add_exception_handler(405, self._not_allowed)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    # ------------------------------------------------------------ errors
    async def _service_error(self, request: Request, exc: ServiceError) -> Response:
        headers = {"www-authenticate": 'Bearer realm="bastion"'} if exc.status == 401 else None
        return problem_response(exc.status, exc.kind, exc.detail, request, exc.errors, headers)

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return problem_response(404, "not-found", "no such endpoint", request)

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        return problem_response(405, "method-not-allowed", f"{request.method} is not allowed here", request)

    # ------------------------------------------------------------ helpers
    async def bearer_claims(self, request: Request) -> dict[str, Any]:
        value = request.headers.get("authorization", "")
        if not value.lower().startswith("bearer "):
            raise ServiceError(401, "unauthenticated", "send the access token as a Bearer token")
        claims = await asyncio.to_thread(self.service.verify_own, value[7:].strip(), "access")
        store = revocation_store(self.config.revocation_store)
        if await store.is_revoked(claims.get("jti"), claims.get("sub"), claims.get("iat")):
            raise ServiceError(401, "invalid-token", "the access token is not valid")
        return claims

    async def revoke(self, jtis: list[tuple[str, float]]) -> None:
        store = revocation_store(self.config.revocation_store)
        for jti, exp in jtis:
            await store.revoke_jti(jti, exp)

    # ------------------------------------------------------------ endpoints
    async def register(self, request: Request) -> Response:
        body = await parse(request, RegisterBody)
        user = await asyncio.to_thread(self.service.register, body.username, body.email, body.password)
        return json_response(user, 201)

    async def login(self, request: Request) -> Response:
        body = await parse(request, LoginBody)
        doc = await asyncio.to_thread(self.service.login, body.username, body.password, body.scope)
        return json_response(issued(doc))

    async def refresh(self, request: Request) -> Response:
        body = await parse(request, RefreshBody)
        doc = await asyncio.to_thread(self.service.refresh, body.refresh_token)
        return json_response(issued(doc))

    async def logout(self, request: Request) -> Response:
        claims = await self.bearer_claims(request)
        body = await parse(request, LogoutBody) if await request.body() else LogoutBody()
        jtis = await asyncio.to_thread(self.service.logout, claims, body.refresh_token)
        await self.revoke(jtis)
        return Response(status_code=204, headers={"cache-control": "no-store"})

    async def logout_all(self, request: Request) -> Response:
        claims = await self.bearer_claims(request)
        await asyncio.to_thread(self.service.logout_everywhere, claims["sub"])
        store = revocation_store(self.config.revocation_store)
        # every access token issued until now dies; they all expire within access_ttl anyway
        await store.revoke_subject(claims["sub"], time.time(), ttl=self.config.access_ttl + 120)
        return Response(status_code=204, headers={"cache-control": "no-store"})

    async def userinfo(self, request: Request) -> Response:
        claims = await self.bearer_claims(request)
        user = await asyncio.to_thread(self.service.user, claims["sub"])
        if user is None:
            raise ServiceError(401, "invalid-token", "the access token is not valid")
        return json_response(
            {"sub": user.id, "preferred_username": user.username, "email": user.email, "role": user.role}
        )

    async def jwks(self, request: Request) -> Response:
        doc = await asyncio.to_thread(self.keyring.jwks)
        return Response(orjson.dumps(doc), 200, {"cache-control": "public, max-age=300"}, media_type="application/json")

    async def discovery(self, request: Request) -> Response:
        base = self.config.issuer.rstrip("/")
        doc = {
            "issuer": self.config.issuer,
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "introspection_endpoint": f"{base}/oauth/introspect",
            "revocation_endpoint": f"{base}/oauth/revoke",
            "userinfo_endpoint": f"{base}/userinfo",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
                "none",
            ],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.config.algorithm],
            "scopes_supported": ["openid", "profile", "email", *self.config.default_scopes],
        }
        return Response(orjson.dumps(doc), 200, {"cache-control": "public, max-age=300"}, media_type="application/json")

    async def openapi(self, request: Request) -> Response:
        from bastion.tokens.openapi import document

        return Response(orjson.dumps(document(self.config)), 200, media_type="application/json")
