"""The OAuth 2.0 authorization server, on Authlib.

- Authorization code with PKCE: S256 only (a missing or `plain` method is refused), redirect URIs
  matched exactly against the registered ones, `state` carried through, single-use codes that
  live `code_ttl` seconds, stored hashed; a minimal login + consent page with a CSRF token.
- Client credentials for services (confidential clients only).
- Refresh tokens through the token endpoint (`grant_type=refresh_token`), with the same rotation
  and reuse detection as POST {prefix}/refresh.
- Introspection (RFC 7662) and revocation (RFC 7009), for authenticated clients.
- No implicit grant, no password grant.

Authlib is synchronous; each endpoint runs in a worker thread, and revocations meant for the
gateway's (async) revocation store are collected and applied after it returns.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import secrets
import time
from collections import defaultdict
from typing import Any, Protocol
from urllib.parse import parse_qsl

from authlib.oauth2 import AuthorizationServer, OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Payload, OAuth2Request, grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from sqlalchemy import update
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from bastion.auth.apikeys import hash_key
from bastion.store.models import AuthorizationCode, OAuthClient, User
from bastion.tokens.config import TokenServiceConfig
from bastion.tokens.service import ServiceError, TokenService


class TokenHost(Protocol):
    """What the OAuth endpoints need of the token service that serves them (`tokens.app.TokenApp`):
    named here so that this module does not import the app that imports it."""

    config: TokenServiceConfig
    service: TokenService
    sessions: Any  # SQLAlchemy sessionmaker

    async def revoke(self, jtis: list[tuple[str, float]]) -> None: ...


# ------------------------------------------------------------------ models Authlib talks to
class Client(ClientMixin):
    def __init__(self, row: OAuthClient) -> None:
        self.row = row
        self.client_id = row.client_id
        self.redirect_uris: list[str] = json.loads(row.redirect_uris)
        self.grant_types: list[str] = json.loads(row.grant_types)
        self.scopes = set(row.scopes.split())

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None  # redirect_uri is always required and matched exactly

    def get_allowed_scope(self, scope: str) -> str:
        allowed = self.scopes | {"openid", "profile", "email"}
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris  # exact: no prefix, no extra path or query

    def check_client_secret(self, client_secret: str) -> bool:
        return self.row.secret_hash is not None and hmac.compare_digest(self.row.secret_hash, hash_key(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.row.public_jwks:
            return method == "private_key_jwt"  # a key-holding client always proves it has the key
        if self.row.secret_hash is None:
            return method == "none" and endpoint == "token"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


class Code:
    def __init__(self, row: AuthorizationCode) -> None:
        self.row = row

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str | None:
        return self.row.nonce

    def get_auth_time(self) -> int | None:
        return None


class Payload(OAuth2Payload):
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._list: defaultdict[str, list[str]] = defaultdict(list)
        for k, v in pairs:
            self._list[k].append(v)
        self._data = {k: v[0] for k, v in self._list.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._list


class Req(OAuth2Request):
    def __init__(
        self, method: str, uri: str, headers: Any, query: list[tuple[str, str]], form: list[tuple[str, str]]
    ) -> None:
        super().__init__(method=method, uri=uri, headers=headers)
        self._args = dict(query)
        self._form = dict(form)
        self.payload = Payload(query + form)

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


# ------------------------------------------------------------------ grants and endpoints
class S256Only(CodeChallenge):
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: Any) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge and code_challenge_method=S256")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256 (plain is not accepted)")
        super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge(self, authorization_code: Code) -> str:
        return authorization_code.row.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code: Code) -> str:
        return authorization_code.row.code_challenge_method


def _code_grant(endpoints: OAuthEndpoints) -> type:
    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]

        def save_authorization_code(self, code: str, request: Any) -> None:
            data = request.payload.data
            with endpoints.sessions.begin() as s:
                s.add(
                    AuthorizationCode(
                        code_hash=hash_key(code),
                        client_id=request.client.client_id,
                        user_id=request.user.id,
                        redirect_uri=data.get("redirect_uri", ""),
                        scope=request.client.get_allowed_scope(data.get("scope", "")),
                        code_challenge=data["code_challenge"],
                        code_challenge_method=data.get("code_challenge_method", "S256"),
                        nonce=data.get("nonce"),
                        expires_at=time.time() + endpoints.app.config.code_ttl,
                    )
                )

        def query_authorization_code(self, code: str, client: Client) -> Code | None:
            with endpoints.sessions() as s:
                row = s.get(AuthorizationCode, hash_key(code))
            if (
                row is None
                or row.client_id != client.client_id
                or row.used_at is not None
                or row.expires_at < time.time()
            ):
                return None
            return Code(row)

        def delete_authorization_code(self, authorization_code: Code) -> None:
            with endpoints.sessions.begin() as s:
                done = s.execute(
                    update(AuthorizationCode)
                    .where(
                        AuthorizationCode.code_hash == authorization_code.row.code_hash,
                        AuthorizationCode.used_at.is_(None),
                    )
                    .values(used_at=time.time())
                ).rowcount
            if done != 1:  # two exchanges of one code raced: only the first wins
                raise grants.InvalidGrantError("the authorization code was already used")

        def authenticate_user(self, authorization_code: Code) -> User | None:
            return endpoints.app.service.user(authorization_code.row.user_id)

    return CodeGrant


class ClientCredentials(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]


class PrivateKeyAssertion(JWTBearerClientAssertion):
    """RFC 7523 `private_key_jwt`: the client signs a short-lived assertion with its private key;
    the public keys were registered with the client. Each assertion's `jti` is accepted once."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, endpoints: OAuthEndpoints) -> None:
        super().__init__(validate_jti=True)
        self.endpoints = endpoints
        from bastion.auth.cache import ExpiringCache

        self.seen = ExpiringCache(100_000)

    def get_audiences(self) -> list[str]:
        base = self.endpoints.app.config.issuer.rstrip("/")
        return [f"{base}/oauth/token", base]

    def validate_jti(self, claims: Any, jti: str) -> bool:
        key = (claims.get("sub"), jti)
        if self.seen.get(key):
            return False
        self.seen.put(key, True, float(claims.get("exp") or time.time() + 300) + 120)
        return True

    def resolve_client_public_key(self, client: Client) -> Any:
        from joserfc import jwk

        return jwk.KeySet.import_key_set(json.loads(client.row.public_jwks or '{"keys": []}'))


