"""An OAuth 2.0 / OpenID Connect relying party, as a library (the `login` policy is its one user).

- `provider`: the provider's configuration, discovery, client authentication
  (`client_secret_post`, `private_key_jwt`), the code exchange, refresh, ID token / userinfo
  identification, token revocation (RFC 7009) and the end-session URL;
- `flow`: the authorization request (PKCE S256, `state`, `nonce`, a browser binding) and the
  same-origin return path;
- `session`: what a server-side session holds, its refresh, and the session / login cookies.

Nothing here knows the gateway's pipeline: the policy turns these steps into answers.
"""

from bastion.auth.oidc.flow import AuthorizationRequest, safe_return_path
from bastion.auth.oidc.provider import Endpoints, ProviderConfig, RelyingParty
from bastion.auth.oidc.session import SessionCookies, needs_refresh, new_session, refreshed_session

__all__ = [
    "AuthorizationRequest",
    "Endpoints",
    "ProviderConfig",
    "RelyingParty",
    "SessionCookies",
    "needs_refresh",
    "new_session",
    "refreshed_session",
    "safe_return_path",
]
