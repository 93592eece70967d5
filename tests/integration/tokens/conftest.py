"""A real gateway serving the token service, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import socket
import uuid
from contextlib import contextmanager

import psycopg
import pytest
from helpers import run_gateway

PG = os.environ.get("BASTION_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
KEK = "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg="
PASSWORD = "Correct-horse-9!"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_ok():
    try:
        with psycopg.connect(PG, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:  # never a silent skip: the PostgreSQL path must be tested
        pytest.fail(f"PostgreSQL is needed at {PG} (scripts/services checks it): {exc}")
    return PG


@contextmanager
def database(kind: str, tmp_path, postgres_ok=None):
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'identity.db'}"
        return
    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_ok, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{postgres_ok}?options=-csearch_path%3D{schema}"
    finally:
        from bastion.store.db import _opened

        url = f"{postgres_ok}?options=-csearch_path%3D{schema}"
        if url in _opened:
            _opened.pop(url)[0].dispose()
        with psycopg.connect(postgres_ok, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def gateway_config(db: str, port: int, upstream_url: str, tmp_path, *, revocation="memory", **ts) -> dict:
    issuer = f"http://127.0.0.1:{port}/auth"
    return {
        "listeners": [{"host": "127.0.0.1", "port": port}],
        "upstreams": {"api": {"urls": [upstream_url]}},
        "token_service": {
            "database": db,
            "issuer": issuer,
            "audience": ["api"],
            "key_encryption_key": KEK,
            "argon2": {"time_cost": 1, "memory_kib": 8192, "parallelism": 1},
            "default_scopes": ["orders:read"],
            "revocation_store": revocation,
            "lockout_seconds": 2,
            **ts,
        },
        "policies": {
            "audit": {"output": str(tmp_path / "audit.log")},
            "rate_limit": {"login_limits": ["1000/minute"]},
            "auth": {
                "revocation_store": revocation,
                "schemes": {
                    "bearer": {
                        "type": "jwt",
                        "issuers": [
                            {
                                "issuer": issuer,
                                "audiences": ["api"],
                                "algorithms": ["RS256"],
                                "jwks_url": f"{issuer}/.well-known/jwks.json",
                                "jwks_min_refresh_seconds": 0,
                            }
                        ],
                    },
                    "key": {"type": "api_key", "database": db, "cache_seconds": 0},
                },
            },
        },
        "routes": [
            {"path": "/api/*", "upstream": "api", "policies": {"auth": {"require": [{"bearer": []}, {"key": []}]}}}
        ],
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def service(request, upstream, tmp_path):
    """(gateway, db url) for each database."""
    pg = request.getfixturevalue("postgres_ok") if request.param == "postgresql" else None
    with database(request.param, tmp_path, pg) as db:
        port = free_port()
        with run_gateway(gateway_config(db, port, upstream.url, tmp_path), tmp_path) as gw:
            gw.db = db
            yield gw
