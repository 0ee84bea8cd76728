"""SQLite's settings for a served database: WAL, a busy timeout, foreign keys, and no needless ROLLBACK."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


def install(engine: AsyncEngine, *, busy_timeout_seconds: float) -> None:
    """``busy_timeout_seconds``: how long a statement waits for another process's write lock (the CLI's,
    say) before it fails with "database is locked", which answers 503 (VMS_DB_TIMEOUT_SECONDS)."""
    busy_timeout_ms = max(int(busy_timeout_seconds * 1000), 1)

    def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # NORMAL is durable across application crashes in WAL mode and much faster than FULL.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    _skip_idle_rollbacks(engine)


def _skip_idle_rollbacks(engine: AsyncEngine) -> None:
    """Skip the ROLLBACK that ends a read-only session on SQLite.

    Python's sqlite3 opens a transaction only before a write, so after a read there is nothing to roll back,
    yet SQLAlchemy still calls ``rollback()``, and aiosqlite turns every call into a round trip to its
    thread (measured: one of the five hand-offs of ``GET /vms/{id}``). ``in_transaction`` is a flag read
    that is safe from any thread.
    """
    dialect = engine.sync_engine.dialect
    do_rollback = dialect.do_rollback

    def rollback_if_needed(dbapi_connection: Any) -> None:
        raw = getattr(getattr(dbapi_connection, "_connection", None), "_conn", None)
        if raw is None or raw.in_transaction:
            do_rollback(dbapi_connection)

    dialect.do_rollback = rollback_if_needed  # type: ignore[method-assign]
