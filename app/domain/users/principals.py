"""The signed-in user behind a token, with an in-process cache for the single-process deployment.

Every authenticated request needs the caller's role and token version from the database (never from the
token), which used to cost a session and a query of its own. ``UserService`` invalidates an entry right
after every commit that changes or deletes the user (see :mod:`app.cache` for when the cache is on).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.cache import InvalidatedCache
from app.domain.users.models import User


class PrincipalCache(InvalidatedCache[int, User]):
    def __init__(self, *, enabled: bool, max_entries: int = 10_000) -> None:
        super().__init__(enabled=enabled, max_entries=max_entries)

    async def load(self, session_maker: async_sessionmaker[AsyncSession], user_id: int) -> User | None:
        if (user := self.get(user_id)) is not None:
            return user
        generation = self.generation
        async with session_maker() as session:
            user = await session.get(User, user_id)
        if user is not None:
            self.put(user_id, user, generation)
        return user
