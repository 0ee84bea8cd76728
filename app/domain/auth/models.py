"""Sign-in sessions: the durable record that makes a logout outlive a restart."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from advanced_alchemy.base import BigIntAuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

# The user's id column type on both engines (INTEGER on SQLite, where only INTEGER PRIMARY KEY is a rowid).
UserId = BigInteger().with_variant(Integer(), "sqlite")


# The name of this entity in the changes its writes report (app/db/transactions.py).
SESSION_ENTITY: Final = "session"


class AuthSession(BigIntAuditBase):
    """One login. Its access tokens carry its id (``sid``) and stop working once ``ended_at`` is set.

    Ids are never reused (AUTOINCREMENT on SQLite, a sequence on PostgreSQL), so a token of an ended
    session can never match a later one.
    """

    __tablename__ = "auth_session"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012

    user_id: Mapped[int] = mapped_column(
        UserId, ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    client_ip: Mapped[str | None] = mapped_column(String(64), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(256), default=None)
    ended_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
