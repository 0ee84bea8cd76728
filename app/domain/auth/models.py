"""Sign-in sessions: the durable record that makes a logout outlive a restart."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from advanced_alchemy.base import BigIntAuditBase, DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

# The user's id column type on both engines (INTEGER on SQLite, where only INTEGER PRIMARY KEY is a rowid).
UserId = BigInteger().with_variant(Integer(), "sqlite")
SessionId = UserId


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
    # When the session last signed in or refreshed (not every request: that would be a write per read).
    last_used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # When its current refresh token stops working; a refresh moves it on.
    refresh_expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


class RefreshToken(DefaultBase):
    """One refresh token ever issued, by the SHA-256 of its value (the value itself is never stored).

    A token is spent by the refresh that uses it; the row stays, so that presenting it again is known as
    reuse (someone else holds a copy) and ends its session, instead of being just an unknown token.
    The rows go with their session (ON DELETE CASCADE), i.e. with their user.
    """

    __tablename__ = "auth_refresh_token"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[int] = mapped_column(
        SessionId, ForeignKey("auth_session.id", ondelete="CASCADE"), index=True
    )
    spent_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
