"""The composition root's parts list: every long-lived object VMS needs, built from the settings and wired
together once, for the web app (:func:`app.create_app`) and the command line (:mod:`app.cli`) alike.

This is the one module (with ``app/__init__.py`` and ``app/cli.py``) that knows both the infrastructure and
the domains. It is also where the change seam is wired: every write reports its changes to the
:class:`~app.db.transactions.WriteGate`, and here the caches that hold copies of changed rows and the
event publisher subscribe to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio
import structlog
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.memory import MemoryChannelsBackend
from sqlalchemy.ext.asyncio import AsyncEngine

from app.backends import BUS_CHANGES, create_bus, create_login_failures
from app.channels.events import REVOCATIONS_CHANNEL, USERS_CHANNEL, VMS_CHANNEL, EventFanout, session_frame
from app.channels.subscribers import CutOffSubscriber
from app.config import Settings, jwt_secret
from app.context import writes_from
from app.db.engine import create_alchemy_config, create_engine, run_migrations
from app.db.faults import DatabaseFaults
from app.db.transactions import Change, ChangeSubscriber, WriteGate
from app.domain.auth.models import SESSION_ENTITY
from app.domain.auth.principals import PrincipalCache, Principals, SessionCache
from app.domain.auth.pruning import SessionPruning
from app.domain.changes.feed import ChangeFeed
from app.domain.changes.models import LOGGED_ENTITIES
from app.domain.changes.recorder import record_changes
from app.domain.changes.retention import Retention
from app.domain.realtime.messages import UserEvent, VMEvent
from app.domain.users.models import USER_ENTITY
from app.domain.users.services import UserService
from app.domain.vms.models import VM_ENTITY
from app.domain.vms.reads import VMReads
from app.domain.vms.services import VMService
from app.faults import Outage
from app.security import events
from app.security.client_address import ClientAddress
from app.security.jwt import TokenService, VMSJWTAuth, create_jwt_auth
from app.security.passwords import PasswordHasher

log = structlog.get_logger("vms.wiring")


class Wiring:
    """What :func:`wire` built. A plain class: nothing here is validated or serialised."""

    def __init__(self, settings: Settings, *, exclude_from_auth: list[str]) -> None:
        self.settings = settings
        self.engine: AsyncEngine = create_engine(settings)
        self.database_faults = DatabaseFaults(settings.db_timeout_seconds)
        # One view of Redis for the bus and both login limits: one "lost" and one "back" line per outage.
        self.redis_outage = Outage("Redis")
        self.database_faults.install(self.engine)
        self.alchemy: SQLAlchemyAsyncConfig = create_alchemy_config(settings, self.engine)
        # Listeners are served by this process's fan-out; other processes are reached through the bus.
        self.channels = create_fanout(settings)
        # The caches are exact only while this process makes every write: off when workers share Redis.
        single_process = not settings.redis_url
        self.principals = Principals(
            PrincipalCache(enabled=single_process),
            SessionCache(enabled=single_process),
            self.alchemy.get_session,
        )
        self.vm_reads = VMReads(self.engine, enabled=single_process, max_entries=settings.vm_cache_entries)
        ttl = timedelta(minutes=settings.token_ttl_minutes)
        self.jwt_auth: VMSJWTAuth = create_jwt_auth(
            secret=jwt_secret(settings),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl=ttl,
            retrieve_user=self.principals.retrieve_user,
            exclude=exclude_from_auth,
        )
        self.tokens = TokenService(
            auth=self.jwt_auth, ttl=ttl, issuer=settings.jwt_issuer, audience=settings.jwt_audience
        )
        self.hasher = PasswordHasher(rounds=settings.bcrypt_rounds, threads=settings.bcrypt_threads)
        self.login_failures = create_login_failures(settings, self.redis_outage)
        self.client_address = ClientAddress(settings.trusted_proxies)
        self.events = EventFanout(
            self.channels,
            routes={VM_ENTITY: VMS_CHANNEL, USER_ENTITY: USERS_CHANNEL},
            messages={VM_ENTITY: VMEvent, USER_ENTITY: UserEvent},
        )
        copies = {
            VM_ENTITY: self.vm_reads.invalidate,
            USER_ENTITY: self.principals.users.invalidate,
            SESSION_ENTITY: self.principals.sessions.invalidate,
        }
        # A change another process made (the CLI, for one) also drops this process's cached copy.
        self.feed = ChangeFeed(
            self.alchemy.get_session,
            self.events,
            read_from_log=lambda entity, key: copies[entity](key),
            faults=self.database_faults,
        )
        # When the bus is back after a Redis outage, the feed reads the log at once rather than at its poll.
        # (Sessions ended elsewhere meanwhile: the sockets' periodic session check, app/domain/realtime.)
        self.bus, self.channels_ping = create_bus(settings, self.redis_outage, on_reconnect=self.feed.wake)
        self.write_gate = WriteGate(
            serialize_transactions=settings.is_sqlite, wait_seconds=settings.db_timeout_seconds
        )
        self.vms = VMService(self.engine, self.write_gate, timeout_seconds=settings.db_timeout_seconds)
        self.retention = Retention(
            self.alchemy.get_session,
            self.write_gate,
            days=settings.change_log_retention_days,
            max_entries=settings.change_log_max_entries,
            every_seconds=settings.change_log_prune_seconds,
            faults=self.database_faults,
        )
        self.session_pruning = SessionPruning(
            self.alchemy.get_session,
            self.write_gate,
            access_ttl=ttl,
            every_seconds=settings.session_prune_seconds,
            faults=self.database_faults,
        )
        # The change seam: each concern subscribes once, for every write of every domain.
        self.write_gate.subscribe(
            before_commit=record_changes,
            after_attempt=invalidate_copies(copies),
            after_commit=publish_changes(self.feed, self.events, self.bus),
        )
        self.write_gate.subscribe(after_commit=lambda _: self.database_faults.wrote())
        self.write_gate.subscribe(after_commit=log_security_changes)

    def pool_in_use(self) -> float:
        """Connections checked out of the database pool (0 for a pool that keeps no count)."""
        checkedout = getattr(self.engine.pool, "checkedout", None)
        return float(checkedout()) if callable(checkedout) else 0.0

    def collaborators(self) -> tuple[object, ...]:
        """What request handlers take from the app's state (see :mod:`app.state`)."""
        return (
            self.settings,
            self.write_gate,
            self.hasher,
            self.tokens,
            self.login_failures,
            self.client_address,
            self.vm_reads,
            self.vms,
            self.feed,
            self.database_faults,
        )

    async def start_serving(self) -> None:
        """What only a serving process runs: the bus, the feed of live events, and pruning (of the change
        log and of the sessions)."""
        if self.bus is not None:
            await self.bus.__aenter__()
            changes = await self.bus.subscribe([BUS_CHANGES])
            revocations = await self.bus.subscribe([REVOCATIONS_CHANNEL])
            if isinstance(changes, CutOffSubscriber) and isinstance(revocations, CutOffSubscriber):
                changes.handle_inline(self.feed.wake_for)
                revocations.handle_inline(lambda frame: self.channels.publish(frame, [REVOCATIONS_CHANNEL]))
        await self.feed.start()
        self.retention.start()
        self.session_pruning.start()

    async def stop_serving(self) -> None:
        await self.session_pruning.stop()
        await self.retention.stop()
        await self.feed.stop()
        if self.bus is not None:
            await self.bus.__aexit__(None, None, None)

    async def close(self) -> None:
        self.hasher.close()
        await self.login_failures.close()
        await self.engine.dispose()


