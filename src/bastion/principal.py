"""The authenticated principal: one type on the request's `Context`, set through one function
(`Context.authenticate`) that also publishes it to the upstream as headers — as Kong's
`kong.client.authenticate` or Starlette's `scope["user"]`. Every policy that authenticates (the
auth schemes, the login policy's sessions) produces a `Principal`; every policy that uses one
(authorization, rate limits, versioning, audit, the GraphQL guard) reads its fields, never
string keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bastion.http import Headers, identity_header_value


@dataclass(slots=True)
class Principal:
    subject: str
    scopes: frozenset[str] = frozenset()
    scheme: str = ""  # the auth scheme's name, or "session" for the login policy's browser sessions
    tier: str | None = None
    key_id: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    jti: str | None = None  # for revocation checks
    iat: float | None = None
    exp: float | None = None
    issuer: str | None = None  # the JWT issuer that vouched for `subject` (subjects are per issuer)


class PrincipalHeaders(BaseModel):
    """Names of the headers that tell the upstream who the caller is. Whatever a client sends
    under these names is dropped; the gateway sets them from the authenticated principal."""

    model_config = ConfigDict(extra="forbid")
    subject: str = Field("X-Bastion-Subject", description="The principal's subject (`sub`, API-key owner).")
    scopes: str = Field("X-Bastion-Scopes", description="Its scopes, space-separated.")
    key_id: str = Field("X-Bastion-Key-Id", description="The id of the API key used, if any.")
    tier: str = Field("X-Bastion-Tier", description="Its rate-limit tier, if any.")
    issuer: str = Field(
        "X-Bastion-Issuer",
        description="The token issuer that vouched for the subject, if "
        "any: with several issuers, the same `sub` from two of them is two different users.",
    )

    def compile(self) -> HeaderNames:
        return HeaderNames(
            self.subject.lower().encode(),
            self.scopes.lower().encode(),
            self.key_id.lower().encode(),
            self.tier.lower().encode(),
            self.issuer.lower().encode(),
        )


@dataclass(frozen=True, slots=True)
class HeaderNames:
    subject: bytes
    scopes: bytes
    key_id: bytes
    tier: bytes
    issuer: bytes

    def names(self) -> frozenset[bytes]:
        return frozenset((self.subject, self.scopes, self.key_id, self.tier, self.issuer))

    def render(self, p: Principal) -> Headers:
        """The headers for `p`; `ValueError` when a value cannot be a header (control characters)."""
        out = [
            (self.subject, identity_header_value(p.subject)),
            (self.scopes, identity_header_value(" ".join(sorted(p.scopes)))),
        ]
        if p.tier is not None:
            out.append((self.tier, identity_header_value(p.tier)))
        if p.key_id is not None:
            out.append((self.key_id, identity_header_value(p.key_id)))
        if p.issuer is not None:
            out.append((self.issuer, identity_header_value(p.issuer)))
        return out


DEFAULT_HEADERS = PrincipalHeaders().compile()
