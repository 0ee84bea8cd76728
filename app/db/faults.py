"""Database faults, told apart: unreachable or too slow, storage full, storage read-only.

Requests that meet one answer 503 with ``Retry-After`` (app/http/errors.py) instead of a 500 and a
traceback; ``/health`` reports the same states. Each kind is an :class:`app.faults.Outage`, so the log
gets one line when it starts and one when it ends.

How each heals without a restart:

- unreachable: a connection that met the fault is invalidated (a statement that timed out too: on a
  frozen PostgreSQL the ROLLBACK that would follow waits as long again), and PostgreSQL's connections are
  pinged at checkout, so the pool connects anew once the server answers; the first statement that
  succeeds ends the outage;
- full: a write probe (:func:`probe_writes`) that succeeds ends it, not any write that commits: on
  PostgreSQL a write that fits in a page already allocated commits on a full disk, and the log would say
  lost, back, lost, back. ``/health`` probes while the storage is in doubt, and a write that commits then
  starts a probe in the background (one at a time, at most one a second), so the end is seen without a
  health check;
- read-only: a committed write or a probe ends it. A connection opened while the database was read-only
  stays so for its life (SQLite keeps the file as it opened it; PostgreSQL applies the database's or
  role's ``default_transaction_read_only`` at connection start), so a read-only refusal is treated as a
  disconnect (the pool drops that connection and those opened before it), a probe after one first has
  the pool replace every connection it holds (it writes on a new one), and so does the end of the fault:
  none opened during it is left to refuse a write and start it again.
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import time
from collections.abc import Iterator
from typing import Any, Literal

from sqlalchemy import event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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

PROBE_INTERVAL_SECONDS = 1.0
"""The least time between two write probes a commit starts while the storage is in doubt."""


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

    def __init__(self, timeout_seconds: float) -> None:
        self.reachability = Outage("database unreachable")
        self.storage = Outage("database not writable")
        # Whether a write probe has run yet (/health runs one at its first check: see app/health.py).
        self.probed = False
        self._timeout = timeout_seconds
        self._engine: AsyncEngine | None = None
        self._probe: asyncio.Task[None] | None = None
        self._probe_started = float("-inf")
        self._storage_kind: FaultKind | None = None  # the storage fault met last
        self._read_only_seen = False  # a read-only refusal since the storage was last writable
        self._renew_pool = False  # at the next checkout, replace every pooled connection

    @property
    def writable(self) -> bool:
        return not self.storage.active

    def met(self, exc: BaseException) -> FaultKind | None:
        """Record the fault behind ``exc``, if it is one, and say which."""
        kind = fault_of(exc)
        if kind == "unavailable":
            self.reachability.failed(DETAILS[kind], exc)
        elif kind is not None:
            self._storage_kind = kind
            self._read_only_seen = self._read_only_seen or kind == "read_only"
            self.storage.failed(DETAILS[kind], exc)
        return kind

    def answered(self) -> None:
        """A statement succeeded: the database is reachable."""
        if self.reachability.active:
            self.reachability.recovered()

    def wrote(self) -> None:
        """A write committed (the write gate's subscriber): the database is reachable. It takes writes
        again if it was read-only; if it was full, a probe in the background says whether there is space
        again (a write may have fit in a page it had: see the module doc)."""
        self.answered()
        if not self.storage.active:
            return
        if self._storage_kind == "read_only":
            self._storage_back()
        elif (
            self._engine is not None
            and (self._probe is None or self._probe.done())
            and time.monotonic() - self._probe_started >= PROBE_INTERVAL_SECONDS
        ):
            self._probing()

    def _storage_back(self) -> None:
        # After a read-only fault the next checkout has the pool replace every connection it holds: one
        # opened during the fault would refuse a write and start the fault again.
        self._renew_pool = self._read_only_seen
        self._read_only_seen = False
        self.storage.recovered()

    async def check_writes(self) -> None:
        """Probe writes now (or wait for the probe already running): a success ends a storage fault; what
        it met is recorded and raised."""
        await asyncio.shield(self._probing())

    def _probing(self) -> asyncio.Task[None]:
        self.probed = True
        if self._probe is None or self._probe.done():
            self._probe_started = time.monotonic()
            # A context of its own: not the request's that started it (its id, its database deadline).
            self._probe = asyncio.get_running_loop().create_task(
                self._probe_writes(), context=contextvars.Context()
            )
            self._probe.add_done_callback(_retrieve)
        return self._probe

    async def _probe_writes(self) -> None:
        if self._engine is None:
            raise RuntimeError("DatabaseFaults.install(engine) was not called")
        # After a read-only refusal the pooled connections may have been opened read-only: the probe's
        # checkout replaces them all (see install), so the probe writes on a new connection.
        self._renew_pool = self._read_only_seen
        connection = self._engine.connect()
        try:
            async with asyncio.timeout(self._timeout):
                await connection.start()
                await probe_writes(connection)
                await connection.rollback()
        except BaseException as exc:
            # Dropped without a word: its ROLLBACK, on a frozen server, would wait as long again.
            if connection.sync_connection is not None:
                await connection.invalidate()
            if isinstance(exc, Exception):
                self.met(exc)
            raise
        await connection.close()
        self.answered()
        if self.storage.active:
            self._storage_back()

    def install(self, engine: AsyncEngine) -> None:
        """Watch ``engine``: every statement that succeeds ends an outage; a connection that met the database
        unreachable or read-only is dropped from the pool, with every one opened before it, and so are they
        all before a write probe after a read-only refusal (see the module doc); :meth:`check_writes`
        probes on it."""
        self._engine = engine
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "after_cursor_execute")
        def answered(*_: Any) -> None:
            if self.reachability.active:
                self.reachability.recovered()

        @event.listens_for(sync_engine, "handle_error")
        def drop_stuck_connections(context: ExceptionContext) -> None:
            if fault_of(context.original_exception) in ("unavailable", "read_only"):
                context.is_disconnect = True

        @event.listens_for(sync_engine, "checkout")
        def renew_after_read_only(*_: Any) -> None:
            if self._renew_pool:
                self._renew_pool = False
                # The pool replaces this connection and every one opened before now.
                raise InvalidatePoolError("the database was read-only")


def _retrieve(task: asyncio.Task[None]) -> None:
    """A probe's failure is recorded by the probe (and raised to whoever awaits it), not logged again."""
    if not task.cancelled():
        task.exception()


async def probe_writes(connection: AsyncConnection) -> None:
    """Raise what a write would raise now, if anything, and leave nothing behind.

    On SQLite it rewrites the header's ``user_version`` with its own value, a real one-page commit that
    meets a full disk or a read-only file. On PostgreSQL it creates a temporary table and inserts a row,
    rolled back when the connection closes: that needs new space in the database's tablespace (catalog rows
    and a first page: PostgreSQL allocates a page when it adds one, so a full disk shows there) and is
    refused in a read-only transaction. A one-row update would not do: it fits in its page, which exists
    already, and succeeds on a full disk. (With ``temp_tablespaces`` set, the table's page goes there.)"""
    if connection.dialect.name == "sqlite":
        version = (await connection.execute(text("PRAGMA user_version"))).scalar_one()
        await connection.execute(text(f"PRAGMA user_version = {int(version)}"))
        return
    await connection.execute(
        text(
            "DO $$ BEGIN CREATE TEMPORARY TABLE vms_storage_probe (filler text) ON COMMIT DROP; "
            "INSERT INTO vms_storage_probe VALUES ('probe'); END $$"
        )
    )