class Server(AuthorizationServer):
    def __init__(self, endpoints: OAuthEndpoints) -> None:
        super().__init__(scopes_supported=None)
        self.endpoints = endpoints

    def query_client(self, client_id: str) -> Client | None:
        with self.endpoints.sessions() as s:
            row = s.get(OAuthClient, client_id)
        return Client(row) if row is not None and row.revoked_at is None else None

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        return None  # tokens are JWTs; refresh tokens were stored when they were made

    def get_error_uri(self, request: Any, error: Any) -> None:
        return None

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def create_oauth2_request(self, request: Req) -> Req:
        return request

    def create_json_request(self, request: Req) -> Req:
        return request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> tuple[int, Any, list]:
        return status, body, list(headers)


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def __init__(self, server: Server, endpoints: OAuthEndpoints) -> None:
        super().__init__(server)
        self.endpoints = endpoints

    def query_token(self, token: str, token_type_hint: str | None) -> dict[str, Any] | None:
        return self.endpoints.claims_of(token, token_type_hint)

    def introspect_token(self, token: dict[str, Any]) -> dict[str, Any]:
        out = {
            "active": True,
            "sub": token["sub"],
            "scope": token.get("scope", ""),
            "exp": token["exp"],
            "iat": token["iat"],
            "iss": token["iss"],
            "jti": token["jti"],
            "token_type": token.get("typ"),
            "client_id": token.get("client_id"),
        }
        return {k: v for k, v in out.items() if v is not None}

    def check_permission(self, token: Any, client: Any, request: Any) -> bool:
        return True  # any registered, authenticated client may introspect

    def create_introspection_payload(self, token: Any) -> dict[str, Any]:
        return {"active": False} if not token else self.introspect_token(token)


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]

    def __init__(self, server: Server, endpoints: OAuthEndpoints) -> None:
        super().__init__(server)
        self.endpoints = endpoints

    def query_token(self, token: str, token_type_hint: str | None) -> dict[str, Any] | None:
        return self.endpoints.claims_of(token, token_type_hint)

    def revoke_token(self, token: dict[str, Any], request: Any) -> None:
        if token.get("typ") == "refresh":
            self.endpoints.app.service.revoke_family(token.get("sid", ""), "revoked")
        else:
            request.revocations.append((token["jti"], float(token["exp"])))
            if token.get("sid"):
                self.endpoints.app.service.revoke_family(token["sid"], "revoked")


