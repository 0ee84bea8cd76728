"""One aiosqlite thread hand-off per statement instead of four.

aiosqlite runs every call on its own thread and hands the result back to the event loop. SQLAlchemy's
adapter makes four such calls per statement (create a cursor, execute, fetch all rows, close the
cursor), and each costs a thread switch and a trip through the event loop; on ``GET /vms/{id}`` they
were most of the request's time. This cursor does the same four steps in a single call on aiosqlite's
thread and keeps what SQLAlchemy reads afterwards (rows, description, rowcount, lastrowid).

A write's last statement can carry its COMMIT into the same hand-off: executed with the execution option
:data:`app.db.transactions.COMMIT_WITH_STATEMENT`, the statement and the COMMIT run in one call on
aiosqlite's thread, and the session's own commit that follows finds no transaction open and returns
without a hand-off. On SQLite writers queue for one write lock, so every hand-off made while holding it
is paid by all of them: the change log's INSERT alone, as its own hand-off, cost a third of
``POST /vms`` throughput (docs/performance.md).

It is installed per connection, on this application's engine only (see :func:`install`). The rest of
the driver (transactions, errors, the connection's thread) is aiosqlite's and SQLAlchemy's, unchanged.
"""

from __future__ import annotations

import collections
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection, AsyncAdapt_aiosqlite_cursor
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import EMPTY_DICT

from app.db.transactions import COMMIT_WITH_STATEMENT


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_commit_after", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: Any = None
        self._commit_after = False

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass

    async def _async_soft_close(self) -> None:
        return None

    def close(self) -> None:
        self._rows.clear()

    async def _run(self, operation: Any, parameters: Any, *, many: bool) -> None:
        raw = self._connection._conn  # the sqlite3 connection; used only on aiosqlite's own thread
        commit_after, self._commit_after = self._commit_after, False

        def execute() -> tuple[Any, list[Any], int, Any]:
            cursor = raw.cursor()
            try:
                if many:
                    cursor.executemany(operation, parameters)
                elif parameters is None:
                    cursor.execute(operation)
                else:
                    cursor.execute(operation, parameters)
                description = cursor.description
                rows = cursor.fetchall() if description else []
                if commit_after:
                    raw.commit()
                return description, rows, cursor.rowcount, cursor.lastrowid
            finally:
                cursor.close()

        async with self._adapt_connection._execute_mutex:
            description, rows, rowcount, lastrowid = await self._connection._execute(execute)
        self._description, self._rowcount, self._lastrowid = description, rowcount, lastrowid
        self._rows = collections.deque(rows)

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._run(operation, parameters, many=False)
        return self

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._run(operation, seq_of_parameters, many=True)
        return self


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor

    def commit(self) -> None:
        # Nothing to commit after a statement that committed (or a transaction that wrote nothing):
        # sqlite3 would do nothing either, after a hand-off. ``in_transaction`` is a flag read that is
        # safe from any thread.
        raw = getattr(self._connection, "_conn", None)
        if raw is not None and not raw.in_transaction:
            return
        super().commit()


def install(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def use_one_hop_cursor(dbapi_connection: Any, _record: Any) -> None:
        if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
            dbapi_connection.__class__ = OneHopConnection

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def commit_with_statement(
        _conn: Any, cursor: Any, _statement: str, _parameters: Any, context: Any, executemany: bool
    ) -> None:
        # Never with one of several statements SQLAlchemy splits an execution into (its "insertmanyvalues"
        # batches, each announced here with ``executemany``): the first would commit the transaction and
        # the others each run in one of their own (app/db/multirow.py).
        if (
            not executemany
            and context is not None
            and context.execution_options.get(COMMIT_WITH_STATEMENT)
            and type(cursor) is OneHopCursor
        ):
            cursor._commit_after = True
