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
    origins: list[str] = field(default_factory=list)  # trusted browser origins, when the user names them
    findings: list[Finding] = field(default_factory=list)
    _views: dict[str, dict[str, Resp]] | None = None
    elevated: Identity | None = None  # a throwaway account a confirmed escalation raised (api5)

    async def views(self) -> dict[str, dict[str, Resp]]:
        """Every documented parameterless GET (list, "me" and debug endpoints), as each of the first
        two identities and anonymously, fetched once per scan: the harvest that BOLA, the
        credential check and the injection probes start from."""
        if self._views is None:
            self._views = {}
            for op in self.gets(with_params=False)[:30]:
                got: dict[str, Resp] = {}
                for who in [i for i in (self.a, self.b) if i is not None] + [None]:
                    got[who.name if who else ""] = await self.send(op, who)
                self._views[op.path] = got
        return self._views

    async def values_for(self, op: Operation, param: str, who: Identity | None = None) -> list[str]:
        """Real values for a path parameter, harvested from what `who` (default A) sees in the
        collection the operation sits under: `/orders/{order_id}` takes the `order_id` or `id`
        of the items `/orders` lists. A's subject and username when the parameter names a user."""
        who = who or self.a
        out: list[str] = []
        prefix = op.path.split("{" + param + "}")[0].rstrip("/")
        view = (await self.views()).get(prefix, {}).get(who.name if who else "")
        keys = harvest_keys(param)
        if view is not None and view.ok:
            for item in items_of(view.json()):
                for k in keys:
                    if (
                        isinstance(item, dict)
                        and isinstance(item.get(k), (str, int))
                        and not isinstance(item.get(k), bool)
                    ):
                        out.append(str(item[k]))
                        break
        if who is not None:
            low = param.lower()
            if who.username and ("name" in low or "user" in low):
                out.append(who.username)
            if who.subject:
                out.append(who.subject)
        return list(dict.fromkeys(out))

    @property
    def a(self) -> Identity | None:
        return self.identities[0] if self.identities else None

    @property
    def b(self) -> Identity | None:
        return self.identities[1] if len(self.identities) > 1 else None

    def auth(self, who: Identity | None) -> dict[str, str]:
        return dict(who.headers) if who else {}

    def fill(self, op: Operation, value: str | None = None) -> str:
        userish = len(op.path_params) == 1 and any(w in op.path_params[0].lower() for w in ("user", "name", "login"))
        v = (
            value
            or (self.a.username if userish and self.a and self.a.username else None)
            or (self.a.subject if self.a and self.a.subject else "1")
        )
        return re.sub(r"\{[^}]+\}", v, op.path)

    def gets(self, *, with_params: bool | None = None) -> list[Operation]:
        out = [o for o in self.ops if o.method == "GET"]
        if with_params is not None:
            out = [o for o in out if bool(o.path_params) == with_params]
        return out

    async def send(self, op: Operation, who: Identity | None, **kw: Any) -> Resp:
        if op.form and isinstance(kw.get("json"), dict):  # the same fields, form-encoded
            from urllib.parse import urlencode

            kw["content"] = urlencode(
                {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in kw.pop("json").items()}
            )
            kw["headers"] = {"Content-Type": "application/x-www-form-urlencoded", **kw.get("headers", {})}
        return await self.client.request(
            op.method, self.fill(op, kw.pop("value", None)), headers={**self.auth(who), **kw.pop("headers", {})}, **kw
        )


def harvest_keys(param: str) -> list[str]:
    low = param.lower()
    keys = [param]
    for suffix in ("_id", "id", "_uuid", "uuid", "_name", "name"):
        if low.endswith(suffix) and len(low) > len(suffix):
            keys += ["id" if "id" in suffix else ("uuid" if "uuid" in suffix else "name")]
    keys += ["id", "uuid", "username", "name", "slug"]
    return list(dict.fromkeys(keys))


def items_of(doc: Any) -> list[Any]:
    """The objects of a list answer: the list itself, or the first list inside an envelope
    ({"items": [...]}, {"data": {"users": [...]}})."""
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        for v in doc.values():
            if isinstance(v, list):
                return v
        for v in doc.values():
            if isinstance(v, dict):
                inner = items_of(v)
                if inner:
                    return inner
        return [doc]
    return []


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


