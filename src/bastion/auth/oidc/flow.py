"""The authorization request of the code flow: PKCE S256 (RFC 7636), `state` usable once and
bound to the browser by a cookie value (`binding`), and an OIDC `nonce`. Authlib builds the
code challenge and the request URI."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge


def _token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class AuthorizationRequest:
    """One login attempt. `pending()` is what the gateway keeps (by `state`) until the callback."""

    return_to: str
    state: str = field(default_factory=_token)
    nonce: str = field(default_factory=_token)
    binding: str = field(default_factory=_token)  # the login cookie's value: state belongs to this browser
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))

    def url(self, authorization_endpoint: str, client_id: str, redirect_uri: str, scopes: list[str]) -> str:
        return str(
            prepare_grant_uri(
                authorization_endpoint,
                client_id,
                "code",
                redirect_uri=redirect_uri,
                scope=" ".join(scopes),
                state=self.state,
                nonce=self.nonce,
                code_challenge=create_s256_code_challenge(self.verifier),
                code_challenge_method="S256",
            )
        )

    def pending(self) -> dict[str, Any]:
        return {"binding": self.binding, "verifier": self.verifier, "nonce": self.nonce, "return_to": self.return_to}


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
