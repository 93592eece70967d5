"""Authentication as a library: JWT verification (static keys and JWKS), API keys, OAuth2 token
introspection, revocation, and a verified-token cache. The `auth` policy wires them to routes;
the token service and the ASGI middleware use the same pieces."""

from bastion.auth.errors import AuthError

__all__ = ["AuthError"]
