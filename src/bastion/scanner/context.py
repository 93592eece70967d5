"""What every check gets: the client, the target's operations, the identities, the options."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from bastion.scanner.client import Resp, ScanClient
from bastion.scanner.model import Finding, Identity, Operation


@dataclass
class ScanContext:
    client: ScanClient
    base_url: str
    ops: list[Operation]
    spec: dict[str, Any] | None
    spec_url: str | None
    identities: list[Identity]
    allow_destructive: bool = False
    graphql_path: str | None = None
    canary: Any = None
    burst: int = 25
    findings: list[Finding] = field(default_factory=list)

    @property
    def a(self) -> Identity | None:
        return self.identities[0] if self.identities else None

    @property
    def b(self) -> Identity | None:
        return self.identities[1] if len(self.identities) > 1 else None

    def auth(self, who: Identity | None) -> dict[str, str]:
        return dict(who.headers) if who else {}

    def fill(self, op: Operation, value: str | None = None) -> str:
        v = value or (self.a.subject if self.a and self.a.subject else "1")
        return re.sub(r"\{[^}]+\}", v, op.path)

    def gets(self, *, with_params: bool | None = None) -> list[Operation]:
        out = [o for o in self.ops if o.method == "GET"]
        if with_params is not None:
            out = [o for o in out if bool(o.path_params) == with_params]
        return out

    async def send(self, op: Operation, who: Identity | None, **kw: Any) -> Resp:
        return await self.client.request(op.method, self.fill(op, kw.pop("value", None)),
                                         headers={**self.auth(who), **kw.pop("headers", {})}, **kw)


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str] | None:
    try:
        h, p, s = token.split(".")
        dec = lambda x: orjson.loads(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))  # noqa: E731
        return dec(h), dec(p), s
    except Exception:
        return None


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sample(schema: Any, depth: int = 0) -> Any:
    """A small value that fits a schema (enough to get past type checks)."""
    if not isinstance(schema, dict) or depth > 5:
        return "x"
    if "example" in schema:
        return schema["example"]
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    t = schema.get("type")
    t = t[0] if isinstance(t, list) else t
    if t == "object" or "properties" in schema:
        req = schema.get("required") or list((schema.get("properties") or {}).keys())[:3]
        return {k: sample((schema.get("properties") or {}).get(k, {}), depth + 1) for k in req}
    if t == "array":
        return [sample(schema.get("items", {}), depth + 1)]
    if t == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if t == "number":
        return 1.5
    if t == "boolean":
        return True
    if schema.get("format") == "email":
        return "scanner@example.com"
    return "scan"
