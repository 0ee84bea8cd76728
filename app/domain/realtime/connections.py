"""Open sockets by user, so a deleted user, a changed password or role, or a logout closes them at once.

One background subscriber per process watches the ``users`` channel (which, on Redis, carries the events
of every worker) and an internal ``revocations`` channel fed by ``/logout``; each open socket is
re-checked against the database when its user changes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import WebSocket
from litestar.channels import ChannelsPlugin
from litestar.security.jwt import Token
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.domain.users.models import User
from app.events import REVOCATIONS_CHANNEL, USERS_CHANNEL


@dataclass(eq=False)
class Registration:
    user_id: int
    jti: str | None
    token_version: Any
    admin_only: bool
    revoked: asyncio.Event = field(default_factory=asyncio.Event)


class _Envelope(msgspec.Struct):
    event: str | None = None
    user: dict[str, Any] | None = None
    jti: str | None = None


class ConnectionRegistry:
    def __init__(self, channels: ChannelsPlugin, session_maker: async_sessionmaker[AsyncSession]) -> None:
        self._channels = channels
        self._session_maker = session_maker
        self._by_user: dict[int, set[Registration]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    def add(self, socket: WebSocket[Any, Token, Any], *, admin_only: bool) -> Registration:
        token = socket.auth
        registration = Registration(
            user_id=socket.user.id,
            jti=token.jti if isinstance(token.jti, str) else None,
            token_version=token.extras.get("ver"),
            admin_only=admin_only,
        )
        self._by_user[registration.user_id].add(registration)
        return registration

    def remove(self, registration: Registration) -> None:
        sockets = self._by_user.get(registration.user_id)
        if sockets is not None:
            sockets.discard(registration)
            if not sockets:
                del self._by_user[registration.user_id]

    def __len__(self) -> int:
        return sum(len(sockets) for sockets in self._by_user.values())

    async def start(self) -> None:
        subscriber = await self._channels.subscribe([USERS_CHANNEL, REVOCATIONS_CHANNEL])
        self._task = asyncio.create_task(self._watch(subscriber.iter_events))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self, events: Callable[[], Any]) -> None:
        decoder = msgspec.json.Decoder(_Envelope)
        async for payload in events():
            try:
                envelope = decoder.decode(payload)
            except msgspec.DecodeError:
                continue
            if envelope.jti is not None:
                self._revoke_jti(envelope.jti)
            elif (
                envelope.user is not None
                and isinstance(user_id := envelope.user.get("id"), int)
                and user_id in self._by_user
            ):
                await self._recheck(user_id, deleted=envelope.event == "user_deleted")

    def _revoke_jti(self, jti: str) -> None:
        for sockets in self._by_user.values():
            for registration in sockets:
                if registration.jti == jti:
                    registration.revoked.set()

    async def _recheck(self, user_id: int, *, deleted: bool) -> None:
        user: User | None = None
        if not deleted:
            async with self._session_maker() as session:
                user = await session.get(User, user_id)
        for registration in list(self._by_user.get(user_id, ())):
            stale = user is None or user.token_version != registration.token_version
            if stale or (registration.admin_only and not user.is_admin):  # type: ignore[union-attr]
                registration.revoked.set()
