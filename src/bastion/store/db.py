"""The engine for a database URL, and migrations to the newest schema on start.

`sqlite:///bastion.db` (the default) and `postgresql://…` (several gateways) are accepted;
PostgreSQL goes through psycopg 3. Migrations are Alembic's, run under a PostgreSQL advisory lock
so that gateways starting together do not race.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_ID = 0x62617374  # "bast"


def engine_for(url: str) -> Engine:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    if url.startswith("sqlite:"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 15})

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            if ":memory:" not in url:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    raise ValueError(f"database URL {url.split('://', 1)[0]}://… is not supported (sqlite:/// or postgresql://)")


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (the newest by default; a no-op when it is there)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


_opened: dict[str, tuple[Engine, sessionmaker[Session]]] = {}
_opened_lock = threading.Lock()


def open_store(url: str) -> tuple[Engine, sessionmaker[Session]]:
    """One engine (and one migration run) per database URL per process, reused across reloads
    and shared by the token service, the API-key lookup and the login sessions."""
    with _opened_lock:
        if url not in _opened:
            engine = engine_for(url)
            migrate(engine)
            _opened[url] = (engine, sessions(engine))
        return _opened[url]
