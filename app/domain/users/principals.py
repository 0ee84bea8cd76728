"""The signed-in user behind a token, with an in-process cache for the single-process deployment.

Every authenticated request needs the caller's role and token version from the database (never from the
token), which used to cost a session and a query of its own. One process that owns all writes (the
embedded SQLite default) can cache those rows safely: every change goes through ``UserService``, which
calls :meth:`PrincipalCache.invalidate` right after commit. With several workers (Redis configured) a
change made elsewhere would leave a stale entry here, so the cache is off and each request reads the row.
"""

from __future__ import annotations

from collections import OrderedDict

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.domain.users.models import User


class PrincipalCache:
    def __init__(self, *, enabled: bool, max_entries: int = 10_000) -> None:
        self.enabled = enabled
        self.max_entries = max_entries
        self._users: OrderedDict[int, User] = OrderedDict()
        # Bumped by every invalidation: a row read before a change committed must not be cached after it.
        self._generation = 0

    def invalidate(self, user_id: int) -> None:
        self._generation += 1
        self._users.pop(user_id, None)

    async def load(self, session_maker: async_sessionmaker[AsyncSession], user_id: int) -> User | None:
        if self.enabled and (user := self._users.get(user_id)) is not None:
            return user
        generation = self._generation
        async with session_maker() as session:
            user = await session.get(User, user_id)
        if user is not None and self.enabled and generation == self._generation:
            self._users[user_id] = user
            if len(self._users) > self.max_entries:
                self._users.popitem(last=False)
        return user
