"""Signing keys: generated on first start, stored encrypted (Fernet, key from the environment),
rotated on a schedule or on command; retired public keys stay in the JWKS until the last token
they signed has expired."""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.store.models import SigningKey


class KeyringError(ValueError):
    pass


def fernet(secret: str) -> MultiFernet:
    """Several keys (comma-separated, newest first) so the encryption key itself can rotate."""
    try:
        return MultiFernet([Fernet(s.strip().encode()) for s in secret.split(",") if s.strip()])
    except (ValueError, TypeError):
        raise KeyringError("key_encryption_key must be Fernet keys (`bastion tokens secret` makes one)") from None


def _generate(alg: str) -> Any:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise KeyringError(f"unsupported signing algorithm {alg!r}")


def _public_jwk(alg: str, key: Any, kid: str) -> dict[str, Any]:
    pub = key.public_key()
    if alg == "RS256":
        jwk = json.loads(RSAAlgorithm.to_jwk(pub))
    elif alg == "ES256":
        jwk = json.loads(ECAlgorithm.to_jwk(pub))
    else:
        jwk = json.loads(OKPAlgorithm.to_jwk(pub))
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


@dataclass
class ActiveKey:
    kid: str
    alg: str
    private: Any


class Keyring:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        encryption: MultiFernet,
        alg: str,
        rotate_every: float,
        token_lifetime: float,
    ) -> None:
        self.sessions = sessions
        self.crypt = encryption
        self.alg = alg
        self.rotate_every = rotate_every
        self.token_lifetime = token_lifetime  # how long a retired key must still verify
        self._lock = threading.Lock()
        self._active: ActiveKey | None = None
        self._jwks: dict[str, Any] | None = None
        self._loaded = 0.0

    def _new(self, s: Session, now: float) -> SigningKey:
        key = _generate(self.alg)
        kid = f"{time.strftime('%Y%m%d', time.gmtime(now))}-{secrets.token_hex(4)}"
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        row = SigningKey(
            kid=kid,
            alg=self.alg,
            private_key=self.crypt.encrypt(pem),
            public_jwk=json.dumps(_public_jwk(self.alg, key, kid)),
            created_at=now,
        )
        s.add(row)
        return row

    def rotate(self, now: float | None = None) -> str:
        """Make a new signing key; the current one stops signing and stays published."""
        now = time.time() if now is None else now
        with self._lock, self.sessions.begin() as s:
            for row in s.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))):
                row.retired_at = now
                row.publish_until = now + self.token_lifetime + 60
            kid = self._new(s, now).kid
        self._active = None
        self._jwks = None
        return kid

    def active(self) -> ActiveKey:
        now = time.time()
        cur = self._active
        if cur is not None and now - self._loaded < 30:
            return cur
        with self._lock, self.sessions.begin() as s:
            row = s.scalars(
                select(SigningKey).where(SigningKey.retired_at.is_(None)).order_by(SigningKey.created_at.desc())
            ).first()
            if row is None or row.alg != self.alg or (self.rotate_every and now - row.created_at > self.rotate_every):
                for old in s.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))):
                    old.retired_at = now
                    old.publish_until = now + self.token_lifetime + 60
                row = self._new(s, now)
                self._jwks = None
            try:
                pem = self.crypt.decrypt(row.private_key)
            except InvalidToken:
                raise KeyringError(
                    "the signing keys cannot be decrypted with key_encryption_key "
                    "(was it changed without keeping the old one?)"
                ) from None
            self._active = ActiveKey(row.kid, row.alg, serialization.load_pem_private_key(pem, None))
            self._loaded = now
            return self._active

    def jwks(self) -> dict[str, Any]:
        now = time.time()
        if self._jwks is not None and now - self._loaded < 30:
            return self._jwks
        self.active()
        with self.sessions() as s:
            rows = s.scalars(select(SigningKey).order_by(SigningKey.created_at.desc())).all()
            keys = [json.loads(r.public_jwk) for r in rows if r.publish_until is None or r.publish_until > now]
        self._jwks = {"keys": keys}
        return self._jwks
