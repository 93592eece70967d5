"""The token service's part of the admin API (served by the admin listener, behind its token):
API keys, users, OAuth clients and signing keys."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs

from bastion.auth.revocation import revocation_store
from bastion.store.models import ApiKey, User
from bastion.tokens.service import ServiceError


def key_doc(row: ApiKey) -> dict[str, Any]:
    now = time.time()
    state = "revoked" if row.revoked_at else ("expired" if row.expires_at and row.expires_at <= now else "active")
    return {
        "id": row.id,
        "owner": row.owner,
        "name": row.name,
        "display": f"bk_{row.env}_…{row.last4}",
        "scopes": row.scopes.split(),
        "tier": row.tier,
        "state": state,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "last_used_at": row.last_used_at,
        "replaced_by": row.replaced_by,
    }


def user_doc(u: User) -> dict[str, Any]:
    return {
        "id": u.id,
        "username": u.username,
        "email": u.email,
        "role": u.role,
        "scopes": u.scopes.split(),
        "created_at": u.created_at,
        "locked": bool(u.locked_until and u.locked_until > time.time()),
        "disabled": u.disabled,
    }


def _str_list(doc: dict[str, Any], key: str) -> list[str]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} is a list of strings")
    return value


async def handle(app: Any, method: str, path: str, query: bytes, doc: dict[str, Any]) -> tuple[int, Any] | None:
    """(status, JSON document) for a token-service admin path, or None when it is not one.
    Long on purpose: a flat table of (path, method) -> service call, read top to bottom like a
    router; a function per endpoint would add a hop without removing a branch."""
    svc = app.service
    parts = [p for p in path.split("/") if p][1:]  # after "admin"
    q = {k: v[-1] for k, v in parse_qs(query.decode("latin-1")).items()}
    try:
        if parts == ["keys"] and method == "GET":
            rows = await asyncio.to_thread(svc.list_keys, q.get("owner"))
            return 200, {"keys": [key_doc(r) for r in rows]}
        if parts == ["keys"] and method == "POST":
            owner = doc.get("owner")
            if not isinstance(owner, str) or not owner:
                raise ValueError("owner is required")
            expires = doc.get("expires_in")
            if expires is not None and (not isinstance(expires, (int, float)) or expires <= 0):
                raise ValueError("expires_in is a number of seconds")
            key, row = await asyncio.to_thread(
                svc.create_key,
                owner,
                _str_list(doc, "scopes"),
                doc.get("tier"),
                expires,
                str(doc.get("name", "")),
                doc.get("env"),
            )
            return 201, {**key_doc(row), "key": key}
        if len(parts) == 3 and parts[0] == "keys" and method == "POST" and parts[2] in ("revoke", "rotate"):
            if parts[2] == "revoke":
                row = await asyncio.to_thread(svc.revoke_key, parts[1])
                return 200, key_doc(row)
            overlap = float(doc.get("overlap_seconds", app.config.api_key_overlap_seconds))
            key, old, new = await asyncio.to_thread(svc.rotate_key, parts[1], overlap)
            return 200, {"old": key_doc(old), "new": {**key_doc(new), "key": key}}
        if parts == ["users"] and method == "GET":
            limit = min(int(q.get("limit", "100")), 1000)
            rows = await asyncio.to_thread(svc.users, limit, int(q.get("offset", "0")))
            return 200, {"users": [user_doc(u) for u in rows]}
        if len(parts) == 3 and parts[0] == "users" and parts[2] == "logout-all" and method == "POST":
            if await asyncio.to_thread(svc.user, parts[1]) is None:
                raise ServiceError(404, "not-found", "no such user")
            await asyncio.to_thread(svc.logout_everywhere, parts[1])
            store = revocation_store(app.config.revocation_store)
            await store.revoke_subject(parts[1], time.time(), ttl=app.config.access_ttl + 120)
            return 200, {"logged_out": parts[1]}
        if parts == ["signing-keys", "rotate"] and method == "POST":
            kid = await asyncio.to_thread(app.keyring.rotate)
            return 200, {"kid": kid}
        if parts == ["clients"] and method == "POST":
            from bastion.tokens.oauth import new_client

            client_id, secret = await asyncio.to_thread(
                new_client,
                app.sessions,
                str(doc.get("name", "client")),
                _str_list(doc, "redirect_uris"),
                _str_list(doc, "grant_types") or ["authorization_code", "refresh_token"],
                _str_list(doc, "scopes"),
                bool(doc.get("public", False)),
            )
            return 201, {"client_id": client_id, "client_secret": secret}
    except ServiceError as exc:
        return exc.status, {"error": exc.kind, "detail": exc.detail}
    return None
