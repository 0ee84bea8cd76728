"""The change log's tables (migration 0003 explains how ``seq`` follows commit order on both engines)."""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.domain.users.models import USER_ENTITY
from app.domain.vms.models import VM_ENTITY

# What the log records: changes to VMs and to accounts (sign-in sessions are not in it).
LoggedEntity = Literal["vm", "user"]
LOGGED_ENTITIES: Final[frozenset[str]] = frozenset((VM_ENTITY, USER_ENTITY))
Action = Literal["created", "updated", "deleted"]

Seq = BigInteger().with_variant(Integer(), "sqlite")


class ChangeEntry(DefaultBase):
    __tablename__ = "change_log"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), index=True)
    entity: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    source: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[str | None] = mapped_column(String(64))
    # The public representations as JSON text, as sent: replay splices them into events undecoded.
    before_json: Mapped[str | None] = mapped_column(Text)
    after_json: Mapped[str | None] = mapped_column(Text)


class ChangeLogHead(DefaultBase):
    __tablename__ = "change_log_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    pruned_through: Mapped[int] = mapped_column(BigInteger)


# Every column of an entry, for the history routes and the feed (which splices the JSON undecoded).
ENTRY_COLUMNS = (
    ChangeEntry.seq,
    ChangeEntry.at,
    ChangeEntry.entity,
    ChangeEntry.entity_id,
    ChangeEntry.action,
    ChangeEntry.actor_id,
    ChangeEntry.source,
    ChangeEntry.request_id,
    ChangeEntry.before_json,
    ChangeEntry.after_json,
)