def invalidate_copies(caches: Mapping[str, Callable[[int], None]]) -> ChangeSubscriber:
    """Drop the cached copy of every changed row (run even when the commit raised: it may have happened).

    A created row is dropped too: SQLite could once give a new row a deleted one's id, and nothing cached
    may answer for it."""

    def invalidate(changes: Sequence[Change]) -> None:
        for change in changes:
            drop = caches.get(change.entity)
            if drop is not None:
                drop(change.entity_id)

    return invalidate


def log_security_changes(changes: Sequence[Change]) -> None:
    """After commit: the security events of the changes (ended sessions, role changes, deleted users)."""
    for change in changes:
        if change.entity == SESSION_ENTITY and change.action == "updated":
            events.session_ended(session_id=change.entity_id, actor_id=change.actor_id)
        elif change.entity == USER_ENTITY and change.action == "deleted":
            events.user_deleted(user_id=change.entity_id, actor_id=change.actor_id)
        elif change.entity == USER_ENTITY and change.action == "updated":
            before, after = getattr(change.before, "rol", None), getattr(change.after, "rol", None)
            if before is not None and after is not None and before != after:
                events.role_changed(
                    user_id=change.entity_id, before=before, after=after, actor_id=change.actor_id
                )


def publish_changes(feed: ChangeFeed, events: EventFanout, bus: ChannelsPlugin | None) -> ChangeSubscriber:
    """After commit: this process's listeners get the logged changes at once; other processes are told
    there is more to read (the bus says only that: events come from the log); an ended session's id goes
    to every worker so each closes its sockets."""

    def publish(changes: Sequence[Change]) -> None:
        feed.committed(changes)
        for change in changes:
            if change.entity in LOGGED_ENTITIES and bus is not None and change.seq is not None:
                bus.publish(str(change.seq).encode(), BUS_CHANGES)
            elif change.entity == SESSION_ENTITY and change.action == "updated":
                if feed.serving:  # the command line has no sockets (nor a running fan-out) of its own
                    events.session_ended(change.entity_id)
                if bus is not None:
                    bus.publish(session_frame(change.entity_id), REVOCATIONS_CHANNEL)

    return publish


def create_fanout(settings: Settings) -> ChannelsPlugin:
    """This process's fan-out to its WebSocket listeners: in memory, bounded per listener."""
    return ChannelsPlugin(
        backend=MemoryChannelsBackend(),
        channels=[VMS_CHANNEL, USERS_CHANNEL, REVOCATIONS_CHANNEL],
        subscriber_class=CutOffSubscriber,
        subscriber_max_backlog=settings.ws_backlog,
        subscriber_backlog_strategy="backoff",
    )


def user_service(wiring: Wiring, session: Any) -> UserService:
    return UserService(session=session, write_gate=wiring.write_gate, hasher=wiring.hasher)


@asynccontextmanager
async def open_wiring(settings: Settings) -> AsyncIterator[Wiring]:
    """Everything a command-line action needs, outside the web app: migrated, with channels running."""
    wiring = Wiring(settings, exclude_from_auth=[])
    try:
        await anyio.to_thread.run_sync(run_migrations, wiring.alchemy)
        async with contextlib.AsyncExitStack() as stack:
            if wiring.bus is not None:  # tells running servers about the CLI's changes at once
                await stack.enter_async_context(wiring.bus)
            with writes_from("cli"):
                yield wiring
    finally:
        await wiring.close()
