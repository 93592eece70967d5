"""A browser's server-side session after login, and the two cookies of the flow.

The session (kept encrypted in `bastion.auth.sessions.SessionStore`) holds the user's claims and
the provider's tokens; the browser holds only a random id in an HttpOnly, SameSite=Lax cookie.
The login cookie carries the `state` binding between the redirect and the callback. Neither
cookie is the upstream's business: `forwarded_cookie` strips both from the Cookie header.
"""

from __future__ import annotations

from typing import Any


def _access_expiry(tokens: dict[str, Any], now: float) -> float | None:
    expires_in = tokens.get("expires_in")
    return now + float(expires_in) if isinstance(expires_in, (int, float)) else None


def new_session(who: dict[str, Any], tokens: dict[str, Any], now: float, ttl: float) -> dict[str, Any]:
    """The session for the user `who` (claims, `sub` included) with the token response `tokens`."""
    return {
        "sub": who["sub"],
        "claims": who,
        "scope": tokens.get("scope", ""),
        "access_token": tokens["access_token"],
        "refresh_token": tokens.get("refresh_token"),
        "id_token": tokens.get("id_token"),
        "created": now,
        "expires_at": now + ttl,
        "access_expires_at": _access_expiry(tokens, now),
    }


def needs_refresh(session: dict[str, Any], refresh_before: float, now: float) -> bool:
    """The access token expires within `refresh_before` seconds and there is a refresh token."""
    expires = session.get("access_expires_at")
    return bool(expires and session.get("refresh_token") and expires - refresh_before <= now)


def refreshed_session(session: dict[str, Any], tokens: dict[str, Any], now: float) -> dict[str, Any]:
    """`session` with the refresh response's tokens (a provider may keep the refresh token)."""
    return {
        **session,
        "access_token": tokens["access_token"],
        "refresh_token": tokens.get("refresh_token", session["refresh_token"]),
        "access_expires_at": _access_expiry(tokens, now),
    }


class SessionCookies:
    """The session cookie (`name`) and the login cookie derived from it."""

    def __init__(self, name: str, secure: bool) -> None:
        self.session = name
        self.login = name.replace("session", "login") if "session" in name else name + "_login"
        self.secure = secure

    def set(self, name: str, value: str, max_age: int) -> tuple[bytes, bytes]:
        """A Set-Cookie header; `max_age` 0 with an empty value clears the cookie."""
        attrs = f"{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}"
        if self.secure:
            attrs += "; Secure"
        return (b"set-cookie", attrs.encode())

    def forwarded_cookie(self, raw: bytes) -> bytes | None:
        """The Cookie header for the upstream: `raw` without the gateway's two cookies (None if empty)."""
        kept = [
            p.strip()
            for p in raw.decode("latin-1").split(";")
            if p.strip() and p.strip().partition("=")[0] not in (self.session, self.login)
        ]
        return "; ".join(kept).encode("latin-1") if kept else None
