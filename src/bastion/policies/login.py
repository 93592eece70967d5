"""Login at the gateway: an OAuth 2.0 / OpenID Connect relying party with server-side sessions.

On a route with `login: {provider: NAME}`:
- a request with `Authorization` is left to the `auth` policy (API clients keep using tokens);
- a browser with a valid session cookie is the session's user: the upstream gets the principal
  headers (and, with `forward_access_token`, `Authorization: Bearer <access token>`); tokens close
  to expiry are refreshed here, and a failed refresh ends the session;
- anyone else is sent to the provider (authorization code, PKCE S256, `state` bound to this
  browser by a cookie and usable once, `nonce`), or gets 401 if it is not a page load;
- `redirect_uri`'s path is the callback: the code is exchanged, the ID token checked (signature
  from the provider's JWKS, `iss`, `aud`, `nonce`, `exp`), a session made;
- `logout_path` revokes the provider's tokens (RFC 7009), deletes the session, clears the cookie
  and follows the provider's end-session endpoint when it has one;
- state-changing requests authenticated by the cookie must come from an allowed Origin (CSRF).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bastion.auth.errors import AuthError
from bastion.auth.jwt import Issuer, JwksSource, JwtVerifier, KeySet
from bastion.auth.sessions import SessionStore
from bastion.http import Request, Response, problem
from bastion.net.fetch import FetchError, fetch
from bastion.pipeline import Context, Policy, PolicyConfig
from bastion.principal import Principal

log = logging.getLogger("bastion.login")
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


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


class LoginConfig(PolicyConfig):
    providers: dict[str, ProviderConfig] = Field(default_factory=dict, description="Identity providers by name.")
    provider: str | None = Field(None, description="The provider this route logs in with (unset: no login here).")
    redirect_uri: str | None = Field(
        None, description="The exact callback URL registered with the provider; its path must be under this route."
    )
    session_store: str = Field(
        "memory",
        description="'memory' (one process), a Redis URL, or the identity "
        "store's database URL (sqlite:///…, postgresql://…) — every gateway.",
    )
    session_secret: str | None = Field(None, description="Fernet key(s) that encrypt sessions at rest; use ${ENV}.")
    session_ttl: int = Field(8 * 3600, ge=60, description="A session ends after this long, whatever happens.")
    cookie_name: str = Field(
        "__Host-bastion_session",
        description="Session cookie (the __Host- prefix pins it to this host, path / and Secure).",
    )
    cookie_secure: bool = Field(True, description="Mark cookies Secure (browsers accept it on http://localhost).")
    logout_path: str | None = Field(None, description="Path that logs out (default: <callback dir>/logout).")
    post_logout_redirect: str = Field("/", description="Where to go after logout without an end-session endpoint.")
    forward_access_token: bool = Field(False, description="Send the user's access token upstream as Bearer.")
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to make cookie-"
        "authenticated POST/PUT/PATCH/DELETE (default: the redirect_uri's origin).",
    )
    refresh_before: int = Field(60, ge=0, description="Refresh the access token this many seconds before it expires.")
    unauthenticated: Literal["redirect", "401"] = Field(
        "redirect", description="Page loads without a session: send to the provider, or answer 401."
    )

    @model_validator(mode="after")
    def _refs(self) -> LoginConfig:
        # a route's block alone may name a provider of the defaults; the merged config is
        # checked again when the gateway builds the route
        if self.provider is not None and self.providers and self.provider not in self.providers:
            raise ValueError(f"provider {self.provider!r} is not in providers")
        return self


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def safe_return_path(value: str | None) -> str:
    """A same-origin path to go back to; anything else (absolute URLs, `//host`, backslashes) is '/'."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 0x20 for c in value)
    ):
        return "/"
    return value


