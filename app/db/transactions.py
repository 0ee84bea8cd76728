"""The write path: write transactions, ordered per process, and the one seam for "something changed".

A service runs each write (or a batch of concurrent writes sharing one transaction: app/db/batching.py)
inside :meth:`WriteGate.transaction` and reports every change it makes there
as data (:meth:`Transaction.record` of a :class:`Change`: entity, action, id, before, after, actor).
What follows from a change is not written in the services: the composition root subscribes to the gate
once (:meth:`WriteGate.subscribe`), and the gate calls each subscriber with the transaction's changes.

- ``after_attempt`` runs after every commit attempt, even one that raised (cache invalidation): a commit
  that raises may still have happened (the request was cancelled while COMMIT ran on the driver's thread,
  or the connection dropped after PostgreSQL received it). A needless invalidation only costs the next read
  a query; a missed one would serve the old row until restart.
- ``after_commit`` runs only once the commit succeeded, in commit order (event publishing): a rolled-back
  write publishes nothing.

SQLite (the embedded default) allows one writer at a time, so the gate holds an asyncio lock for the whole
transaction there: writers queue in the event loop instead of failing with "database is locked", and a
check-then-write (such as "is this the last administrator?") cannot interleave with another writer. On
PostgreSQL the lock is held only around commit and what follows it, which keeps events in commit order
within a process while transactions run concurrently (row locks do the rest).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import KW_ONLY, dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_scoped_session

from app.context import Source
from app.db import deadline

Action = Literal["created", "updated", "deleted"]

COMMIT_WITH_STATEMENT = "commit_with_statement"
"""Execution option for a write's last statement (a ``before_commit`` recorder's): the engine may commit in
the same round trip as the statement, where it can (SQLite's one-hop driver path does; elsewhere the
session's commit does it as usual). Nothing may run in the transaction after such a statement."""


@dataclass(slots=True)
class Change:
    """One change a write made: to which entity, what, and who asked (``actor_id``; None for the system).

    ``before`` and ``after`` are the entity's public representation (a msgspec struct) on either side of the
    change, None where there is none (``before`` of a creation, ``after`` of a deletion), or both None for
    bookkeeping a subscriber only needs the id of (a sign-in session ended).
    """

    entity: str
    action: Action
    entity_id: int
    _: KW_ONLY
    before: Any = None
    after: Any = None
    actor_id: int | None = None
    # On whose behalf, when the change is written away from the request that asked for it (a shared batch,
    # app/db/batching.py); None: the writing task's own context (app/context.py).
    source: Source | None = None
    request_id: str | None = None
    # Set by the change log as it records the change, inside the transaction (None if not logged).
    seq: int | None = None
    at: datetime | None = None

    @property
    def current(self) -> Any:
        """The representation an event carries: after the change, or what was deleted."""
        return self.before if self.after is None else self.after


ChangeSubscriber = Callable[[Sequence[Change]], None]
ChangeRecorder = Callable[[AsyncConnection, Sequence[Change]], Awaitable[None]]
# What a write runs on: a session (the ORM's writes), or a connection (Core statements, and nothing else).
WriteTarget = AsyncSession | async_scoped_session[AsyncSession] | AsyncConnection


class Transaction:
    """The changes one write transaction has made so far, reported by the service that runs it."""

    __slots__ = ("changes",)

    def __init__(self) -> None:
        self.changes: list[Change] = []

    def record(self, change: Change) -> None:
        self.changes.append(change)


class WriteGate:
    """Orders the writes of this process and hands their changes to the subscribers (see the module doc)."""

    def __init__(self, *, serialize_transactions: bool, wait_seconds: float | None = None) -> None:
        self.serialize_transactions = serialize_transactions
        # How long a write waits for the writes ahead of it (a stalled disk or a frozen server holds them
        # all) before it gives up with TimeoutError, which answers 503 like any other database timeout.
        # None: no bound.
        self.wait_seconds = wait_seconds
        self._lock = asyncio.Lock()
        self._before_commit: list[ChangeRecorder] = []
        self._after_attempt: list[ChangeSubscriber] = []
        self._after_commit: list[ChangeSubscriber] = []

    def subscribe(
        self,
        *,
        before_commit: ChangeRecorder | None = None,
        after_attempt: ChangeSubscriber | None = None,
        after_commit: ChangeSubscriber | None = None,
    ) -> None:
        """Called by the composition root, once per concern.

        ``before_commit`` runs inside the transaction, on its connection, as its last statements, under the
        gate's lock (the change log writes its rows there, so a change and its record commit together or
        not at all); if it raises, the transaction rolls back. The others run synchronously, in order, and
        must not raise: the write has already happened when they run."""
        if before_commit is not None:
            self._before_commit.append(before_commit)
        if after_attempt is not None:
            self._after_attempt.append(after_attempt)
        if after_commit is not None:
            self._after_commit.append(after_commit)

    @asynccontextmanager
    async def transaction(self, session: WriteTarget) -> AsyncIterator[Transaction]:
        """Run the body as one transaction and commit it, then hand its changes to the subscribers.

        A body that raises rolls back: nothing was written, so nothing is invalidated or published.
        """
        deadline.arm()  # waits for the writes ahead and for a connection follow (app/db/deadline.py)
        transaction = Transaction()
        whole = self.serialize_transactions
        if whole:
            await self._acquire()
        try:
            if isinstance(session, AsyncConnection) and session.sync_connection is None:
                await session.start()  # connected only now: under the lock on SQLite
            try:
                yield transaction
            except BaseException:
                await session.rollback()
                raise
            if whole:
                await self._commit(session, transaction.changes)
            else:
                # Bounded like the whole-transaction wait: on a frozen server each commit ahead holds the
                # lock for the timeout, and a queue of them would hold the last write that many times.
                await self._acquire()
                try:
                    await self._commit(session, transaction.changes)
                finally:
                    self._lock.release()
        finally:
            if whole:
                self._lock.release()

    async def _acquire(self) -> None:
        if not self._lock.locked() or self.wait_seconds is None:
            await self._lock.acquire()
            return
        async with asyncio.timeout(self.wait_seconds):
            await self._lock.acquire()

    async def _commit(self, session: WriteTarget, changes: list[Change]) -> None:
        if changes and self._before_commit:
            try:
                connection = session if isinstance(session, AsyncConnection) else await session.connection()
                for record in self._before_commit:
                    await record(connection, changes)
            except BaseException:
                # The last statement may have carried the COMMIT (COMMIT_WITH_STATEMENT) and been
                # cancelled while it ran: as after a failed commit, invalidate first.
                self._notify(self._after_attempt, changes)
                await session.rollback()
                raise
        try:
            await session.commit()
        except BaseException:
            self._notify(self._after_attempt, changes)  # first, before anything awaits: it may have committed
            await session.rollback()
            raise
        self._notify(self._after_attempt, changes)
        self._notify(self._after_commit, changes)

    @staticmethod
    def _notify(subscribers: list[ChangeSubscriber], changes: list[Change]) -> None:
        if changes:
            for subscriber in subscribers:
                subscriber(changes)
