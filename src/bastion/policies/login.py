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

The protocol steps are a library, `bastion.auth.oidc`; this policy only turns them into answers.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, model_validator

from bastion.auth.errors import AuthError
from bastion.auth.oidc import (
    AuthorizationRequest,
    ProviderConfig,
    RelyingParty,
    SessionCookies,
    needs_refresh,
    new_session,
    refreshed_session,
    safe_return_path,
)
from bastion.auth.sessions import SessionStore
from bastion.http import Request, Response, problem
from bastion.net.fetch import FetchError
from bastion.pipeline import Context, Policy, PolicyConfig
from bastion.principal import Principal

__all__ = ["Login", "LoginConfig", "ProviderConfig", "safe_return_path"]

log = logging.getLogger("bastion.login")
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
PROVIDER_FAILED = (FetchError, OSError, ValueError)  # unreachable, or an answer that is not JSON


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


class Login(Policy[LoginConfig]):
    name: ClassVar[str] = "login"
    priority: ClassVar[int] = 720  # before auth (700): a session is a credential
    Config = LoginConfig

    def __init__(self, config: LoginConfig, env: Any) -> None:
        super().__init__(config, env)
        self.active = config.provider is not None and config.enabled
        if not self.active:
            return
        if config.provider not in config.providers:
            raise ValueError(f"login.provider {config.provider!r} is not in login.providers")
        if not config.redirect_uri or not config.session_secret:
            raise ValueError("a login route needs login.redirect_uri and login.session_secret")
        self.redirect_uri: str = config.redirect_uri
        self.rp = RelyingParty(config.providers[config.provider], config.redirect_uri, env.config_dir)
        parts = urlsplit(config.redirect_uri)
        self.callback_path = parts.path
        self.logout_path = config.logout_path or self.callback_path.rsplit("/", 1)[0] + "/logout"
        self.origins = set(config.allowed_origins) or {f"{parts.scheme}://{parts.netloc}"}
        self.store = SessionStore(
            config.session_store, config.session_secret, prefix=f"bastion:session:{config.provider}"
        )
        self.cookies = SessionCookies(config.cookie_name, config.cookie_secure)
        self.failures: dict[str, int] = {}

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
        session = await self._session(req)
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
        return self._admit(req, ctx, session)

    async def _session(self, req: Request) -> dict[str, Any] | None:
        """The browser's live session (refreshed when its access token is about to expire)."""
        sid = req.cookies().get(self.cookies.session) or None
        if sid is None:
            return None
        session = await self.store.get("s", sid)
        if session is None:
            return None
        now = time.time()
        if session["expires_at"] <= now:
            await self.store.delete("s", sid)
            return None
        if needs_refresh(session, self.config.refresh_before, now):
            return await self._refresh(sid, session)
        return session

    def _admit(self, req: Request, ctx: Context, session: dict[str, Any]) -> Response | None:
        """The session's user is the caller; the upstream sees neither of the gateway's cookies."""
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
        raw = req.header(b"cookie")
        if raw is not None:
            ctx.drop_request_headers.add(b"cookie")
            kept = self.cookies.forwarded_cookie(raw)
            if kept is not None:
                up.append((b"cookie", kept))
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

    async def _start(self, req: Request) -> Response:
        """Send a page load to the provider; anything else gets 401."""
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
            ep = await self.rp.discover()
        except PROVIDER_FAILED as exc:
            log.warning("provider %s unreachable (%s)", self.config.provider, exc)
            return problem(
                503,
                "login-unavailable",
                "the identity provider cannot be reached",
                request_id=req.request_id,
                headers=[(b"retry-after", b"5")],
            )
        back = req.path + ("?" + req.query.decode("latin-1") if req.query else "")
        attempt = AuthorizationRequest(return_to=safe_return_path(back))
        await self.store.put("state", attempt.state, attempt.pending(), ttl=600)
        target = attempt.url(ep.authorization_endpoint, self.rp.p.client_id, self.redirect_uri, self.rp.p.scopes)
        return Response(
            302,
            [
                (b"location", target.encode()),
                (b"cache-control", b"no-store"),
                self.cookies.set(self.cookies.login, attempt.binding, 600),
            ],
            b"",
        )

    async def _callback(self, req: Request) -> Response:
        """The provider's redirect back: check state and its browser, exchange the code, make a session."""
        q = dict(parse_qsl(req.query.decode("latin-1"), keep_blank_values=True))
        state = q.get("state")
        if not state or len(state) > 128:
            return self._refuse(req, "missing state")
        pending = await self.store.pop("state", state)  # single use: a replayed callback finds nothing
        if pending is None:
            return self._refuse(req, "unknown or used state")
        if not secrets.compare_digest(req.cookies().get(self.cookies.login) or "", pending["binding"]):
            return self._refuse(req, "state was issued to another browser")
        if "error" in q or not q.get("code"):
            return self._refuse(req, f"the provider answered {q.get('error', 'without a code')}")
        try:
            tokens = await self.rp.exchange_code(q["code"], pending["verifier"])
            who = await self.rp.identify(tokens, pending["nonce"])
        except AuthError as exc:
            return self._refuse(req, exc.reason)
        except PROVIDER_FAILED as exc:
            log.warning("provider %s failed during login (%s)", self.config.provider, exc)
            return problem(502, "login-failed", "the identity provider failed", request_id=req.request_id)
        sid = secrets.token_urlsafe(32)
        ttl = self.config.session_ttl
        await self.store.put("s", sid, new_session(who, tokens, time.time(), ttl), ttl)
        return Response(
            302,
            [
                (b"location", pending["return_to"].encode("latin-1", "replace")),
                (b"cache-control", b"no-store"),
                self.cookies.set(self.cookies.session, sid, ttl),
                self.cookies.set(self.cookies.login, "", 0),
            ],
            b"",
        )

    async def _refresh(self, sid: str, session: dict[str, Any]) -> dict[str, Any] | None:
        try:
            tokens = await self.rp.refresh(session["refresh_token"])
        except (AuthError, *PROVIDER_FAILED) as exc:
            log.info("session refresh failed (%s): the session ends", type(exc).__name__)
            await self.store.delete("s", sid)
            return None
        now = time.time()
        session = refreshed_session(session, tokens, now)
        await self.store.put("s", sid, session, max(1.0, session["expires_at"] - now))
        return session

    async def _logout(self, req: Request) -> Response:
        """End the session here and at the provider (revocation, end-session redirect)."""
        if req.method not in ("GET", "POST"):
            return problem(
                405, "method-not-allowed", "GET or POST", request_id=req.request_id, headers=[(b"allow", b"GET, POST")]
            )
        sid = req.cookies().get(self.cookies.session) or None
        session = await self.store.pop("s", sid) if sid else None
        after = self.config.post_logout_redirect
        target = safe_return_path(after) if after.startswith("/") else after
        if session is not None:
            try:
                await self.rp.revoke(session)
                target = await self.rp.end_session_url(session.get("id_token"), after) or target
            except PROVIDER_FAILED as exc:
                log.warning("provider %s: token revocation at logout failed (%s)", self.config.provider, exc)
        return Response(
            302,
            [
                (b"location", target.encode("latin-1", "replace")),
                (b"cache-control", b"no-store"),
                self.cookies.set(self.cookies.session, "", 0),
            ],
            b"",
        )

    def _refuse(self, req: Request, why: str) -> Response:
        self.failures[why] = self.failures.get(why, 0) + 1
        return problem(
            400,
            "login-failed",
            why,
            request_id=req.request_id,
            headers=[self.cookies.set(self.cookies.login, "", 0)],
        )

    async def close(self) -> None:
        if self.active:
            await self.store.close()
