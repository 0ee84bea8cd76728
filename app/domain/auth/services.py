"""Sign-in sessions: opened by a login, kept alive by refresh tokens, ended by a logout or an account change.

The database is the record every worker reads. Refresh tokens are random strings the server keeps only as
SHA-256 hashes (they carry 256 bits of chance, so a fast hash is enough: nothing to guess from it); each
one is spent by the refresh that uses it, and presenting a spent one again ends its session (reuse
detection: the owner and whoever copied the token cannot both keep going).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session

from app.db.transactions import Change, Transaction, WriteGate
from app.domain.auth.models import SESSION_ENTITY, AuthSession, RefreshToken
from app.domain.users.models import User

MAX_USER_AGENT = 256
# Longer than any token this service issues (43 characters); anything longer is refused unhashed.
MAX_REFRESH_TOKEN = 128
INVALID_REFRESH = "The refresh token is not valid"


def new_refresh_token() -> tuple[str, str]:
    """A fresh refresh token and the hash that is stored in its place."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Opened:
    """A session with a refresh token for it (the token's value exists only here and in the response)."""

    session: AuthSession
    user: User
    refresh_token: str


class RefreshRefused(Exception):
    """Why a refresh token was not accepted: ``detail`` for the client, ``code`` for the security log
    (``invalid``, ``ended``, ``expired`` or ``reused``)."""

    def __init__(self, detail: str, code: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


async def end_sessions(
    db: AsyncSession | async_scoped_session[AsyncSession],
    transaction: Transaction,
    *which: ColumnElement[bool],
    actor_id: int | None,
) -> list[int]:
    """In ``transaction``: end the open sessions ``which`` selects, reported to the change seam so their
    tokens are refused and their sockets closed after commit; the ids of those ended."""
    ended = list(
        await db.scalars(
            update(AuthSession)
            .where(AuthSession.ended_at.is_(None), *which)
            .values(ended_at=datetime.now(UTC))
            .returning(AuthSession.id)
        )
    )
    for session_id in ended:
        # "updated": the session's ended_at was set; subscribers close its tokens' sockets.
        transaction.record(Change(SESSION_ENTITY, "updated", session_id, actor_id=actor_id))
    return ended


def still_open(current: int | None = None) -> tuple[ColumnElement[bool], ...]:
    """The sessions that have neither ended nor let their refresh token expire (which ends a session), and
    the ``current`` one whatever its refresh token: its access token still works, so it is still open to
    the caller holding it."""
    now = datetime.now(UTC)
    refresh_live = or_(AuthSession.refresh_expires_at.is_(None), AuthSession.refresh_expires_at > now)
    if current is not None:
        refresh_live = or_(refresh_live, AuthSession.id == current)
    return AuthSession.ended_at.is_(None), refresh_live


class AuthSessionRepository(SQLAlchemyAsyncRepository[AuthSession]):
    model_type = AuthSession


class AuthSessionService(SQLAlchemyAsyncRepositoryService[AuthSession, AuthSessionRepository]):
    repository_type = AuthSessionRepository

    def __init__(
        self,
        session: AsyncSession,
        write_gate: WriteGate,
        *,
        refresh_ttl: timedelta = timedelta(days=30),
        **kwargs: Any,
    ) -> None:
        super().__init__(session=session, **kwargs)
        self.write_gate = write_gate
        self.refresh_ttl = refresh_ttl

    async def open(self, user: User, *, client_ip: str | None, user_agent: str | None) -> Opened:
        """A new session for ``user``, with its first refresh token."""
        db = self.repository.session
        now = datetime.now(UTC)
        token, token_hash = new_refresh_token()
        async with self.write_gate.transaction(db) as transaction:
            record = await self.repository.add(
                AuthSession(
                    user_id=user.id,
                    client_ip=(client_ip or None) and client_ip[:64],
                    user_agent=(user_agent or None) and user_agent[:MAX_USER_AGENT],
                    last_used_at=now,
                    refresh_expires_at=now + self.refresh_ttl,
                ),
                auto_refresh=False,
            )
            db.add(RefreshToken(token_hash=token_hash, session_id=record.id))
            await db.flush()
            transaction.record(Change(SESSION_ENTITY, "created", record.id, actor_id=user.id))
        return Opened(record, user, token)

    async def refresh(self, token: str) -> Opened:
        """Spend ``token`` and give its session a new one; raises :class:`RefreshRefused`.

        Spending is one conditional UPDATE, so of two refreshes with the same token exactly one finds it
        unspent (PostgreSQL makes the second wait for the first's commit and re-checks the condition;
        SQLite has one writer at a time). The other sees a spent token: that is reuse, and it ends the
        session, because the server cannot tell the owner's copy from a thief's.
        """
        if not token or len(token) > MAX_REFRESH_TOKEN:
            raise RefreshRefused(INVALID_REFRESH, "invalid")
        db = self.repository.session
        token_hash = hash_refresh_token(token)
        # A token never issued is refused on a read: a flood of made-up tokens must not queue for the
        # write lock (SQLite has one writer) ahead of real writes. The read and the write share one
        # transaction: SQLite's driver begins it at the first write (no snapshot is held while waiting for
        # the lock), and PostgreSQL's READ COMMITTED gives the UPDATE below a fresh view.
        known = await db.scalar(select(RefreshToken.session_id).where(RefreshToken.token_hash == token_hash))
        if known is None:
            raise RefreshRefused(INVALID_REFRESH, "invalid")
        now = datetime.now(UTC)
        async with self.write_gate.transaction(db) as transaction:
            session_id = await db.scalar(
                update(RefreshToken)
                .where(RefreshToken.token_hash == token_hash, RefreshToken.spent_at.is_(None))
                .values(spent_at=now)
                .returning(RefreshToken.session_id)
            )
            if session_id is None:  # issued, and spent already: reuse
                await end_sessions(db, transaction, AuthSession.id == known, actor_id=None)
            else:
                found = (
                    await db.execute(
                        select(AuthSession, User)
                        .join(User, User.id == AuthSession.user_id)
                        .where(AuthSession.id == session_id)
                    )
                ).first()
                if found is None:
                    raise RefreshRefused(INVALID_REFRESH, "invalid")
                record, user = found
                if record.ended_at is not None:
                    raise RefreshRefused(
                        "The session of this refresh token has ended; sign in again", "ended"
                    )
                if record.refresh_expires_at is None or record.refresh_expires_at <= now:
                    raise RefreshRefused("The refresh token has expired; sign in again", "expired")
                new_token, new_hash = new_refresh_token()
                record.last_used_at = now
                record.refresh_expires_at = now + self.refresh_ttl
                db.add(RefreshToken(token_hash=new_hash, session_id=record.id))
                # A token spent longer ago than a token lives would be refused as expired anyway, so it
                # needs no row for reuse detection: this keeps a session's rows to one lifetime's refreshes.
                await db.execute(
                    delete(RefreshToken).where(
                        RefreshToken.session_id == record.id, RefreshToken.spent_at < now - self.refresh_ttl
                    )
                )
        if session_id is None:
            # Committed: the session is ended before the refusal is answered.
            raise RefreshRefused(
                "This refresh token was already used, so its session has ended; sign in again", "reused"
            )
        return Opened(record, user, new_token)

    async def open_sessions(self, user_id: int) -> list[AuthSession]:
        """The user's sessions that have not ended, oldest first."""
        found = await self.repository.session.scalars(
            select(AuthSession).where(AuthSession.user_id == user_id, *still_open()).order_by(AuthSession.id)
        )
        return list(found)

    async def open_sessions_page(
        self, user_id: int, page: LimitOffset, current: int | None = None
    ) -> tuple[list[AuthSession], int]:
        """One page of the user's open sessions (``current``, the caller's, always among them), oldest
        first, and how many there are in all (counted in a query of its own: a window count says 0 for a
        page past the end)."""
        return await self.repository.get_many_and_count(
            AuthSession.user_id == user_id,
            *still_open(current),
            page,
            OrderBy("id", "asc"),
            count_with_window_function=False,
        )

    async def end_all(self, user_id: int, actor: User | None) -> list[int]:
        """End every open session of the user (``actor`` None: the operator); the ids of those ended."""
        db = self.repository.session
        async with self.write_gate.transaction(db) as transaction:
            return await end_sessions(
                db, transaction, AuthSession.user_id == user_id, actor_id=actor.id if actor else None
            )

    async def end(self, session_id: int, actor: User, *, owner_id: int | None = None) -> bool:
        """Mark the session ended (durably), so every token issued in it is refused from now on.

        With ``owner_id``, only a session of that user is ended. False when there was no such open session.
        """
        which = [AuthSession.id == session_id]
        if owner_id is not None:
            which.append(AuthSession.user_id == owner_id)
        db = self.repository.session
        async with self.write_gate.transaction(db) as transaction:
            return bool(await end_sessions(db, transaction, *which, actor_id=actor.id))
