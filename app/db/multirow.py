"""Several rows in one INSERT statement, with their new keys back in the order of the rows.

SQLAlchemy's ``insert().returning(key, sort_by_parameter_order=True)`` promises that order on every
engine, and on PostgreSQL it keeps the rows in multi-row statements. On SQLite it cannot tell which
returned row is which (SQLite's RETURNING order is unspecified and the dialect has no sentinel
support), so it sends one INSERT per row: one hand-off to aiosqlite's thread each, while the write lock
is held, and, worse, a statement run with ``COMMIT_WITH_STATEMENT`` committed after its first row and
then after each of the others (a ``kill -9`` between two of them left VMs without their change-log
entries). On SQLite the rows go in as one multi-row ``VALUES`` statement instead: SQLite inserts them in
the order of the ``VALUES`` list, and an ``AUTOINCREMENT`` key is greater than every key before it, so
the returned keys sorted are the rows' keys in order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from sqlalchemy import Column, Table, insert
from sqlalchemy.ext.asyncio import AsyncConnection


async def insert_returning_keys(
    connection: AsyncConnection,
    table: Table,
    key: Column[Any],
    rows: Sequence[Mapping[str, Any]],
    *,
    execution_options: Mapping[str, Any] | None = None,
) -> list[int]:
    """Insert ``rows`` into ``table`` (whose ``key`` is an ``AUTOINCREMENT`` integer on SQLite) and return
    their keys, one per row, in the order of ``rows``."""
    options = execution_options or {}
    if connection.dialect.name == "sqlite":
        statement = insert(table).values(list(rows)).returning(key)
        result = await connection.execute(statement, execution_options=options)
        return sorted(result.scalars())
    result = await connection.execute(_ordered_insert(table, key), list(rows), execution_options=options)
    return list(result.scalars())


@cache
def _ordered_insert(table: Table, key: Column[Any]) -> Any:
    return insert(table).returning(key, sort_by_parameter_order=True)
