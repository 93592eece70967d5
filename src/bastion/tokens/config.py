"""The `token_service` section of the gateway config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Argon2Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time_cost: int = Field(3, ge=1, le=20, description="argon2id iterations.")
    memory_kib: int = Field(65536, ge=8, description="argon2id memory, KiB (OWASP: ≥ 19456).")
    parallelism: int = Field(2, ge=1, le=16)


class TokenServiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prefix: str = Field("/auth", description="Where the gateway serves the token service.")
    database: str = Field("sqlite:///bastion.db", description="sqlite:///path or postgresql://… (several gateways).")
    issuer: str = Field(
        description="`iss` of issued tokens; also the OpenID discovery base (the public URL "
        "of the prefix, e.g. https://api.example.com/auth)."
    )
    audience: list[str] = Field(min_length=1, description="`aud` of access tokens.")
    algorithm: Literal["RS256", "ES256", "EdDSA"] = Field("RS256", description="Signing algorithm.")
    key_encryption_key: str = Field(
        description="Fernet key(s), newest first, that encrypt the signing keys at "
        "rest; use ${ENV}. `bastion tokens secret` makes one."
    )
    rotate_keys_days: float = Field(
        30,
        ge=0,
        description="Make a new signing key after this many days (0: never; `bastion tokens rotate-keys` any time).",
    )
    access_ttl: int = Field(900, ge=30, le=86400, description="Access token lifetime, seconds.")
    refresh_ttl: int = Field(30 * 86400, ge=300, description="Refresh token lifetime, seconds.")
    default_scopes: list[str] = Field(default_factory=list, description="Scopes a new user gets.")
    registration: bool = Field(True, description="Offer POST {prefix}/register.")
    max_failures: int = Field(5, ge=1, description="Failed logins before the account is locked.")
    lockout_seconds: int = Field(900, ge=1, description="How long a locked account stays locked.")
    argon2: Argon2Config = Field(default_factory=Argon2Config)
    revocation_store: str = Field(
        "memory",
        description="Where revoked access tokens go: 'memory' or the Redis "
        "URL the auth policy reads (every gateway must share it).",
    )
    api_key_env: Literal["live", "test"] = Field("live", description="Default environment of new API keys.")
    api_key_overlap_seconds: int = Field(86400, ge=0, description="After a rotation the old key works this long.")
    code_ttl: int = Field(60, ge=10, le=600, description="OAuth authorization code lifetime, seconds.")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.startswith("/") or v.endswith("/") or "{" in v or "*" in v:
            raise ValueError("prefix is a literal path like /auth")
        return v
