"""Database faults, told apart: unreachable or too slow, storage full, storage read-only.

Requests that meet one answer 503 with ``Retry-After`` (app/http/errors.py) instead of a 500 and a
traceback; ``/health`` reports the same states. Each kind is an :class:`app.faults.Outage`, so the log
gets one line when it starts and one when it ends.

How each heals without a restart:

- unreachable: a connection that met the fault is invalidated (a statement that timed out too: on a
  frozen PostgreSQL the ROLLBACK that would follow waits as long again), and PostgreSQL's connections are
  pinged at checkout, so the pool connects anew once the server answers; the first statement that
  succeeds ends the outage;
- read-only: SQLite keeps a file it opened read-only read-only for the connection's life, so such an
  error is treated as a disconnect too (the pool drops the connection and the next write opens a new one);
- full: the same connection writes again once there is space; the first commit that succeeds ends it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any, Literal

from sqlalchemy import event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.faults import Outage

FaultKind = Literal["unavailable", "full", "read_only"]

DETAILS: dict[FaultKind, str] = {
    "unavailable": "The database is unavailable; try again shortly.",
    "full": "The database's storage is full: changes cannot be saved until space is freed. Reads still work.",
    "read_only": "The database is read-only: changes cannot be saved until it is writable again. Reads "
    "still work.",
}

# SQLite's primary result codes (an extended code's low byte): SQLITE_FULL, SQLITE_READONLY; and those of a
# database that cannot be reached: SQLITE_BUSY (the busy timeout passed), SQLITE_IOERR, SQLITE_CANTOPEN.
_SQLITE_FULL = 13
_SQLITE_READ_ONLY = 8
_SQLITE_UNAVAILABLE = {5, 10, 14}
# PostgreSQL's SQLSTATEs: 53100 disk_full, 25006 read_only_sql_transaction; classes 08 (connection),
# 57P0x (shutting down, cannot connect now), 57014 (statement cancelled: our statement timeout), 53300.
_PG_FULL = {"53100"}
_PG_READ_ONLY = {"25006"}
_PG_UNAVAILABLE_PREFIXES = ("08", "57P0", "57014", "53300")


class ReadOnlyDatabase(Exception):
    """PostgreSQL says this session is read-only (raised by :func:`probe_writes`)."""

    sqlstate = "25006"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        original = getattr(current, "orig", None)
        if isinstance(original, BaseException) and id(original) not in seen:
            yield original
            seen.add(id(original))
        current = current.__cause__ or current.__context__


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return state if isinstance(state, str) else None


def fault_of(exc: BaseException) -> FaultKind | None:
    """The database fault behind ``exc`` (anywhere in its chain of causes), or None if it is none.

    What the database itself said (SQLite's result code, PostgreSQL's SQLSTATE) decides first: a
    read-only SQLite connection is also reported as invalidated, and must still read as read-only."""
    chain = list(_chain(exc))
    for error in chain:
        code = getattr(error, "sqlite_errorcode", None)
        if isinstance(error, sqlite3.Error) and isinstance(code, int):
            primary = code & 0xFF
            if primary == _SQLITE_FULL:
                return "full"
            if primary == _SQLITE_READ_ONLY:
                return "read_only"
            if primary in _SQLITE_UNAVAILABLE:
                return "unavailable"
        state = _sqlstate(error)
        if state is not None:
            if state in _PG_FULL:
                return "full"
            if state in _PG_READ_ONLY:
                return "read_only"
            if state.startswith(_PG_UNAVAILABLE_PREFIXES):
                return "unavailable"
    for error in chain:
        if isinstance(error, PoolTimeoutError | TimeoutError | ConnectionError):
            return "unavailable"
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return "unavailable"
        if isinstance(error, OSError):  # refused, reset, no route: the server is not there
            return "unavailable"
        if type(error).__module__.startswith("asyncpg") and "connection" in type(error).__name__.lower():
            return "unavailable"
    return None


class DatabaseFaults:
    """This process's view of its database: reachable? storage writable? (See the module doc.)"""

    def __init__(self) -> None:
        self.reachability = Outage("database unreachable")
        self.storage = Outage("database not writable")
        # Whether /health has probed writes yet (it does at its first check: see app/health.py).
        self.probed = False

    @property
    def writable(self) -> bool:
        return not self.storage.active

    def met(self, exc: BaseException) -> FaultKind | None:
        """Record the fault behind ``exc``, if it is one, and say which."""
        kind = fault_of(exc)
        if kind == "unavailable":
            self.reachability.failed(DETAILS[kind], exc)
        elif kind is not None:
            self.storage.failed(DETAILS[kind], exc)
        return kind

    def answered(self) -> None:
        """A statement succeeded: the database is reachable."""
        if self.reachability.active:
            self.reachability.recovered()

    def wrote(self) -> None:
        """A write committed: the storage takes writes again."""
        if self.storage.active:
            self.storage.recovered()
        self.answered()

    def install(self, engine: AsyncEngine) -> None:
        """Watch ``engine``: every statement that succeeds ends an outage; a connection that met the database
        unreachable (or a read-only SQLite file) is dropped from the pool (see the module doc)."""
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "after_cursor_execute")
        def answered(*_: Any) -> None:
            if self.reachability.active:
                self.reachability.recovered()

        @event.listens_for(sync_engine, "handle_error")
        def drop_stuck_connections(context: ExceptionContext) -> None:
            kind = fault_of(context.original_exception)
            if kind == "unavailable" or (kind == "read_only" and sync_engine.dialect.name == "sqlite"):
                context.is_disconnect = True


async def probe_writes(session: AsyncSession) -> None:
    """Raise what a write would raise now, if anything (``/health``, while the storage is in doubt).

    On SQLite it rewrites the header's ``user_version`` with its own value, a real one-page commit that
    meets a full disk or a read-only file; on PostgreSQL it asks whether the session is read-only (a
    standby, or ``default_transaction_read_only``); a full disk there shows at the next write."""
    if session.get_bind().dialect.name == "sqlite":
        version = (await session.execute(text("PRAGMA user_version"))).scalar_one()
        await session.execute(text(f"PRAGMA user_version = {int(version)}"))
        return
    read_only = (await session.execute(text("SELECT current_setting('transaction_read_only')"))).scalar()
    if read_only == "on":
        raise ReadOnlyDatabase
