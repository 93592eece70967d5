"""Keys and token makers for the auth tests."""

from __future__ import annotations

import base64
import json
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP256R1())
ED = ed25519.Ed25519PrivateKey.generate()
SECRET = "s3cret-" + "x" * 40
ISS = "https://issuer.example"
AUD = "api://bastion-tests"


def pem_public(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def claims(**over):
    now = int(time.time())
    c = {
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
        "jti": f"j-{time.monotonic_ns()}",
        "scope": "orders:read profile",
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def sign(key, alg="RS256", headers=None, **over) -> str:
    return jwt.encode(claims(**over), key, algorithm=alg, headers=headers or {"kid": "rsa1"})


def b64(data: bytes | dict) -> str:
    if isinstance(data, dict):
        data = json.dumps(data).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
