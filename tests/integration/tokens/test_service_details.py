"""Token-service details that need no gateway: argon2 rehash when the parameters change, the
scheduled signing-key rotation, and last-used times of API keys written in batches."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select

from bastion.auth.apikeys import hash_key
from bastion.store.models import ApiKey, SigningKey, User
from bastion.tokens.apikeys import DatabaseApiKeys
from bastion.tokens.app import TokenApp
from bastion.tokens.config import TokenServiceConfig

from .conftest import KEK, PASSWORD


def app(db: str, **over) -> TokenApp:
    settings = {
        "database": db,
        "issuer": "https://t/auth",
        "audience": ["api"],
        "key_encryption_key": KEK,
        "argon2": {"time_cost": 1, "memory_kib": 8192, "parallelism": 1},
        **over,
    }
    return TokenApp(TokenServiceConfig(**settings))


def test_password_rehash_when_parameters_change(tmp_path):
    db = f"sqlite:///{tmp_path / 'a.db'}"
    first = app(db)
    first.service.register("ivan", "ivan@example.com", PASSWORD)
    with first.sessions() as s:
        old = s.scalars(select(User.password_hash)).one()
    assert "m=8192,t=1" in old
    stronger = app(db, argon2={"time_cost": 2, "memory_kib": 9216, "parallelism": 1})
    stronger.service.login("ivan", PASSWORD)
    with stronger.sessions() as s:
        new = s.scalars(select(User.password_hash)).one()
    assert new != old and "m=9216,t=2" in new
    stronger.service.login("ivan", PASSWORD)  # and it still verifies


def test_signing_keys_rotate_on_schedule(tmp_path):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    a = app(db, rotate_keys_days=1)
    first = a.keyring.active().kid
    with a.sessions.begin() as s:  # pretend the key is two days old
        s.execute(SigningKey.__table__.update().values(created_at=time.time() - 2 * 86400))
    a.keyring._active = None
    second = a.keyring.active().kid
    assert second != first
    kids = {k["kid"] for k in a.keyring.jwks()["keys"]}
    assert {first, second} <= kids  # the old key stays published while its tokens live


def test_api_key_use_is_recorded_in_batches(tmp_path):
    db = f"sqlite:///{tmp_path / 'u.db'}"
    a = app(db)
    key, row = a.service.create_key("acme", ["read"])
    lookup = DatabaseApiKeys(db, cache_seconds=60, flush_seconds=3600)

    async def use() -> None:
        for _ in range(50):
            assert (await lookup.find(hash_key(key))) is not None
        with a.sessions() as s:  # nothing written yet: no database write per request
            assert s.get(ApiKey, row.id).last_used_at is None
        await lookup.flush()

    asyncio.run(use())
    with a.sessions() as s:
        assert s.get(ApiKey, row.id).last_used_at is not None


def test_upgrade_keeps_the_data(tmp_path, postgres_ok):
    """A database made by an older release (revision 0001, rows in it) upgrades to the newest
    schema without losing a row — on SQLite and PostgreSQL."""
    from sqlalchemy import inspect, text

    from bastion.store.db import engine_for, migrate

    from .conftest import database

    for kind in ("sqlite", "postgresql"):
        with database(kind, tmp_path, postgres_ok) as db:
            engine = engine_for(db)
            migrate(engine, "0001")
            assert "public_jwks" not in {c["name"] for c in inspect(engine).get_columns("oauth_clients")}
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO users (id, username, email, password_hash, role, scopes, created_at, "
                        "failed_logins, disabled) VALUES ('u1', 'old', 'old@example.com', 'h', 'user', '', 1, "
                        "0, false)"
                    )
                )
                conn.execute(
                    text(
                        "INSERT INTO oauth_clients (client_id, secret_hash, name, redirect_uris, grant_types, "
                        "scopes, created_at) VALUES ('c1', 'sha256:x', 'old client', '[]', '[]', '', 1)"
                    )
                )
            migrate(engine)
            migrate(engine)  # twice: a no-op
            with engine.connect() as conn:
                assert conn.execute(text("SELECT username FROM users")).scalar_one() == "old"
                row = conn.execute(text("SELECT name, public_jwks FROM oauth_clients")).one()
                assert row == ("old client", None)
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0003"
            engine.dispose()


def test_es256_and_eddsa_signing(tmp_path):
    import jwt as pyjwt

    for alg in ("ES256", "EdDSA"):
        a = app(f"sqlite:///{tmp_path / (alg + '.db')}", algorithm=alg)
        a.service.register("judy", "judy@example.com", PASSWORD)
        token = a.service.login("judy", PASSWORD).access_token
        header = pyjwt.get_unverified_header(token)
        jwk = next(k for k in a.keyring.jwks()["keys"] if k["kid"] == header["kid"])
        assert header["alg"] == alg == jwk["alg"]
        claims = pyjwt.decode(token, pyjwt.PyJWK(jwk).key, algorithms=[alg], audience="api", issuer="https://t/auth")
        assert claims["typ"] == "access"
