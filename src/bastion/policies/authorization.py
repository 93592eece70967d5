"""Function- and object-level authorization (OWASP API5, API1) on what `auth` established.

- `claims`: each named claim must hold one of the listed values (for list claims: contain one),
  e.g. `role: [admin]` for an admin area.
- `objects`: a path parameter must equal a claim of the principal (`/users/{user_id}/orders`
  with `user_id == sub`), unless the principal has a bypass scope; a mismatch answers 403, or
  404 to keep the object's existence secret.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from bastion.http import Request, Response, problem
from bastion.pipeline import Context, Policy, PolicyConfig


class ObjectRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    param: str = Field(description="Path parameter of the route, e.g. user_id.")
    claim: str = Field("sub", description="Claim it must equal.")
    bypass_scopes: list[str] = Field(default_factory=list, description="Scopes that skip this rule (administrators).")
    status: Literal[403, 404] = Field(403, description="Answer on a mismatch.")


class AuthorizationConfig(PolicyConfig):
    claims: dict[str, list[Any]] = Field(default_factory=dict, description="Claim → accepted values.")
    objects: list[ObjectRule] = Field(default_factory=list, description="Object-level rules.")


class Authorization(Policy[AuthorizationConfig]):
    name: ClassVar[str] = "authorization"
    priority: ClassVar[int] = 650  # after auth, before rate limits
    Config = AuthorizationConfig

    def __init__(self, config: AuthorizationConfig, env) -> None:
        super().__init__(config, env)
        self.claims = {k: [str(v) for v in vs] for k, vs in config.claims.items()}
        self.objects = config.objects

    def on_request_sync(self, req: Request, ctx: Context) -> Response | None:
        if not self.claims and not self.objects:
            return None
        principal = ctx.principal
        if principal is None:
            return problem(
                401,
                "unauthenticated",
                "authentication required",
                request_id=req.request_id,
                headers=[(b"www-authenticate", b'Bearer realm="bastion"')],
            )
        claims = principal.claims
        for name, accepted in self.claims.items():
            value = claims.get(name)
            values = [str(v) for v in value] if isinstance(value, list) else [str(value)] if value is not None else []
            if not any(v in accepted for v in values):
                ctx.log_fields["authorization"] = {"claim": name}
                return problem(403, "forbidden", f"claim {name} does not allow this", request_id=req.request_id)
        scopes = principal.scopes
        for rule in self.objects:
            if rule.bypass_scopes and any(s in scopes for s in rule.bypass_scopes):
                continue
            wanted = req.path_params.get(rule.param)
            actual = claims.get(rule.claim)
            if wanted is None or actual is None or str(actual) != wanted:
                ctx.log_fields["authorization"] = {"object": rule.param}
                if rule.status == 404:
                    return problem(404, "not-found", "no route matches this request", request_id=req.request_id)
                return problem(
                    403, "forbidden", f"this {rule.param} belongs to someone else", request_id=req.request_id
                )
        return None
