"""Reading the change log's history: filtered, paged, oldest or newest first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session

from app.domain.changes.models import ENTRY_COLUMNS, ChangeEntry, ChangeLogHead
from app.domain.changes.schemas import ChangeRead

_decode = msgspec.json.Decoder(dict[str, Any]).decode

LAST_SEQ = select(ChangeLogHead.last_seq).where(ChangeLogHead.id == 1).scalar_subquery()
"""The seq of the last committed change: a list that reads it in its own statement reflects at least that."""


async def read_changes(
    session: AsyncSession | async_scoped_session[AsyncSession],
    conditions: Sequence[ColumnElement[bool]],
    *,
    limit: int,
    offset: int,
    descending: bool,
) -> tuple[list[ChangeRead], int]:
    count = select(func.count()).select_from(ChangeEntry).where(*conditions)
    total = (await session.execute(count)).scalar_one()
    if not total:
        return [], total
    order = ChangeEntry.seq.desc() if descending else ChangeEntry.seq.asc()
    page = select(*ENTRY_COLUMNS).where(*conditions).order_by(order).limit(limit).offset(offset)
    rows = (await session.execute(page)).all()
    return [
        ChangeRead(
            seq=row.seq,
            at=row.at,
            entity=row.entity,
            entity_id=row.entity_id,
            action=row.action,
            actor_id=row.actor_id,
            source=row.source,
            request_id=row.request_id,
            before=None if row.before_json is None else _decode(row.before_json),
            after=None if row.after_json is None else _decode(row.after_json),
        )
        for row in rows
    ], total
