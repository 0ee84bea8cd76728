"""Sign-in sessions: opened by a login, ended by a logout; the database is the record every worker reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.auth.models import AuthSession
from app.domain.users.models import User
from app.runtime import Runtime

MAX_USER_AGENT = 256


class AuthSessionRepository(SQLAlchemyAsyncRepository[AuthSession]):
    model_type = AuthSession


class AuthSessionService(SQLAlchemyAsyncRepositoryService[AuthSession, AuthSessionRepository]):
    repository_type = AuthSessionRepository

    def __init__(self, session: AsyncSession, runtime: Runtime, **kwargs: Any) -> None:
        super().__init__(session=session, **kwargs)
        self.runtime = runtime

    async def open(self, user: User, *, client_ip: str | None, user_agent: str | None) -> AuthSession:
        async with self.runtime.write_gate.transaction(self.repository.session) as end:
            record = await self.repository.add(
                AuthSession(
                    user_id=user.id,
                    client_ip=(client_ip or None) and client_ip[:64],
                    user_agent=(user_agent or None) and user_agent[:MAX_USER_AGENT],
                ),
                auto_refresh=False,
            )
            end.invalidate(lambda: self.runtime.principals.sessions.invalidate(record.id))
        return record

    async def end(self, session_id: int) -> None:
        """Mark the session ended (durably), so every token issued in it is refused from now on."""
        sessions = self.runtime.principals.sessions
        async with self.runtime.write_gate.transaction(self.repository.session) as end:
            await self.repository.session.execute(
                update(AuthSession)
                .where(AuthSession.id == session_id, AuthSession.ended_at.is_(None))
                .values(ended_at=datetime.now(UTC))
            )
            end.invalidate(lambda: sessions.invalidate(session_id))
            end.after_commit(lambda: self.runtime.events.session_ended(session_id))
