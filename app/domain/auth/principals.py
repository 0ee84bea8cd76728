"""The signed-in user behind a token, checked against the database's durable state on every request.

A token is good while its user exists with the token version it was issued under and its session
(``sid``) has not ended. That state lives in the database, so a logout, a password change or a deletion
outlives a restart and every worker sees it. In the single-process deployment both are cached in memory
(see :mod:`app.cache` for when the caches are on); services invalidate an entry right after every commit
that changes the user or ends the session, so the cached read path costs no database round trip. When
the caches are off, one query answers for the user and the session together.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.security.jwt import Token
from sqlalchemy import select

from app.cache import InvalidatedCache
from app.db.engine import SessionFactory
from app.domain.auth.models import AuthSession
from app.domain.users.models import User
from app.security.jwt import session_id_of


class SessionState:
    """What a token check needs to know of a session: whose it is, and whether it has ended."""

    __slots__ = ("ended", "user_id")

    def __init__(self, user_id: int, ended: bool) -> None:
        self.user_id = user_id
        self.ended = ended


class PrincipalCache(InvalidatedCache[int, User]):
    def __init__(self, *, enabled: bool, max_entries: int = 10_000) -> None:
        super().__init__("accounts", enabled=enabled, max_entries=max_entries)


class SessionCache(InvalidatedCache[int, SessionState]):
    def __init__(self, *, enabled: bool, max_entries: int = 50_000) -> None:
        super().__init__("sessions", enabled=enabled, max_entries=max_entries)


_USER_AND_SESSION = select(User, AuthSession.user_id, AuthSession.ended_at).join(
    AuthSession, AuthSession.user_id == User.id
)


class Principals:
    """Loads the caller of a token: its user if that session is live and belongs to that user."""

    def __init__(
        self, users: PrincipalCache, sessions: SessionCache, session_factory: SessionFactory
    ) -> None:
        self.users = users
        self.sessions = sessions
        self._session_factory = session_factory

    async def retrieve_user(self, token: Token, _: ASGIConnection[Any, Any, Any, Any]) -> User | None:
        """The JWT middleware's ``retrieve_user_handler``: the caller of a verified token, or None.

        The role, the token version and the session come from the database (or caches invalidated on every
        change), never from the token, so a logout, demotion, password change or deletion takes effect at
        once, and still after a restart.
        """
        try:
            user_id = int(token.sub)
        except ValueError:
            return None
        session_id = session_id_of(token)
        if not 0 < user_id < 2**63 or session_id is None or not isinstance(token.jti, str):
            return None
        user = await self.load(user_id, session_id)
        if user is None or token.extras.get("ver") != user.token_version:
            return None
        return user

    async def load(self, user_id: int, session_id: int) -> User | None:
        user = self.users.get(user_id)
        state = self.sessions.get(session_id)
        if user is None or state is None:
            user_generation, session_generation = self.users.generation, self.sessions.generation
            async with self._session_factory() as db:
                row = (await db.execute(_USER_AND_SESSION.where(AuthSession.id == session_id))).first()
            if row is None:  # no such session (or its user was deleted, which deletes its sessions)
                return None
            user, owner, ended_at = row
            state = SessionState(owner, ended_at is not None)
            self.users.put(user.id, user, user_generation)
            self.sessions.put(session_id, state, session_generation)
        if state.ended or state.user_id != user_id or user.id != user_id:
            return None
        return user