REGISTERISH = re.compile(r"(register|signup|sign-up|sign_up|join|users/?$|accounts/?$)", re.I)
LOGINISH = re.compile(r"(login|signin|sign-in|sign_in|token|session|auth)", re.I)
PASSWORDISH = re.compile(r"^(password|passwd|pwd|pass)$", re.I)
USERISH = re.compile(r"^(username|user_name|user|login|name|email|e-mail|mail)$", re.I)


def _props(op: Operation) -> dict[str, Any]:
    return ((op.body_schema or {}).get("properties") or {}) if op.body_schema else {}


def credential_ops(ops: list[Operation]) -> tuple[Operation | None, Operation | None]:
    """The registration and login operations: POSTs without path parameters whose bodies take a
    password and a user name or e-mail."""

    def creds(op: Operation) -> bool:
        props = _props(op)
        return (
            op.method == "POST"
            and not op.path_params
            and any(PASSWORDISH.match(k) for k in props)
            and any(USERISH.match(k) for k in props)
        )

    login = next((o for o in ops if creds(o) and LOGINISH.search(o.path) and not REGISTERISH.search(o.path)), None)
    register = next((o for o in ops if creds(o) and REGISTERISH.search(o.path) and o is not login), None)
    return register, login


def token_in(doc: Any) -> str | None:
    """The bearer token in a login answer: a JWT-looking string anywhere, else a *token* key."""
    if isinstance(doc, str) and doc.count(".") == 2 and doc.startswith("eyJ"):
        return doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            if isinstance(v, str) and ("token" in k.lower() or (v.count(".") == 2 and v.startswith("eyJ"))):
                return v
        for v in doc.values():
            t = token_in(v)
            if t:
                return t
    return None


@dataclass
class Account:
    """A throwaway account the scan registered itself (the only account it ever changes)."""

    username: str
    password: str
    email: str
    answer: Any
    identity: Identity | None = None
    login_answer: Any = None


async def register_account(ctx: ScanContext, extra: dict[str, Any] | None = None) -> Account | None:
    import secrets

    register, login = credential_ops(ctx.ops)
    if register is None:
        return None
    name = "scan" + secrets.token_hex(4)
    password = "Scan-" + secrets.token_urlsafe(12)
    email = f"{name}@example.com"
    body = sample(register.body_schema)
    body = body if isinstance(body, dict) else {}
    for k, schema in _props(register).items():
        lk = k.lower()
        if PASSWORDISH.match(k) or "password" in lk:
            body[k] = password
        elif "mail" in lk:
            body[k] = email
        elif USERISH.match(k) or lk in ("first_name", "last_name", "full_name", "display_name"):
            body[k] = name
        elif "phone" in lk or "mobile" in lk:
            body[k] = "555" + "".join(secrets.choice("0123456789") for _ in range(7))
        elif (
            isinstance(schema, dict)
            and schema.get("type", "string") == "string"
            and not schema.get("enum")
            and not schema.get("format")
        ):
            body[k] = name  # unique, in case the field is
    body.update(extra or {})
    r = await ctx.send(register, None, json=body)
    if not r.ok:
        return None
    acct = Account(name, password, email, r.json())
    acct.identity = await login_account(ctx, acct)
    return acct


async def login_account(ctx: ScanContext, acct: Account, password: str | None = None) -> Identity | None:
    _, login = credential_ops(ctx.ops)
    if login is None:
        return None
    body: dict[str, Any] = {}
    for k in _props(login):
        if PASSWORDISH.match(k):
            body[k] = password or acct.password
        elif "mail" in k.lower():
            body[k] = acct.email
        elif USERISH.match(k):
            body[k] = acct.username
    r = await ctx.send(login, None, json=body)
    acct.login_answer = r.json() if r.ok else None
    token = token_in(r.json()) if r.ok else None
    if not token:
        return None
    parts = jwt_parts(token)
    sub = str(parts[1].get("sub")) if parts and parts[1].get("sub") is not None else None
    return Identity(acct.username, {"Authorization": f"Bearer {token}"}, sub, acct.username)