# ------------------------------------------------------------------ HTTP
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in · {client}</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>body{{font:16px system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem;color:#1b1f24}}
label{{display:block;margin:.8rem 0 .2rem}}input{{width:100%;padding:.5rem;box-sizing:border-box}}
.scopes{{background:#f3f4f6;padding:.6rem 1rem;border-radius:.4rem}}button{{margin:1rem .5rem 0 0;padding:.5rem 1rem}}
.error{{color:#b42318}}</style></head><body>
<h1>Sign in to continue to {client}</h1>{error}
<form method="post" action="{action}">{hidden}
<label for="username">Username or email</label><input id="username" name="username" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<p>{client} asks for:</p><div class="scopes">{scopes}</div>
<button name="decision" value="allow" type="submit">Allow</button><button name="decision" value="deny" type="submit" formnovalidate>Deny</button>
</form></body></html>"""

AUTHORIZE_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
)


class OAuthEndpoints:
    def __init__(self, app: TokenHost) -> None:
        self.app = app
        self.sessions = app.sessions
        self.csrf_key = hashlib.sha256(b"bastion-oauth-csrf:" + app.config.key_encryption_key.encode()).digest()
        server = Server(self)
        server.register_token_generator("default", self._generate)
        server.register_grant(_code_grant(self), [S256Only(required=True)])
        server.register_grant(ClientCredentials)
        server.register_client_auth_method(PrivateKeyAssertion.CLIENT_AUTH_METHOD, PrivateKeyAssertion(self))
        server.register_endpoint(Introspection(server, self))
        server.register_endpoint(Revocation(server, self))
        self.server = server

    def routes(self, prefix: str) -> list[Route]:
        return [
            Route(f"{prefix}/oauth/authorize", self.authorize, methods=["GET", "POST"]),
            Route(f"{prefix}/oauth/token", self.token, methods=["POST"]),
            Route(f"{prefix}/oauth/introspect", self.introspect, methods=["POST"]),
            Route(f"{prefix}/oauth/revoke", self.revoke, methods=["POST"]),
        ]

    # --------------------------------------------------------------- helpers
    def claims_of(self, token: str, hint: str | None) -> TokenClaims | None:
        order = ["refresh", "access"] if hint == "refresh_token" else ["access", "refresh"]
        for typ in order:
            try:
                claims = self.app.service.verify_own(token, typ)
            except ServiceError:
                continue
            if typ == "refresh" and "client_id" not in claims:
                with self.sessions() as s:
                    from bastion.store.models import RefreshFamily

                    fam = s.get(RefreshFamily, claims.get("sid", ""))
                claims["client_id"] = fam.client_id if fam is not None else None
            return TokenClaims(claims)
        return None

    def _generate(
        self,
        grant_type: str,
        client: Client,
        user: User | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        svc = self.app.service
        if user is None:  # client credentials: the client itself is the subject
            now = time.time()
            access, _, _ = svc._access(client.client_id, "service", scope or "", None, now, client.client_id)
            return {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": int(svc.s.access_ttl),
                "scope": scope or "",
            }
        issued = svc.start_session(_ScopedUser(user, scope or ""), None, client.client_id)  # type: ignore[arg-type]  # a User view with narrowed scopes
        out = {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": issued.scope,
            "refresh_token": issued.refresh_token,
        }
        return out

    async def _request(self, request: Request) -> Req:
        form: list[tuple[str, str]] = []
        if request.method == "POST":
            ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                raise ServiceError(415, "unsupported-media-type", "send application/x-www-form-urlencoded")
            try:
                form = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)
            except UnicodeDecodeError:
                raise ServiceError(400, "malformed-body", "the form is not valid UTF-8") from None
        query = parse_qsl(request.url.query, keep_blank_values=True)
        req = Req(request.method, str(request.url), request.headers, query, form)  # case-insensitive
        req.revocations = []
        return req

    @staticmethod
    def _respond(result: tuple[int, Any, list]) -> Response:
        status, body, headers = result
        h = dict(headers)
        h.setdefault("Cache-Control", "no-store")
        h.setdefault("Pragma", "no-cache")
        if isinstance(body, (dict, list)):
            return Response(json.dumps(body), status, h, media_type="application/json")
        return Response(body or b"", status, h)

    def _csrf(self, params: dict[str, str], issued: int) -> str:
        msg = json.dumps([params.get(k, "") for k in AUTHORIZE_PARAMS] + [issued]).encode()
        return f"{issued}.{hmac.new(self.csrf_key, msg, hashlib.sha256).hexdigest()}"

    def _csrf_ok(self, params: dict[str, str], token: str) -> bool:
        issued, _, _ = token.partition(".")
        if not issued.isdigit() or time.time() - int(issued) > 600:
            return False
        return hmac.compare_digest(self._csrf(params, int(issued)), token)

    def _page(self, params: dict[str, str], client: Client, action: str, error: str = "") -> HTMLResponse:
        fields = {k: params[k] for k in AUTHORIZE_PARAMS if k in params}
        fields["csrf"] = self._csrf(params, int(time.time()))
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in fields.items()
        )
        scopes = html.escape(client.get_allowed_scope(params.get("scope", "")) or "no extra permissions")
        body = PAGE.format(
            client=html.escape(client.row.name),
            action=html.escape(action),
            hidden=hidden,
            scopes=scopes,
            error=f'<p class="error">{html.escape(error)}</p>' if error else "",
        )
        return HTMLResponse(
            body,
            headers={
                "cache-control": "no-store",
                "x-frame-options": "DENY",
                "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; "
                "form-action 'self'; frame-ancestors 'none'",
            },
        )

    # --------------------------------------------------------------- endpoints
    async def authorize(self, request: Request) -> Response:
        req = await self._request(request)
        params = dict(req.payload.data)

        def validate() -> Any:
            return self.server.get_consent_grant(request=req, end_user=None)

        try:
            grant = await asyncio.to_thread(validate)
        except OAuth2Error as err:
            # an unknown client or an unregistered redirect_uri: never redirect, say so here
            if (
                err.error in ("invalid_client",)
                or "redirect_uri" in (err.description or "")
                or req.payload.data.get("client_id") is None
                or getattr(err, "redirect_uri", None) is None
            ):
                return self.app_problem(request, 400, err)
            return self._respond(self.server.handle_error_response(req, err))
        client: Client = grant.client
        if request.method == "GET":
            return self._page(params, client, request.url.path)
        if not self._csrf_ok(params, req.form.get("csrf", "")):
            return self._page(params, client, request.url.path, "The form expired; please sign in again.")
        if req.form.get("decision") != "allow":
            result = await asyncio.to_thread(self.server.create_authorization_response, req, None)
            return self._respond(result)
        try:
            user = await asyncio.to_thread(
                self.app.service.authenticate, req.form.get("username", ""), req.form.get("password", "")
            )
        except ServiceError:
            return self._page(params, client, request.url.path, "The username or password is wrong.")
        result = await asyncio.to_thread(self.server.create_authorization_response, req, user)
        return self._respond(result)

    def app_problem(self, request: Request, status: int, err: OAuth2Error) -> Response:
        from bastion.tokens.app import problem_response

        return problem_response(status, err.error.replace("_", "-"), err.description or err.error, request)

    async def token(self, request: Request) -> Response:
        req = await self._request(request)
        if req.form.get("grant_type") == "refresh_token":
            return await self._refresh(request, req)
        if req.form.get("grant_type") in ("password", "implicit"):
            return Response(
                json.dumps({"error": "unsupported_grant_type"}),
                400,
                {"cache-control": "no-store"},
                media_type="application/json",
            )
        result = await asyncio.to_thread(self.server.create_token_response, req)
        status, body, headers = result
        if (
            status == 200
            and isinstance(body, dict)
            and req.form.get("grant_type") == "authorization_code"
            and "openid" in str(body.get("scope", "")).split()
        ):
            body = {**body, "id_token": await asyncio.to_thread(self._id_token, req.form.get("code", ""))}
        return self._respond((status, body, headers))

    def _id_token(self, code: str) -> str:
        """The OpenID Connect ID token of an authorization-code exchange (the code was just spent)."""
        with self.sessions() as s:
            row = s.get(AuthorizationCode, hash_key(code))
            user = s.get(User, row.user_id) if row is not None else None
        if row is None or user is None:
            raise ServiceError(400, "invalid-grant", "the authorization code is gone")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.app.config.issuer,
            "sub": user.id,
            "aud": row.client_id,
            "azp": row.client_id,
            "iat": now,
            "exp": now + self.app.config.access_ttl,
            "auth_time": int(row.expires_at - self.app.config.code_ttl),
        }
        if row.nonce:
            claims["nonce"] = row.nonce
        scope = set(row.scope.split())
        if "email" in scope:
            claims["email"] = user.email
        if "profile" in scope:
            claims["preferred_username"] = user.username
        return self.app.service._sign({**claims, "typ": "id"})

    async def _refresh(self, request: Request, req: Req) -> Response:
        token = req.form.get("refresh_token", "")
        try:
            issued = await asyncio.to_thread(self.app.service.refresh, token)
        except ServiceError as exc:
            return Response(
                json.dumps({"error": "invalid_grant", "error_description": exc.detail}),
                400,
                {"cache-control": "no-store"},
                media_type="application/json",
            )
        from bastion.tokens.app import issued as issued_doc

        return Response(
            json.dumps(issued_doc(issued)), 200, {"cache-control": "no-store"}, media_type="application/json"
        )

    async def introspect(self, request: Request) -> Response:
        req = await self._request(request)
        result = await asyncio.to_thread(self.server.create_endpoint_response, "introspection", req)
        status, body, headers = result
        if status == 200 and isinstance(body, dict) and body.get("active") and body.get("jti"):
            from bastion.auth.revocation import revocation_store

            store = revocation_store(self.app.config.revocation_store)
            if await store.is_revoked(body["jti"], body.get("sub"), body.get("iat")):
                body = {"active": False}
        return self._respond((status, body, headers))

    async def revoke(self, request: Request) -> Response:
        req = await self._request(request)
        result = await asyncio.to_thread(self.server.create_endpoint_response, "revocation", req)
        await self.app.revoke(req.revocations)
        return self._respond(result)


class TokenClaims(dict):
    """Claims of a token, as Authlib's revocation endpoint wants them: a client may revoke only
    the tokens issued to it (RFC 7009 §2.1)."""

    def check_client(self, client: Client) -> bool:
        return self.get("client_id") is not None and self.get("client_id") == client.client_id


class _ScopedUser:
    """A user seen through the scope a client was granted (what start_session narrows to)."""

    def __init__(self, user: User, scope: str) -> None:
        self.id, self.role = user.id, user.role
        self.scopes = " ".join(
            s for s in scope.split() if s in set(user.scopes.split()) | {"openid", "profile", "email"}
        )


def new_client(
    sessions: Any,
    name: str,
    redirect_uris: list[str],
    grant_types: list[str],
    scopes: list[str],
    public: bool = False,
    jwks: dict[str, Any] | None = None,
) -> tuple[str, str | None]:
    """Register a client; returns (client_id, secret — shown once, stored hashed). With `jwks`
    (public keys) the client authenticates with private_key_jwt and has no secret."""
    for uri in redirect_uris:
        if "#" in uri or not (
            uri.startswith("https://") or uri.startswith("http://127.0.0.1") or uri.startswith("http://localhost")
        ):
            raise ValueError(f"redirect URI {uri!r}: https (or http on loopback), no fragment")
    allowed = {"authorization_code", "client_credentials", "refresh_token"}
    if not set(grant_types) <= allowed:
        raise ValueError(f"grant types are among {sorted(allowed)} (implicit and password are not offered)")
    if public and "client_credentials" in grant_types:
        raise ValueError("a public client cannot use client credentials")
    if jwks is not None:
        keys = jwks.get("keys") if isinstance(jwks, dict) else None
        if not keys or any("d" in k for k in keys):
            raise ValueError("jwks holds the client's public keys (no private parts)")
    client_id = "cl_" + secrets.token_hex(8)
    secret = None if public or jwks is not None else "cs_" + secrets.token_urlsafe(32)
    with sessions.begin() as s:
        s.add(
            OAuthClient(
                client_id=client_id,
                secret_hash=hash_key(secret) if secret else None,
                name=name,
                redirect_uris=json.dumps(redirect_uris),
                grant_types=json.dumps(grant_types),
                scopes=" ".join(scopes),
                created_at=time.time(),
                public_jwks=json.dumps(jwks) if jwks is not None else None,
            )
        )
    return client_id, secret
