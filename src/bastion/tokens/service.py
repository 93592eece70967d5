"""The token service's operations, on the identity store. Every method is synchronous (database
and argon2 work) and is called from the event loop through `asyncio.to_thread`; revocations of
access tokens go to the gateway's revocation store and are returned for the caller to apply.
"""

from __future__ import annotations

import re
import secrets
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bastion.auth.apikeys import hash_key, new_key
from bastion.store.models import ApiKey, RefreshFamily, RefreshToken, User
from bastion.tokens.keyring import Keyring
from bastion.tokens.passwords import Passwords

USERNAME = re.compile(r"[A-Za-z0-9_]{3,30}")
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")
SPECIAL = re.compile(r"[^A-Za-z0-9]")


class ServiceError(Exception):
    def __init__(self, status: int, kind: str, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail, self.errors = status, kind, detail, errors


def invalid(errors: list[dict[str, str]]) -> ServiceError:
    return ServiceError(422, "validation-failed", "the request does not match what this endpoint accepts", errors)


@dataclass(frozen=True)
class Settings:
    issuer: str
    audience: list[str]
    access_ttl: float = 900
    refresh_ttl: float = 30 * 86400
    default_scopes: tuple[str, ...] = ()
    max_failures: int = 5
    lockout_seconds: float = 900
    api_key_env: str = "live"


@dataclass
class Issued:
    access_token: str
    refresh_token: str | None
    expires_in: int
    scope: str
    revoke: list[tuple[str, float]] = field(default_factory=list)  # (jti, exp) for the revocation store


def normalise_email(value: str) -> str:
    return unicodedata.normalize("NFC", value.strip()).lower()


def check_password(password: str) -> list[str]:
    problems = []
    if not 12 <= len(password) <= 128:
        problems.append("must be 12 to 128 characters")
    if not re.search(r"[a-z]", password) or not re.search(r"[A-Z]", password):
        problems.append("must mix upper- and lower-case letters")
    if not re.search(r"[0-9]", password):
        problems.append("must contain a digit")
    if not SPECIAL.search(password):
        problems.append("must contain a character that is not a letter or digit")
    return problems


class TokenService:
    def __init__(
        self, sessions: sessionmaker[Session], keyring: Keyring, passwords: Passwords, settings: Settings
    ) -> None:
        self.sessions = sessions
        self.keys = keyring
        self.passwords = passwords
        self.s = settings

    # ---------------------------------------------------------------- users
    def register(self, username: str, email: str, password: str) -> dict[str, Any]:
        errors = []
        if not USERNAME.fullmatch(username):
            errors.append({"pointer": "/username", "message": "3 to 30 letters, digits or _"})
        email_n = normalise_email(email)
        if len(email_n) > 254 or not EMAIL.fullmatch(email_n):
            errors.append({"pointer": "/email", "message": "must be an email address"})
        errors += [{"pointer": "/password", "message": m} for m in check_password(password)]
        if errors:
            raise invalid(errors)
        hashed = self.passwords.hash(password)
        with self.sessions.begin() as s:
            taken = s.scalars(select(User).where((User.username == username) | (User.email == email_n))).first()
            if taken is not None:
                # the same answer whichever field collided, and no hint at the other account
                raise ServiceError(409, "already-registered", "this username or email cannot be used")
            user = User(
                id=str(uuid.uuid4()),
                username=username,
                email=email_n,
                password_hash=hashed,
                role="user",
                scopes=" ".join(self.s.default_scopes),
                created_at=time.time(),
            )
            s.add(user)
        return {"id": user.id, "username": user.username, "email": user.email, "role": user.role}

    def authenticate(self, login: str, password: str) -> User:
        """The user, or ServiceError 401 — the same answer for unknown users, wrong passwords,
        locked and disabled accounts."""
        now = time.time()
        key = login.strip()
        with self.sessions() as s:
            user = s.scalars(select(User).where((User.username == key) | (User.email == normalise_email(key)))).first()
        ok, rehash = self.passwords.verify(user.password_hash if user else None, password)
        refused = ServiceError(401, "invalid-credentials", "the username or password is wrong")
        if user is None:
            raise refused
        locked = user.locked_until is not None and user.locked_until > now
        if not ok or locked or user.disabled:
            if not locked:
                with self.sessions.begin() as s:  # committed before the refusal is raised
                    failures = User.failed_logins + 1
                    s.execute(update(User).where(User.id == user.id).values(failed_logins=failures))
                    count = s.scalar(select(User.failed_logins).where(User.id == user.id)) or 0
                    if count >= self.s.max_failures:
                        s.execute(
                            update(User)
                            .where(User.id == user.id)
                            .values(failed_logins=0, locked_until=now + self.s.lockout_seconds)
                        )
            raise refused
        values: dict[str, Any] = {"failed_logins": 0, "locked_until": None}
        if rehash:
            values["password_hash"] = self.passwords.hash(password)
        with self.sessions.begin() as s:
            s.execute(update(User).where(User.id == user.id).values(**values))
        return user

    def login(self, login: str, password: str, scope: str | None = None, client_id: str | None = None) -> Issued:
        user = self.authenticate(login, password)
        return self.start_session(user, scope, client_id)

    def user(self, user_id: str) -> User | None:
        with self.sessions() as s:
            return s.get(User, user_id)

    def users(self, limit: int = 100, offset: int = 0) -> list[User]:
        with self.sessions() as s:
            return list(s.scalars(select(User).order_by(User.created_at).limit(limit).offset(offset)))

    # ---------------------------------------------------------------- tokens
    def _scopes(self, user: User, asked: str | None) -> str:
        have = set(user.scopes.split())
        if asked is None:
            return " ".join(sorted(have))
        want = set(asked.split())
        return " ".join(sorted(want & have))

    def _sign(self, claims: dict[str, Any]) -> str:
        key = self.keys.active()
        return jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid, "typ": "JWT"})

    def _access(
        self, user_id: str, role: str, scope: str, family: str | None, now: float, client_id: str | None = None
    ) -> tuple[str, str, float]:
        jti = str(uuid.uuid4())
        exp = now + self.s.access_ttl
        claims = {
            "iss": self.s.issuer,
            "aud": self.s.audience if len(self.s.audience) != 1 else self.s.audience[0],
            "sub": user_id,
            "jti": jti,
            "typ": "access",
            "iat": int(now),
            "exp": int(exp),
            "scope": scope,
            "role": role,
        }
        if family:
            claims["sid"] = family
        if client_id:
            claims["client_id"] = client_id
        return self._sign(claims), jti, exp

    def _refresh(self, s: Session, user_id: str, family: str, now: float) -> str:
        jti = str(uuid.uuid4())
        exp = now + self.s.refresh_ttl
        s.add(RefreshToken(jti=jti, family_id=family, user_id=user_id, issued_at=now, expires_at=exp))
        return self._sign(
            {
                "iss": self.s.issuer,
                "aud": self.s.issuer,
                "sub": user_id,
                "jti": jti,
                "typ": "refresh",
                "iat": int(now),
                "exp": int(exp),
                "sid": family,
            }
        )

    def start_session(
        self, user: User, scope: str | None, client_id: str | None = None, refresh: bool = True
    ) -> Issued:
        now = time.time()
        granted = self._scopes(user, scope)
        family = str(uuid.uuid4())
        with self.sessions.begin() as s:
            refresh_token = None
            if refresh:
                s.add(RefreshFamily(id=family, user_id=user.id, created_at=now, client_id=client_id, scope=granted))
                s.flush()
                refresh_token = self._refresh(s, user.id, family, now)
            access, _, _ = self._access(user.id, user.role, granted, family if refresh else None, now, client_id)
        return Issued(access, refresh_token, int(self.s.access_ttl), granted)

    def verify_own(self, token: str, typ: str, audience: str | list[str] | None = None) -> dict[str, Any]:
        """Claims of a token this service signed (any published key), or ServiceError 401."""
        try:
            header = jwt.get_unverified_header(token)
            jwk = next((k for k in self.keys.jwks()["keys"] if k["kid"] == header.get("kid")), None)
            if jwk is None:
                raise jwt.InvalidTokenError("unknown kid")
            key = jwt.PyJWK(jwk)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[jwk["alg"]],
                issuer=self.s.issuer,
                audience=audience or (self.s.issuer if typ == "refresh" else self.s.audience),
                options={"require": ["exp", "iat", "sub", "jti"]},
            )
        except (jwt.InvalidTokenError, ValueError) as exc:
            raise ServiceError(401, "invalid-token", f"the {typ} token is not valid") from exc
        if claims.get("typ") != typ:
            raise ServiceError(401, "invalid-token", f"this is not a {typ} token")
        return claims

    def refresh(self, token: str) -> Issued:
        claims = self.verify_own(token, "refresh")
        now = time.time()
        reused = False
        with self.sessions.begin() as s:
            row = s.get(RefreshToken, claims["jti"])
            family = s.get(RefreshFamily, claims.get("sid", ""))
            if row is None or family is None or family.revoked_at is not None:
                raise ServiceError(401, "invalid-token", "the refresh token is not valid")
            spent = s.execute(
                update(RefreshToken)
                .where(RefreshToken.jti == row.jti, RefreshToken.used_at.is_(None))
                .values(used_at=now)
            ).rowcount  # type: ignore[attr-defined]  # a CursorResult for UPDATE
            if spent != 1:
                # a refresh token presented twice: someone holds a copy. End the whole login
                # (committed here, then refused below).
                family.revoked_at, family.revoked_reason = now, "reuse"
                reused = True
            else:
                user = s.get(User, row.user_id)
                if user is None or user.disabled:
                    raise ServiceError(401, "invalid-token", "the refresh token is not valid")
                new_refresh = self._refresh(s, user.id, family.id, now)
                access, _, _ = self._access(user.id, user.role, family.scope, family.id, now, family.client_id)
        if reused:
            raise ServiceError(
                401, "refresh-token-reused", "this refresh token was already used; the session has ended, log in again"
            )
        return Issued(access, new_refresh, int(self.s.access_ttl), family.scope)

    def revoke_family(self, family_id: str, reason: str) -> None:
        with self.sessions.begin() as s:
            s.execute(
                update(RefreshFamily)
                .where(RefreshFamily.id == family_id, RefreshFamily.revoked_at.is_(None))
                .values(revoked_at=time.time(), revoked_reason=reason)
            )

    def logout(self, access_claims: dict[str, Any], refresh_token: str | None) -> list[tuple[str, float]]:
        """Ends this login; returns the access jti to put in the revocation store."""
        if access_claims.get("sid"):
            self.revoke_family(access_claims["sid"], "logout")
        if refresh_token:
            try:
                claims = self.verify_own(refresh_token, "refresh")
                if claims["sub"] == access_claims["sub"]:
                    self.revoke_family(claims.get("sid", ""), "logout")
            except ServiceError:
                pass
        return [(access_claims["jti"], float(access_claims["exp"]))]

    def logout_everywhere(self, user_id: str) -> None:
        with self.sessions.begin() as s:
            s.execute(
                update(RefreshFamily)
                .where(RefreshFamily.user_id == user_id, RefreshFamily.revoked_at.is_(None))
                .values(revoked_at=time.time(), revoked_reason="logout-all")
            )

    # ---------------------------------------------------------------- API keys
    def create_key(
        self,
        owner: str,
        scopes: list[str],
        tier: str | None = None,
        expires_in: float | None = None,
        name: str = "",
        env: str | None = None,
    ) -> tuple[str, ApiKey]:
        env = env or self.s.api_key_env
        if env not in ("live", "test"):
            raise invalid([{"pointer": "/env", "message": "live or test"}])
        key = new_key(env)
        now = time.time()
        row = ApiKey(
            id="key_" + secrets.token_hex(8),
            key_hash=hash_key(key),
            last4=key[-4:],
            env=env,
            owner=owner,
            name=name,
            scopes=" ".join(sorted(set(scopes))),
            tier=tier,
            created_at=now,
            expires_at=now + expires_in if expires_in else None,
        )
        with self.sessions.begin() as s:
            s.add(row)
        return key, row

    def list_keys(self, owner: str | None = None) -> list[ApiKey]:
        with self.sessions() as s:
            q = select(ApiKey).order_by(ApiKey.created_at)
            if owner is not None:
                q = q.where(ApiKey.owner == owner)
            return list(s.scalars(q))

    def revoke_key(self, key_id: str) -> ApiKey:
        with self.sessions.begin() as s:
            row = s.get(ApiKey, key_id)
            if row is None:
                raise ServiceError(404, "not-found", "no such API key")
            if row.revoked_at is None:
                row.revoked_at = time.time()
            return row

    def rotate_key(self, key_id: str, overlap: float) -> tuple[str, ApiKey, ApiKey]:
        """A new key with the old one's grants; the old one keeps working for `overlap` seconds."""
        now = time.time()
        with self.sessions() as s:
            old = s.get(ApiKey, key_id)
            if old is None or old.revoked_at is not None:
                raise ServiceError(404, "not-found", "no such active API key")
        remaining = (old.expires_at - now) if old.expires_at else None
        key, new = self.create_key(old.owner, old.scopes.split(), old.tier, remaining, old.name, old.env)
        with self.sessions.begin() as s:
            row = s.get(ApiKey, key_id)
            assert row is not None
            end = now + overlap
            row.expires_at = min(row.expires_at, end) if row.expires_at else end
            row.replaced_by = new.id
            old = row
        return key, old, new

    def find_key(self, key_hash: str) -> ApiKey | None:
        with self.sessions() as s:
            return s.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()

    def touch_keys(self, used: dict[str, float]) -> None:
        """Record last-used times, batched (one statement per key, one transaction per batch)."""
        if not used:
            return
        with self.sessions.begin() as s:
            for key_id, at in used.items():
                s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))
