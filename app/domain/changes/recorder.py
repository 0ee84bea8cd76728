"""Writes each change to the log inside its own transaction: the write path's ``before_commit`` subscriber.

One INSERT per change, the transaction's last statement: on PostgreSQL it takes the counter row's lock
(migration 0003), which is then held only for the COMMIT that follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session

from app.context import request_id, write_source
from app.db.transactions import Change
from app.domain.changes.models import LOGGED_ENTITIES, ChangeEntry

_encode = msgspec.json.Encoder().encode
_INSERT = insert(ChangeEntry).returning(ChangeEntry.seq)


def _json(representation: Any) -> str | None:
    return None if representation is None else _encode(representation).decode()


async def record_changes(
    session: AsyncSession | async_scoped_session[AsyncSession], changes: Sequence[Change]
) -> None:
    source, rid = write_source.get(), request_id.get()
    for change in changes:
        if change.entity not in LOGGED_ENTITIES:
            continue
        at = datetime.now(UTC)
        values = {
            "at": at,
            "entity": change.entity,
            "entity_id": change.entity_id,
            "action": change.action,
            "actor_id": change.actor_id,
            "source": source,
            "request_id": rid,
            "before_json": _json(change.before),
            "after_json": _json(change.after),
        }
        change.seq = (await session.execute(_INSERT, values)).scalar_one()
        change.at = at
