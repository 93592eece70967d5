"""Field-level encryption: named JSON fields encrypted before the upstream sees them, named
fields decrypted on the way back (or the reverse), with AES-256-GCM from `cryptography`.

A value becomes `enc:v1:<key id>:<base64url(nonce | ciphertext | tag)>`. The field's path is the
associated data, so a ciphertext moved to another field does not decrypt; a wrong key or a
tampered value is a 502 problem (on responses) or 400 (on requests), never another plaintext.
Keys (32 bytes, base64) come from the environment (`env:NAME`) or a file (`file:path`); the
first key encrypts, all of them decrypt (rotation).
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any, ClassVar

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.http import BodyTimeout, BodyTooLarge, ClientDisconnected, Request, Response, problem
from bastion.pipeline import Context, Policy, PolicyConfig
from bastion.response_body import BodyInfo, Buffered, Unfilterable

PREFIX = "enc:v1:"


class KeyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    source: str = Field(description="env:NAME or file:path, holding 32 bytes as base64.")


class FieldEncryptionConfig(PolicyConfig):
    keys: list[KeyConfig] = Field(min_length=1, description="The first key encrypts; all decrypt.")
    encrypt_request: list[str] = Field(
        default_factory=list, description="Dotted paths (a.b.c) encrypted upstream-bound."
    )
    decrypt_request: list[str] = Field(default_factory=list)
    encrypt_response: list[str] = Field(default_factory=list)
    decrypt_response: list[str] = Field(default_factory=list, description="Dotted paths decrypted client-bound.")

    @field_validator("encrypt_request", "decrypt_request", "encrypt_response", "decrypt_response")
    @classmethod
    def _paths(cls, values: list[str]) -> list[str]:
        for v in values:
            if not v or any(not part for part in v.split(".")):
                raise ValueError(f"{v!r} is not a dotted field path like customer.ssn")
        return values


class CryptoFailure(Exception):
    pass


def _load_key(source: str, config_dir: str) -> bytes:
    kind, _, ref = source.partition(":")
    if kind == "env":
        raw = os.environ.get(ref)
        if raw is None:
            raise ValueError(f"environment variable {ref} (a field-encryption key) is not set")
    elif kind == "file":
        path = ref if os.path.isabs(ref) else os.path.join(config_dir, ref)
        with open(path, encoding="ascii") as f:
            raw = f.read().strip()
    else:
        raise ValueError(f"key source {source!r}: use env:NAME or file:path")
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"key {source}: not base64") from None
    if len(key) != 32:
        raise ValueError(f"key {source}: AES-256 needs 32 bytes, got {len(key)}")
    return key


class FieldCipher:
    def __init__(self, keys: dict[str, bytes], current: str) -> None:
        self.keys = {kid: AESGCM(k) for kid, k in keys.items()}
        self.current = current

    def encrypt(self, value: Any, path: str) -> str:
        nonce = os.urandom(12)
        data = orjson.dumps(value)
        ct = self.keys[self.current].encrypt(nonce, data, path.encode())
        return f"{PREFIX}{self.current}:" + base64.urlsafe_b64encode(nonce + ct).rstrip(b"=").decode()

    def decrypt(self, value: Any, path: str) -> Any:
        if not isinstance(value, str) or not value.startswith(PREFIX):
            raise CryptoFailure(f"{path} is not an encrypted value")
        kid, _, blob = value[len(PREFIX) :].partition(":")
        aead = self.keys.get(kid)
        if aead is None:
            raise CryptoFailure(f"{path} was encrypted with an unknown key")
        try:
            raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
            return orjson.loads(aead.decrypt(raw[:12], raw[12:], path.encode()))
        except (InvalidTag, binascii.Error, ValueError, orjson.JSONDecodeError):
            raise CryptoFailure(f"{path} could not be decrypted (wrong key or tampered)") from None


def _apply(doc: Any, paths: list[str], fn) -> Any:
    for path in paths:
        parts = path.split(".")
        node = doc
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict) and parts[-1] in node and node[parts[-1]] is not None:
            node[parts[-1]] = fn(node[parts[-1]], path)
    return doc


class FieldEncryption(Policy[FieldEncryptionConfig]):
    name: ClassVar[str] = "field_encryption"
    priority: ClassVar[int] = 450  # after the WAF has seen the plaintext
    Config = FieldEncryptionConfig

    def __init__(self, config: FieldEncryptionConfig, env) -> None:
        super().__init__(config, env)
        keys = {k.id: _load_key(k.source, env.config_dir) for k in config.keys}
        self.cipher = FieldCipher(keys, config.keys[0].id)
        self.c = config

    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        if (self.c.encrypt_request or self.c.decrypt_request) and req.has_body():
            try:
                body = await req.read_body()
                doc = orjson.loads(body)
                doc = _apply(doc, self.c.encrypt_request, self.cipher.encrypt)
                doc = _apply(doc, self.c.decrypt_request, self.cipher.decrypt)
            except (BodyTooLarge, BodyTimeout, ClientDisconnected):
                raise
            except orjson.JSONDecodeError:
                return problem(400, "bad-request", "the body is not valid JSON", request_id=req.request_id)
            except CryptoFailure as exc:
                return problem(400, "field-decryption-failed", str(exc), request_id=req.request_id)
            req.body = orjson.dumps(doc)
        if self.c.encrypt_response or self.c.decrypt_response:
            ctx.drop_request_headers.add(b"accept-encoding")
            ctx.response_rewriters.append(self)
        return None

    @staticmethod
    def wants(resp: Response, json: bool) -> bool:
        return resp.status < 500 and json

    def transform(self, req: Request, resp: Response, ctx: Context, info: BodyInfo) -> Buffered:
        return Buffered(lambda body: self.rewrite(req, resp, body, ctx, info.sniffed), info.rules.max_buffered_bytes)

    def rewrite(self, req: Request, resp: Response, body: bytes, ctx: Context, sniffed: bool = False) -> bytes:
        c, cipher = self.c, self.cipher
        if not body.strip():
            return body
        try:
            doc = orjson.loads(body)
            doc = _apply(doc, c.decrypt_response, cipher.decrypt)
            doc = _apply(doc, c.encrypt_response, cipher.encrypt)
        except orjson.JSONDecodeError:
            if sniffed:  # looked like JSON, is not: not a JSON answer
                return body
            raise Unfilterable("malformed", "the JSON body is malformed") from None
        except CryptoFailure as exc:
            ctx.log_fields["field_encryption"] = "decryption failed"
            return resp.become(
                problem(
                    502,
                    "field-decryption-failed",
                    f"the upstream's answer could not be decrypted: {exc}",
                    request_id=req.request_id,
                )
            )
        return orjson.dumps(doc)
