"""Open sockets by user, so a deleted user, a changed password or role, or a logout closes them at once.

The registry reads the ``users`` channel (which, on Redis, carries the events of every worker) and an
internal ``revocations`` channel fed by ``/logout`` (ended sessions) *inline*: the channels plugin calls it
synchronously while it distributes an event, before any socket's sending task can run. So a socket
whose user was just deleted or demoted is marked revoked before it could be sent that event or any later
one, and a socket whose user changed in a way only the database knows (the token version, bumped by a
password change) holds its next event until the database has been checked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from litestar import WebSocket
from litestar.channels import ChannelsPlugin
from litestar.channels.subscriber import Subscriber
from litestar.security.jwt import Token
from sqlalchemy import select

from app.channels.events import REVOCATIONS_CHANNEL, USERS_CHANNEL
from app.channels.subscribers import CutOffSubscriber
from app.db.engine import SessionFactory
from app.domain.auth.models import AuthSession
from app.domain.users.models import ROLE_ADMIN, User
from app.security.jwt import session_id_of

log = structlog.get_logger("vms.realtime")


@dataclass(eq=False)
class Registration:
    """One open socket: whose it is, what its token was issued under, and how to end it."""

    user_id: int
    session_id: int | None
    token_version: Any
    admin_only: bool
    on_revoke: Callable[[], None]
    revoked: bool = False
    recheck: asyncio.Task[None] | None = field(default=None, repr=False)

    def revoke(self) -> None:
        if not self.revoked:
            self.revoked = True
            self.on_revoke()

    async def may_send(self) -> bool:
        """Whether the next event may go out; waits for a database re-check of this user in progress."""
        task = self.recheck
        if task is not None and not self.revoked:
            # Shielded: the check is shared by the user's sockets, and this one may be closing.
            await asyncio.shield(task)
            if self.recheck is task:
                self.recheck = None
        return not self.revoked


class _UserRef(msgspec.Struct):
    id: int
    rol: str | None = None


class _Envelope(msgspec.Struct):
    event: str | None = None
    user: _UserRef | None = None
    sid: int | None = None


_decode_envelope = msgspec.json.Decoder(_Envelope).decode


class ConnectionRegistry:
    def __init__(self, channels: ChannelsPlugin, session_factory: SessionFactory) -> None:
        self._channels = channels
        self._session_factory = session_factory
        self._by_user: dict[int, set[Registration]] = defaultdict(set)
        self._subscriber: Subscriber | None = None
        self._rechecks: set[asyncio.Task[None]] = set()

    def add(
        self, socket: WebSocket[Any, Token, Any], *, admin_only: bool, on_revoke: Callable[[], None]
    ) -> Registration:
        token = socket.auth
        registration = Registration(
            user_id=socket.user.id,
            session_id=session_id_of(token),
            token_version=token.extras.get("ver"),
            admin_only=admin_only,
            on_revoke=on_revoke,
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
        if not isinstance(subscriber, CutOffSubscriber):
            raise TypeError("the channels plugin must use CutOffSubscriber (see app.wiring)")
        subscriber.handle_inline(self._on_event)
        self._subscriber = subscriber

    async def stop(self) -> None:
        if self._subscriber is not None:
            await self._channels.unsubscribe(self._subscriber)
            self._subscriber = None
        for task in list(self._rechecks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._rechecks)

    def recheck_sessions(self) -> None:
        """Close the sockets of sessions that ended meanwhile, as the database says (in a task).

        Called when the bus between processes is back after a Redis outage: a logout through another
        process reaches this one only through the bus (sessions are not in the change log), so its
        revocation may have been lost while Redis was away."""
        task = asyncio.get_running_loop().create_task(self._close_ended_sessions())
        self._rechecks.add(task)
        task.add_done_callback(self._rechecks.discard)

    async def _close_ended_sessions(self) -> None:
        open_ids = {
            registration.session_id
            for sockets in self._by_user.values()
            for registration in sockets
            if registration.session_id is not None
        }
        if not open_ids:
            return
        query = select(AuthSession.id).where(AuthSession.id.in_(open_ids), AuthSession.ended_at.is_not(None))
        try:
            async with self._session_factory() as session:
                ended = (await session.scalars(query)).all()
        except Exception as exc:  # the database is away too: its own fault is reported on its own
            log.warning("could not check the sessions of open sockets", error=type(exc).__name__)
            return
        for session_id in ended:
            self._end_session(session_id)

    def _on_event(self, payload: bytes) -> None:
        # Runs inside the channels plugin's distribution loop: it must neither block nor raise.
        try:
            envelope = _decode_envelope(payload)
        except msgspec.DecodeError:
            return
        try:
            if envelope.sid is not None:
                self._end_session(envelope.sid)
            elif envelope.user is not None and envelope.user.id in self._by_user:
                self._user_changed(envelope.user, deleted=envelope.event == "user_deleted")
        except Exception:
            log.exception("realtime access bookkeeping failed", event=envelope.event)

    def _end_session(self, session_id: int) -> None:
        for sockets in self._by_user.values():
            for registration in sockets:
                if registration.session_id == session_id:
                    registration.revoke()

    def _user_changed(self, user: _UserRef, *, deleted: bool) -> None:
        registrations = list(self._by_user[user.id])
        if deleted:
            for registration in registrations:
                registration.revoke()
            return
        if user.rol is not None and user.rol != ROLE_ADMIN:
            for registration in registrations:
                if registration.admin_only:
                    registration.revoke()
        # The token version is not in the event: hold these sockets' next event until the database says.
        task = asyncio.get_running_loop().create_task(self._recheck(user.id))
        self._rechecks.add(task)
        task.add_done_callback(self._rechecks.discard)
        for registration in registrations:
            if not registration.revoked:
                registration.recheck = task

    async def _recheck(self, user_id: int) -> None:
        try:
            async with self._session_factory() as session:
                user = await session.get(User, user_id, populate_existing=True)
        except Exception:
            # Fail closed: the client can reconnect, and is then authenticated afresh.
            log.exception("realtime access re-check failed; closing the user's sockets", user_id=user_id)
            user = None
        for registration in list(self._by_user.get(user_id, ())):
            if (
                user is None
                or user.token_version != registration.token_version
                or (registration.admin_only and not user.is_admin)
            ):
                registration.revoke()
