"""The engine, the one session configuration, and migrations.

SQLite (the embedded default) is tuned on every connection (:mod:`app.db.sqlite_tuning`) and gets a cheaper
path through aiosqlite (:mod:`app.db.sqlite_fastpath`). Every session, inside a request or not (the CLI,
token checks, WebSocket re-checks), comes from the Advanced Alchemy config built here, so all of them run
with the same settings (no autoflush, objects usable after commit).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.config import AlembicAsyncConfig, AsyncSessionConfig
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from advanced_alchemy.extensions.litestar._utils import delete_aa_scope_state, get_aa_scope_state
from advanced_alchemy.extensions.litestar.plugins.init.config.common import SESSION_TERMINUS_ASGI_EVENTS
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE
from litestar.types import Message, Scope
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.util.concurrency import await_

from app.config import PROJECT_ROOT, Settings
from app.db import deadline, sqlite_fastpath, sqlite_tuning
from app.db.faults import fault_of

MIGRATIONS_DIR = PROJECT_ROOT / "app" / "migrations"

SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]
"""A session outside a request: ``alchemy.get_session`` of the config below (the one configuration)."""


def create_engine(settings: Settings) -> AsyncEngine:
    if settings.is_sqlite:
        path = settings.sqlite_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=0,
            # A checkout outside a request's deadline (a WebSocket's replay, the change feed, pruning)
            # would otherwise wait SQLAlchemy's 30 s for a connection when the pool is exhausted.
            pool_timeout=settings.db_timeout_seconds,
            hide_parameters=True,  # a failed statement's log line must not carry a password hash
            connect_args={"timeout": settings.db_timeout_seconds},
            # Sessions always end their transaction before returning a connection, so the pool's own
            # reset is a second ROLLBACK, and on aiosqlite every statement is a round trip to a thread.
            pool_reset_on_return=None,
        )
        sqlite_tuning.install(engine, busy_timeout_seconds=settings.db_timeout_seconds)
        sqlite_fastpath.install(engine)
        return engine
    timeout = settings.db_timeout_seconds
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
        # Every wait on PostgreSQL is bounded, so a stopped or frozen server answers 503, not a hang:
        # checking out a pooled connection, connecting, and each statement (asyncpg cancels it).
        pool_timeout=timeout,
        connect_args={"timeout": timeout, "command_timeout": timeout},
        hide_parameters=True,  # a failed statement's log line must not carry a password hash
    )
    _drop_invalidated_at_once(engine)
    _ping_outside_a_transaction(engine)
    return engine


def _drop_invalidated_at_once(engine: AsyncEngine) -> None:
    """Close a PostgreSQL connection (invalidated, or one the pool no longer keeps) by dropping its socket,
    without a word to the server.

    SQLAlchemy first tries a graceful close (a Terminate message and its answer; up to 2 s for an
    invalidated connection, unbounded otherwise), which a frozen server never answers: a request whose
    pre-ping timed out would wait that long again before its 503, and a connection returned beyond the
    pool's size held up the request that returned it. The server ends an idle backend quietly when its
    socket closes, so nothing is left behind."""

    def terminate(dbapi_connection: Any) -> None:
        dbapi_connection.driver_connection.terminate()

    dialect = engine.sync_engine.dialect
    dialect.do_terminate = terminate  # type: ignore[method-assign]
    dialect.do_close = terminate  # type: ignore[method-assign]


def _ping_outside_a_transaction(engine: AsyncEngine) -> None:
    """The pre-ping as one query, not SQLAlchemy's own, which runs it in a transaction it rolls back in a
    ``finally`` (for pgbouncer's transaction mode, not used here).

    When a ping on a frozen server was cancelled (the request's deadline, app/db/deadline.py), that
    ROLLBACK waited for asyncpg to see the cancellation through, up to the statement timeout: the request
    answered 503 after twice the timeout (`bench faults --only postgres-frozen-loaded`). Errors are
    turned into the driver's DBAPI errors as SQLAlchemy's ping does, so a connection a restart closed is
    still replaced at checkout."""

    def ping(dbapi_connection: Any) -> bool:
        try:
            await_(dbapi_connection._connection.fetchrow(";"))
        except Exception as error:
            dbapi_connection._handle_exception(error)
        return True

    engine.sync_engine.dialect.do_ping = ping  # type: ignore[method-assign]


def _session_closer(session_scope_key: str, timeout: float) -> Callable[[Message, Scope], Any]:
    """Advanced Alchemy's before-send handler (close the request's session as the response starts), with
    the close bounded: on a frozen or vanished server its ROLLBACK waits, or fails after the response was
    decided (a 201 after its commit). A close that meets a database fault drops the connection instead,
    and the response goes out as decided.

    A 503 met a database fault: its session's connection is dropped without a word. Even after a
    statement timed out it could still be open, and its ROLLBACK on a frozen server held the 503 for the
    whole timeout again."""

    async def close_session(message: Message, scope: Scope) -> None:
        session: AsyncSession | None = get_aa_scope_state(scope, session_scope_key)
        if session is None or message["type"] not in SESSION_TERMINUS_ASGI_EVENTS:
            return
        delete_aa_scope_state(scope, session_scope_key)
        faulted = (
            message["type"] == "http.response.start" and message["status"] == HTTP_503_SERVICE_UNAVAILABLE
        )
        await _release(session, timeout, drop=faulted)

    return close_session


async def _release(owner: AsyncSession | AsyncConnection, timeout_seconds: float, *, drop: bool) -> None:
    """Give a session's or a write's connection back: dropped without a word after a database fault or a
    cancellation (``drop``), otherwise closed with a bound (:func:`_close_bounded`)."""
    if drop:
        await owner.invalidate()
    else:
        await _close_bounded(owner, timeout_seconds)


async def _close_bounded(owner: AsyncSession | AsyncConnection, timeout_seconds: float) -> None:
    """Close, waiting at most ``timeout_seconds``; on a database fault drop the connection instead.

    Outside the request's deadline (app/db/deadline.py): a write that committed is answered as such, and
    a connection left half-closed by a cancellation would be lost to the pool."""
    try:
        with deadline.paused():
            async with asyncio.timeout(timeout_seconds):
                await owner.close()
    except Exception as exc:
        if fault_of(exc) is None:
            raise
        await owner.invalidate()


@asynccontextmanager
async def core_connection(engine: AsyncEngine, timeout_seconds: float) -> AsyncIterator[AsyncConnection]:
    """A connection for a write made of Core statements, without a session (see app/domain/vms/services.py).

    It is not connected yet: :meth:`app.db.transactions.WriteGate.transaction` starts it once the write
    may run, so on SQLite writers waiting for the gate hold no pooled connection. It goes back to the pool
    the way a request's session is closed (:func:`_session_closer`): bounded, and dropped on a database
    fault."""
    connection = engine.connect()
    failed: BaseException | None = None
    try:
        yield connection
    except BaseException as exc:
        failed = exc
        raise
    finally:
        if connection.sync_connection is not None:
            drop = isinstance(failed, asyncio.CancelledError) or (
                failed is not None and fault_of(failed) is not None
            )
            await _release(connection, timeout_seconds, drop=drop)


def create_alchemy_config(settings: Settings, engine: AsyncEngine) -> SQLAlchemyAsyncConfig:
    # Advanced Alchemy makes these keys unique per config by searching a class-wide registry
    # recursively (key_1, key_2, ...), which overflows the stack after about a thousand apps in one
    # process (the test suite builds one per test). Keys unique from the start skip that search.
    suffix = uuid.uuid4().hex
    session_scope_key = f"_vms_db_session_{suffix}"
    return SQLAlchemyAsyncConfig(
        engine_instance=engine,
        session_scope_key=session_scope_key,
        before_send_handler=_session_closer(session_scope_key, settings.db_timeout_seconds),
        engine_app_state_key=f"vms_db_engine_{suffix}",
        session_maker_app_state_key=f"vms_session_maker_{suffix}",
        # Objects stay usable after commit so a handler can build its response without a reload. Advanced
        # Alchemy's dogpile cache and file-object columns are not used here, and their listeners run on
        # every commit and flush: the cache listener's "enabled?" check alone (it builds a new engine
        # proxy each time) was 3% of the event loop under POST /vms. Off, by the switches they read.
        session_config=AsyncSessionConfig(
            expire_on_commit=False, autoflush=False, info={"enable_cache_listener": False}
        ),
        enable_file_object_listener=False,
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS_DIR),
            version_table_name="alembic_version",
        ),
        # Our own exception handlers map repository errors (see app/http/errors.py).
        set_default_exception_handler=False,
    )


def run_migrations(alchemy: SQLAlchemyAsyncConfig) -> None:
    """Bring the schema to head (blocking: call it from a thread)."""
    AlembicCommands(sqlalchemy_config=alchemy).upgrade("head")
