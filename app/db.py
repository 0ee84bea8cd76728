"""Database engine, sessions and the write path.

SQLite (the embedded default) gets WAL, a busy timeout and foreign keys on every connection. It allows one
writer at a time, so every write in this process goes through :func:`write_transaction`, which holds an
asyncio lock for the whole transaction on SQLite: writers queue in the event loop instead of failing with
"database is locked", and a check-then-write (such as "is this the last administrator?") cannot interleave
with another writer. On PostgreSQL the lock is held only around commit and publish, which keeps events in
commit order within a process while transactions run concurrently (row locks do the rest).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from advanced_alchemy.config import AlembicAsyncConfig, AsyncSessionConfig
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_scoped_session, create_async_engine

from app import sqlite_fastpath
from app.config import PROJECT_ROOT, Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
MIGRATIONS_DIR = PROJECT_ROOT / "app" / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    # NORMAL is durable across application crashes in WAL mode and much faster than FULL.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


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


def create_engine(settings: Settings) -> AsyncEngine:
    if settings.is_sqlite:
        path = settings.sqlite_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=0,
            hide_parameters=True,  # a failed statement's log line must not carry a password hash
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            # Sessions always end their transaction before returning a connection, so the pool's own
            # reset is a second ROLLBACK, and on aiosqlite every statement is a round trip to a thread.
            pool_reset_on_return=None,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        _skip_idle_rollbacks(engine)
        sqlite_fastpath.install(engine)
        return engine
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
        hide_parameters=True,  # a failed statement's log line must not carry a password hash
    )


def create_alchemy_config(settings: Settings, engine: AsyncEngine) -> SQLAlchemyAsyncConfig:
    # Advanced Alchemy makes these keys unique per config by searching a class-wide registry
    # recursively (key_1, key_2, ...), which overflows the stack after about a thousand apps in one
    # process (the test suite builds one per test). Keys unique from the start skip that search.
    suffix = uuid.uuid4().hex
    return SQLAlchemyAsyncConfig(
        engine_instance=engine,
        session_scope_key=f"_vms_db_session_{suffix}",
        engine_app_state_key=f"vms_db_engine_{suffix}",
        session_maker_app_state_key=f"vms_session_maker_{suffix}",
        # Objects stay usable after commit so a handler can build its response without a reload.
        session_config=AsyncSessionConfig(expire_on_commit=False, autoflush=False),
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS_DIR),
            version_table_name="alembic_version",
        ),
        # Our own exception handlers map repository errors (see app/errors.py).
        set_default_exception_handler=False,
    )


class TransactionEnd:
    """What a write transaction does once it has ended, queued by the service that runs it."""

    __slots__ = ("_invalidations", "_publications")

    def __init__(self) -> None:
        self._publications: list[Callable[[], None]] = []
        self._invalidations: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run once the commit succeeded, in commit order (events): a rolled-back write publishes nothing."""
        self._publications.append(callback)

    def invalidate(self, callback: Callable[[], None]) -> None:
        """Run after any commit attempt, even one that raised (cached copies of what the write changed).

        A commit that raises may still have happened (the request was cancelled while COMMIT ran on the
        driver's thread, or the connection dropped after PostgreSQL received it); a needless invalidation
        only costs the next read a query, a missed one would serve the old row until restart.
        """
        self._invalidations.append(callback)

    def run(self, *, committed: bool) -> None:
        for callback in self._invalidations:
            callback()
        if committed:
            for callback in self._publications:
                callback()


class WriteGate:
    """Orders the writes of this process; see the module docstring."""

    def __init__(self, *, serialize_transactions: bool) -> None:
        self.serialize_transactions = serialize_transactions
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(
        self, session: AsyncSession | async_scoped_session[AsyncSession]
    ) -> AsyncIterator[TransactionEnd]:
        """Run the body as one transaction and commit it, then run what it queued on the ``TransactionEnd``.

        A body that raises rolls back: nothing was written, so nothing is invalidated or published.
        """
        end = TransactionEnd()
        whole = self.serialize_transactions
        if whole:
            await self._lock.acquire()
        try:
            try:
                yield end
            except BaseException:
                await session.rollback()
                raise
            if whole:
                await self._commit(session, end)
            else:
                async with self._lock:
                    await self._commit(session, end)
        finally:
            if whole:
                self._lock.release()

    @staticmethod
    async def _commit(
        session: AsyncSession | async_scoped_session[AsyncSession], end: TransactionEnd
    ) -> None:
        try:
            await session.commit()
        except BaseException:
            end.run(committed=False)  # first, before anything else awaits: the commit may have happened
            await session.rollback()
            raise
        end.run(committed=True)
