"""Writes each change to the log inside its own transaction: the write path's ``before_commit`` subscriber.

One INSERT per change, the transaction's last statements: on PostgreSQL the first takes the counter row's
lock (migration 0003), which is then held only for the COMMIT that follows. The last one asks the engine
to commit with it (``COMMIT_WITH_STATEMENT``): on SQLite that saves a hand-off to the driver's thread
while the write lock is held.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.context import request_id, write_source
from app.db.multirow import insert_returning_keys
from app.db.transactions import COMMIT_WITH_STATEMENT, Change
from app.domain.changes.models import LOGGED_ENTITIES, ChangeEntry

_encode = msgspec.json.Encoder().encode
# A Core insert on the table, executed on the session's connection: through the ORM (``insert(ChangeEntry)``
# on the session) the same statement cost about 600 µs more per write, measured with timeit-style loops.
_TABLE: Table = ChangeEntry.__table__  # type: ignore[assignment]
# No explicit RETURNING: SQLAlchemy reads the new seq from RETURNING on PostgreSQL and from the cursor's
# lastrowid on SQLite, where a returned row is one more GIL round trip on the driver's thread while the
# write lock is held.
_INSERT = insert(_TABLE)
_LAST = {COMMIT_WITH_STATEMENT: True}


def _json(representation: Any) -> str | None:
    return None if representation is None else _encode(representation).decode()


async def record_changes(connection: AsyncConnection, changes: Sequence[Change]) -> None:
    source, rid = write_source.get(), request_id.get()
    logged = [change for change in changes if change.entity in LOGGED_ENTITIES]
    if not logged:
        return
    at = datetime.now(UTC)
    rows = [
        {
            "at": at,
            "entity": change.entity,
            "entity_id": change.entity_id,
            "action": change.action,
            "actor_id": change.actor_id,
            "source": change.source or source,
            "request_id": change.request_id if change.request_id is not None else rid,
            "before_json": _json(change.before),
            "after_json": _json(change.after),
        }
        for change in logged
    ]
    if len(rows) == 1:
        result = await connection.execute(_INSERT, rows[0], execution_options=_LAST)
        seqs = list(result.inserted_primary_key or (None,))
    else:
        # A transaction with several changes (a shared batch, app/db/batching.py) records them with one
        # multi-row statement; the seqs come back in the order of the rows.
        seqs = await insert_returning_keys(connection, _TABLE, _TABLE.c.seq, rows, execution_options=_LAST)
    for change, seq in zip(logged, seqs, strict=True):
        change.seq, change.at = seq, at
