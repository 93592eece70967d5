"""The identity store: SQLAlchemy models, the engine, and migrations (Alembic)."""