class Login(Policy[LoginConfig]):
    name: ClassVar[str] = "login"
    priority: ClassVar[int] = 720  # before auth (700): a session is a credential
    Config = LoginConfig

    def __init__(self, config: LoginConfig, env) -> None:
        super().__init__(config, env)
        self.active = config.provider is not None and config.enabled
        if not self.active:
            return
        if config.provider not in config.providers:
            raise ValueError(f"login.provider {config.provider!r} is not in login.providers")
        if not config.redirect_uri or not config.session_secret:
            raise ValueError("a login route needs login.redirect_uri and login.session_secret")
        self.p = config.providers[config.provider]
        self.signing_key: Any = None  # private_key_jwt: an RSA or EC key (checked when loaded)
        if self.p.client_auth == "private_key_jwt":
            from pathlib import Path

            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            path = Path(env.config_dir) / str(self.p.private_key_file)
            try:
                self.signing_key = load_pem_private_key(path.read_bytes(), None)
            except (OSError, ValueError, TypeError) as exc:
                raise ValueError(f"login: private_key_file {path} cannot be used ({exc})") from None
        parts = urlsplit(config.redirect_uri)
        self.callback_path = parts.path
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.logout_path = config.logout_path or self.callback_path.rsplit("/", 1)[0] + "/logout"
        self.origins = set(config.allowed_origins) or {self.origin}
        self.store = SessionStore(
            config.session_store, config.session_secret, prefix=f"bastion:session:{config.provider}"
        )
        self.cookie = config.cookie_name
        self.login_cookie = (
            config.cookie_name.replace("session", "login")
            if "session" in config.cookie_name
            else config.cookie_name + "_login"
        )
        self.endpoints: dict[str, Any] | None = None
        self.verifier: JwtVerifier | None = None
        self.failures: dict[str, int] = {}

    # ------------------------------------------------------------------ provider
    async def _endpoints(self) -> dict[str, Any]:
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
        ep = {
            k: getattr(p, k) or doc.get(k)
            for k in (
                "authorization_endpoint",
                "token_endpoint",
                "jwks_uri",
                "userinfo_endpoint",
                "revocation_endpoint",
                "end_session_endpoint",
            )
        }
        ep["issuer"] = p.issuer or doc.get("issuer")
        if ep["jwks_uri"] and ep["issuer"]:
            self.verifier = JwtVerifier(
                [
                    Issuer(
                        issuer=ep["issuer"],
                        algorithms=tuple(p.algorithms),
                        audiences=(p.client_id,),
                        static=KeySet(),
                        jwks=JwksSource(ep["jwks_uri"], tuple(p.algorithms), min_refresh=5),
                        required=("exp", "iat", "sub"),
                        leeway=30,
                        max_age=None,
                        typ_values=("id", ""),
                    )
                ]
            )  # ID tokens: typ "id" or none
        self.endpoints = ep
        return ep

    def _client_auth(self, endpoint: str) -> dict[str, str]:
        """The client's credentials for a call to the provider's `endpoint`."""
        if self.signing_key is not None:
            import jwt as pyjwt

            now = int(time.time())
            ep = self.endpoints or {}
            assertion = pyjwt.encode(
                {
                    "iss": self.p.client_id,
                    "sub": self.p.client_id,
                    "aud": ep.get("token_endpoint", endpoint),
                    "jti": secrets.token_urlsafe(16),
                    "iat": now,
                    "exp": now + 60,
                },
                self.signing_key,
                algorithm=self.p.private_key_alg,
                headers={"kid": self.p.private_key_kid} if self.p.private_key_kid else None,
            )
            return {
                "client_id": self.p.client_id,
                "client_assertion": assertion,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            }
        out = {"client_id": self.p.client_id}
        if self.p.client_secret:
            out["client_secret"] = self.p.client_secret
        return out

    async def _token_call(self, fields: dict[str, str]) -> dict[str, Any]:
        ep = await self._endpoints()
        fields = {**fields, **self._client_auth(ep["token_endpoint"])}
        status, body = await fetch(
            ep["token_endpoint"],
            method="POST",
            body=urlencode(fields).encode(),
            headers=[(b"content-type", b"application/x-www-form-urlencoded"), (b"accept", b"application/json")],
            timeout=10,
        )
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = dict(parse_qsl(body.decode("latin-1")))  # GitHub answers form-encoded without Accept
        if status != 200 or "access_token" not in doc:
            raise AuthError(f"the provider refused the token request ({doc.get('error', status)})")
        return doc

    # ------------------------------------------------------------------ request phase
    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        if not self.active:
            return None
        if req.path == self.callback_path:
            return await self._callback(req)
        if req.path == self.logout_path:
            return await self._logout(req)
        if req.header(b"authorization") is not None:
            return None  # an API client: the auth policy decides
        sid = req.cookies().get(self.cookie) or None
        session = await self.store.get("s", sid) if sid else None
        if session is not None and session["expires_at"] <= time.time():
            await self.store.delete("s", sid)  # type: ignore[arg-type]
            session = None
        if (
            session is not None
            and session.get("access_expires_at")
            and session.get("refresh_token")
            and session["access_expires_at"] - self.config.refresh_before <= time.time()
        ):
            session = await self._refresh(sid, session)  # type: ignore[arg-type]
        if session is None:
            return await self._start(req)
        if req.method not in SAFE_METHODS and not self._same_origin(req):
            self.failures["csrf"] = self.failures.get("csrf", 0) + 1
            return problem(
                403,
                "csrf-origin",
                "cookie-authenticated changes must come from this site's pages",
                request_id=req.request_id,
            )
        principal = Principal(
            str(session["sub"]),
            frozenset(session.get("scope", "").split()),
            "session",
            claims=session.get("claims", {}),
        )
        try:
            ctx.authenticate(principal, self.env.principal_headers)
        except ValueError as exc:  # the provider's claims cannot become header values
            return problem(401, "invalid-token", str(exc), request_id=req.request_id)
        up = ctx.upstream_headers
        if self.config.forward_access_token:
            up.append((b"authorization", b"Bearer " + session["access_token"].encode("latin-1")))
        # the session cookie is the gateway's credential, not the upstream's business
        raw = req.header(b"cookie")
        if raw is not None:
            ctx.drop_request_headers.add(b"cookie")
            kept = [
                p.strip()
                for p in raw.decode("latin-1").split(";")
                if p.strip() and p.strip().partition("=")[0] not in (self.cookie, self.login_cookie)
            ]
            if kept:
                up.append((b"cookie", "; ".join(kept).encode("latin-1")))
        return None

    def _same_origin(self, req: Request) -> bool:
        origin = req.header_str(b"origin")
        if origin is None:
            referer = req.header_str(b"referer")
            if referer is None:
                return False
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
        return origin in self.origins

    def _set_cookie(self, name: str, value: str, max_age: int) -> tuple[bytes, bytes]:
        attrs = f"{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}"
        if self.config.cookie_secure:
            attrs += "; Secure"
        return (b"set-cookie", attrs.encode())

    async def _start(self, req: Request) -> Response:
        accept = req.header_str(b"accept") or ""
        if self.config.unauthenticated == "401" or req.method not in ("GET", "HEAD") or "text/html" not in accept:
            return problem(
                401,
                "login-required",
                "log in first (or send a bearer token)",
                request_id=req.request_id,
                headers=[(b"www-authenticate", b'Bearer realm="bastion"')],
            )
        try:
            ep = await self._endpoints()
        except (FetchError, OSError, ValueError) as exc:
            log.warning("provider %s unreachable (%s)", self.config.provider, exc)
            return problem(
                503,
                "login-unavailable",
                "the identity provider cannot be reached",
                request_id=req.request_id,
                headers=[(b"retry-after", b"5")],
            )
        state, nonce, binding = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        back = req.path + ("?" + req.query.decode("latin-1") if req.query else "")
        await self.store.put(
            "state",
            state,
            {"binding": binding, "verifier": verifier, "nonce": nonce, "return_to": safe_return_path(back)},
            ttl=600,
        )
        params = {
            "response_type": "code",
            "client_id": self.p.client_id,
            "redirect_uri": self.config.redirect_uri,
            "scope": " ".join(self.p.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": _b64(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
        }
        target = (
            ep["authorization_endpoint"] + ("&" if "?" in ep["authorization_endpoint"] else "?") + urlencode(params)
        )
        return Response(
            302,
            [
                (b"location", target.encode()),
                (b"cache-control", b"no-store"),
                self._set_cookie(self.login_cookie, binding, 600),
            ],
            b"",
        )

    async def _callback(self, req: Request) -> Response:
        q = dict(parse_qsl(req.query.decode("latin-1"), keep_blank_values=True))
        refuse = lambda why: self._refuse(req, why)  # noqa: E731
        state = q.get("state")
        if not state or len(state) > 128:
            return refuse("missing state")
        pending = await self.store.pop("state", state)  # single use: a replayed callback finds nothing
        if pending is None:
            return refuse("unknown or used state")
        if not secrets.compare_digest(req.cookies().get(self.login_cookie) or "", pending["binding"]):
            return refuse("state was issued to another browser")
        if "error" in q or not q.get("code"):
            return refuse(f"the provider answered {q.get('error', 'without a code')}")
        try:
            tokens = await self._token_call(
                {
                    "grant_type": "authorization_code",
                    "code": q["code"],
                    "redirect_uri": self.config.redirect_uri,  # type: ignore[dict-item]
                    "code_verifier": pending["verifier"],
                }
            )
            who = await self._identify(tokens, pending["nonce"])
        except AuthError as exc:
            return refuse(exc.reason)
        except (FetchError, OSError, ValueError) as exc:
            log.warning("provider %s failed during login (%s)", self.config.provider, exc)
            return problem(502, "login-failed", "the identity provider failed", request_id=req.request_id)
        now = time.time()
        sid = secrets.token_urlsafe(32)
        expires_in = tokens.get("expires_in")
        session = {
            "sub": who["sub"],
            "claims": who,
            "scope": tokens.get("scope", ""),
            "access_token": tokens["access_token"],
            "refresh_token": tokens.get("refresh_token"),
            "id_token": tokens.get("id_token"),
            "created": now,
            "expires_at": now + self.config.session_ttl,
            "access_expires_at": now + float(expires_in) if isinstance(expires_in, (int, float)) else None,
        }
        await self.store.put("s", sid, session, self.config.session_ttl)
        return Response(
            302,
            [
                (b"location", pending["return_to"].encode("latin-1", "replace")),
                (b"cache-control", b"no-store"),
                self._set_cookie(self.cookie, sid, self.config.session_ttl),
                self._set_cookie(self.login_cookie, "", 0),
            ],
            b"",
        )

    async def _identify(self, tokens: dict[str, Any], nonce: str) -> dict[str, Any]:
        ep = await self._endpoints()
        if self.verifier is not None:
            id_token = tokens.get("id_token")
            if not id_token:
                raise AuthError("the provider sent no ID token")
            claims = (await self.verifier.verify(id_token)).claims
            if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
                raise AuthError("the ID token's nonce does not match")
            return {k: claims[k] for k in ("sub", "email", "preferred_username", "name") if k in claims}
        status, body = await fetch(
            ep["userinfo_endpoint"],
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

    async def _refresh(self, sid: str, session: dict[str, Any]) -> dict[str, Any] | None:
        try:
            tokens = await self._token_call({"grant_type": "refresh_token", "refresh_token": session["refresh_token"]})
        except (AuthError, FetchError, OSError, ValueError) as exc:
            log.info("session refresh failed (%s): the session ends", type(exc).__name__)
            await self.store.delete("s", sid)
            return None
        now = time.time()
        expires_in = tokens.get("expires_in")
        session.update(
            {
                "access_token": tokens["access_token"],
                "refresh_token": tokens.get("refresh_token", session["refresh_token"]),
                "access_expires_at": now + float(expires_in) if isinstance(expires_in, (int, float)) else None,
            }
        )
        await self.store.put("s", sid, session, max(1.0, session["expires_at"] - now))
        return session

    async def _logout(self, req: Request) -> Response:
        if req.method not in ("GET", "POST"):
            return problem(
                405, "method-not-allowed", "GET or POST", request_id=req.request_id, headers=[(b"allow", b"GET, POST")]
            )
        sid = req.cookies().get(self.cookie) or None
        session = await self.store.pop("s", sid) if sid else None
        target = (
            safe_return_path(self.config.post_logout_redirect)
            if self.config.post_logout_redirect.startswith("/")
            else self.config.post_logout_redirect
        )
        if session is not None:
            try:
                ep = await self._endpoints()
                if ep.get("revocation_endpoint"):
                    for hint in ("refresh_token", "access_token"):
                        if session.get(hint):
                            fields = {
                                "token": session[hint],
                                "token_type_hint": hint,
                                **self._client_auth(ep["revocation_endpoint"]),
                            }
                            await fetch(
                                ep["revocation_endpoint"],
                                method="POST",
                                body=urlencode(fields).encode(),
                                headers=[(b"content-type", b"application/x-www-form-urlencoded")],
                                timeout=5,
                            )
                if ep.get("end_session_endpoint"):
                    params = {"client_id": self.p.client_id}
                    if session.get("id_token"):
                        params["id_token_hint"] = session["id_token"]
                    if self.config.post_logout_redirect.startswith("http"):
                        params["post_logout_redirect_uri"] = self.config.post_logout_redirect
                    target = ep["end_session_endpoint"] + "?" + urlencode(params)
            except (FetchError, OSError, ValueError) as exc:
                log.warning("provider %s: token revocation at logout failed (%s)", self.config.provider, exc)
        return Response(
            302,
            [
                (b"location", target.encode("latin-1", "replace")),
                (b"cache-control", b"no-store"),
                self._set_cookie(self.cookie, "", 0),
            ],
            b"",
        )

    def _refuse(self, req: Request, why: str) -> Response:
        self.failures[why] = self.failures.get(why, 0) + 1
        return problem(
            400, "login-failed", why, request_id=req.request_id, headers=[self._set_cookie(self.login_cookie, "", 0)]
        )

    async def close(self) -> None:
        if self.active:
            await self.store.close()
