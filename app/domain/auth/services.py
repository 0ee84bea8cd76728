"""Sign-in sessions: opened by a login, ended by a logout; the database is the record every worker reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.transactions import Change, WriteGate
from app.domain.auth.models import SESSION_ENTITY, AuthSession
from app.domain.users.models import User

MAX_USER_AGENT = 256


class AuthSessionRepository(SQLAlchemyAsyncRepository[AuthSession]):
    model_type = AuthSession


class AuthSessionService(SQLAlchemyAsyncRepositoryService[AuthSession, AuthSessionRepository]):
    repository_type = AuthSessionRepository

    def __init__(self, session: AsyncSession, write_gate: WriteGate, **kwargs: Any) -> None:
        super().__init__(session=session, **kwargs)
        self.write_gate = write_gate

    async def open(self, user: User, *, client_ip: str | None, user_agent: str | None) -> AuthSession:
        async with self.write_gate.transaction(self.repository.session) as transaction:
            record = await self.repository.add(
                AuthSession(
                    user_id=user.id,
                    client_ip=(client_ip or None) and client_ip[:64],
                    user_agent=(user_agent or None) and user_agent[:MAX_USER_AGENT],
                ),
                auto_refresh=False,
            )
            transaction.record(Change(SESSION_ENTITY, "created", record.id, actor_id=user.id))
        return record

    async def open_sessions(self, user_id: int) -> list[AuthSession]:
        """The user's sessions that have not ended, oldest first."""
        found = await self.repository.session.scalars(
            select(AuthSession)
            .where(AuthSession.user_id == user_id, AuthSession.ended_at.is_(None))
            .order_by(AuthSession.id)
        )
        return list(found)

    async def end_all(self, user_id: int, actor: User | None) -> list[int]:
        """End every open session of the user (``actor`` None: the operator); the ids of those ended."""
        async with self.write_gate.transaction(self.repository.session) as transaction:
            ended = await self.repository.session.scalars(
                update(AuthSession)
                .where(AuthSession.user_id == user_id, AuthSession.ended_at.is_(None))
                .values(ended_at=datetime.now(UTC))
                .returning(AuthSession.id)
            )
            ids = list(ended)
            for session_id in ids:
                transaction.record(
                    Change(SESSION_ENTITY, "updated", session_id, actor_id=actor.id if actor else None)
                )
        return ids

    async def end(self, session_id: int, actor: User) -> None:
        """Mark the session ended (durably), so every token issued in it is refused from now on."""
        async with self.write_gate.transaction(self.repository.session) as transaction:
            await self.repository.session.execute(
                update(AuthSession)
                .where(AuthSession.id == session_id, AuthSession.ended_at.is_(None))
                .values(ended_at=datetime.now(UTC))
            )
            # "updated": the session's ended_at was set; subscribers close its tokens' sockets.
            transaction.record(Change(SESSION_ENTITY, "updated", session_id, actor_id=actor.id))
