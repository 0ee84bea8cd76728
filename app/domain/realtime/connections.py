"""Open sockets by user, so a deleted user, a changed password or role, or a logout closes them at once.

The registry reads the ``users`` channel (which carries every committed user change, from any process) and
an internal ``revocations`` channel fed by ended sessions *inline*: the channels plugin calls it
synchronously while it distributes an event, before any socket's sending task can run. So a socket
whose user was just deleted or demoted is marked revoked before it could be sent that event or any later
one, and a socket whose user changed in a way only the database knows (the token version, bumped by a
role change; the sessions a password change ended) holds its next event until the database has been
checked.

Sessions are not in the change log, and the revocations of other processes come only over Redis: the
command line has no bus to publish on without Redis, and none reaches this process while Redis is away.
So every ``SESSION_CHECK_SECONDS`` the registry also asks the database, in one query for all its open
sockets, which of their sessions have ended (or are gone), and closes those sockets: an ended session's
sockets close within that bound whatever process ended it. The check costs nothing on the HTTP path, and
nothing at all while no socket is open.
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
from sqlalchemy import and_, select

from app.channels.events import REVOCATIONS_CHANNEL, USERS_CHANNEL
from app.channels.subscribers import CutOffSubscriber
from app.db.engine import SessionFactory
from app.db.faults import DatabaseFaults
from app.domain.auth.models import AuthSession
from app.domain.users.models import ROLE_ADMIN, User
from app.faults import Outage
from app.security.jwt import session_id_of

log = structlog.get_logger("vms.realtime")

SESSION_CHECK_SECONDS = 1.0
"""How often the open sockets' sessions are checked in the database (see the module doc): one indexed
primary-key query per second per serving process with sockets open, against a close within about a second
of a session ended where no message reaches this process."""
SESSIONS_PER_QUERY = 5000
"""Session ids per ``IN (...)`` list: below SQLite's and asyncpg's limits on bound parameters."""


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
    def __init__(
        self,
        channels: ChannelsPlugin,
        session_factory: SessionFactory,
        *,
        faults: DatabaseFaults | None = None,
    ) -> None:
        """``faults``: the process's database faults, where a check that meets one records it (one log
        line per outage, not a traceback per check)."""
        self._channels = channels
        self._session_factory = session_factory
        self._faults = faults
        self._by_user: dict[int, set[Registration]] = defaultdict(set)
        self._subscriber: Subscriber | None = None
        self._rechecks: set[asyncio.Task[None]] = set()
        self._checker: asyncio.Task[None] | None = None
        # The check every second failing for a reason that is no database fault: one line when it starts
        # (with its traceback) and one when it works again, not one a second.
        self._check_failing = Outage("sockets' session check")

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
        self._checker = asyncio.get_running_loop().create_task(self._check_sessions_periodically())

    async def stop(self) -> None:
        if self._subscriber is not None:
            await self._channels.unsubscribe(self._subscriber)
            self._subscriber = None
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
            self._checker = None
        for task in list(self._rechecks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._rechecks)

    async def _check_sessions_periodically(self) -> None:
        while True:
            await asyncio.sleep(SESSION_CHECK_SECONDS)
            await self._close_ended_sessions()

    async def _close_ended_sessions(self) -> None:
        """Revoke every open socket whose session has ended or no longer exists (pruned, or its user
        deleted): one query per ``SESSIONS_PER_QUERY`` open sessions."""
        open_ids = sorted(
            {
                registration.session_id
                for sockets in self._by_user.values()
                for registration in sockets
                if registration.session_id is not None
            }
        )
        if not open_ids:
            return
        live: set[int] = set()
        try:
            async with self._session_factory() as session:
                for start in range(0, len(open_ids), SESSIONS_PER_QUERY):
                    chunk = open_ids[start : start + SESSIONS_PER_QUERY]
                    still_open = AuthSession.id.in_(chunk), AuthSession.ended_at.is_(None)
                    live.update(await session.scalars(select(AuthSession.id).where(*still_open)))
        except Exception as exc:  # the database is away: its outage is logged once, and checked again later
            if self._faults is None or self._faults.met(exc) is None:
                self._check_failing.failed(
                    "could not check the sessions of open sockets", exc, traceback=True
                )
            return
        self._check_failing.recovered()
        if ended := set(open_ids) - live:
            for sockets in self._by_user.values():
                for registration in sockets:
                    if registration.session_id in ended:
                        registration.revoke()

    def _database_fault(self, exc: BaseException, message: str) -> None:
        if self._faults is None or self._faults.met(exc) is None:
            log.warning(message, exc_info=exc)

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
        """Revoke the user's sockets whose token version is no longer the user's, whose channel needs a
        role the user lost, or whose session has ended (a password change ends sessions without a new
        token version): one query for the user and those sessions."""
        sessions = {r.session_id for r in self._by_user.get(user_id, ()) if r.session_id is not None}
        live_session = and_(
            AuthSession.user_id == User.id, AuthSession.id.in_(sessions), AuthSession.ended_at.is_(None)
        )
        query = (
            select(User.token_version, User.rol, AuthSession.id)
            .outerjoin(AuthSession, live_session)
            .where(User.id == user_id)
        )
        try:
            async with self._session_factory() as session:
                rows = (await session.execute(query)).all()
        except Exception as exc:
            # Fail closed: the client can reconnect, and is then authenticated afresh.
            self._database_fault(exc, "realtime access re-check failed; closing the user's sockets")
            rows = []
        live = {row.id for row in rows if row.id is not None}
        for registration in list(self._by_user.get(user_id, ())):
            if (
                not rows  # the user is gone (or the database could not say)
                or rows[0].token_version != registration.token_version
                or (registration.admin_only and rows[0].rol != ROLE_ADMIN)
                # Only the sessions asked about: a socket opened meanwhile was checked when it opened.
                or (registration.session_id in sessions and registration.session_id not in live)
            ):
                registration.revoke()
