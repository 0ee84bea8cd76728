"""The live side of the change log: each process follows the log and fans it out to its listeners in order.

Every process keeps ``last_seq``, the last entry it has delivered, and delivers only ``last_seq + 1``:

- its own commits are delivered at once from memory (:meth:`ChangeFeed.committed`) when they are next;
- anything else (another worker or host, the CLI, an entry after a gap) is read from the log itself,
  ``seq > last_seq`` in order, when something says there is more: a wake-up on Redis from the writer
  (:meth:`ChangeFeed.wake`), a gap seen locally, or the poll every ``POLL_SECONDS``, which also covers a
  Redis outage and deployments without Redis.

Because ``seq`` follows commit order with no holes (migration 0003), "everything after ``last_seq``" is a
complete answer whenever it is read: nothing can appear later below a seq already delivered. The database
is the only source of events; Redis carries only "there is more".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import Row, select

from app.channels.events import EventFanout
from app.db.engine import SessionFactory
from app.db.faults import DatabaseFaults
from app.db.transactions import Change
from app.domain.changes.models import ENTRY_COLUMNS, LOGGED_ENTITIES, ChangeEntry, ChangeLogHead
from app.faults import Outage
from app.metrics import CHANGE_LOG_LAG

POLL_SECONDS = 0.5
"""How often each process reads the log for entries it was not told about (CLI writes without Redis)."""
BATCH = 500
"""Entries read per query, for catching up and for replays."""
STALLED = "cannot read the change log; no events until it can (tried again at every poll)"

_HEAD = select(ChangeLogHead.last_seq, ChangeLogHead.pruned_through).where(ChangeLogHead.id == 1)


class ReplayOutrun(Exception):
    """Retention deleted entries a replay still had to send: the client must reload (close code 4410)."""


class ChangeFeed:
    def __init__(
        self,
        session_factory: SessionFactory,
        fanout: EventFanout,
        *,
        read_from_log: Callable[[str, int], None] | None = None,
        faults: DatabaseFaults | None = None,
    ) -> None:
        """``read_from_log(entity, id)`` is called for each entry read from the log rather than committed
        here: another process changed that row (the composition root drops this process's cached copy).
        ``faults``: the process's database faults, where a poll that meets one records it (one log line
        per outage, not a traceback per poll)."""
        self._faults = faults
        self._session_factory = session_factory
        self._fanout = fanout
        self._read_from_log = read_from_log
        self.last_seq = 0
        self._stalled = Outage("change feed")
        self._wake = asyncio.Event()
        self._reading = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Deliver what commits from now on (earlier entries are for replays)."""
        self.last_seq, _ = await self.window()
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def window(self) -> tuple[int, int]:
        """The log's last seq, and the highest seq retention may have deleted."""
        async with self._session_factory() as session:
            last, pruned = (await session.execute(_HEAD)).one()
        return int(last), int(pruned)

    @property
    def serving(self) -> bool:
        """Whether this process serves listeners (false on the command line)."""
        return self._task is not None

    def committed(self, changes: Sequence[Change]) -> None:
        """This process's own commit (after commit, in commit order): delivered unless one is missing."""
        if self._task is None:  # not serving listeners (the command line)
            return
        for change in changes:
            if change.seq is None or change.at is None or change.seq <= self.last_seq:
                continue
            if change.seq != self.last_seq + 1:
                self.wake()  # another process committed in between: read the log from last_seq
                return
            frame = self._fanout.frame(
                seq=change.seq,
                at=change.at,
                entity=change.entity,
                action=change.action,
                actor_id=change.actor_id,
                representation=change.current,
            )
            self._deliver(change.seq, change.at, change.entity, frame)

    def wake(self) -> None:
        self._wake.set()

    def wake_for(self, announced: bytes) -> None:
        """A bus message: another process committed seq N (its text); read the log if N is new here."""
        try:
            seq = int(announced)
        except ValueError:
            seq = self.last_seq + 1  # not ours to parse: reading the log is always safe
        if seq > self.last_seq:
            self.wake()

    async def catch_up(self) -> None:
        """Deliver every entry after ``last_seq`` that the log holds now."""
        async with self._reading:
            while True:
                rows = await self._read(after=self.last_seq, until=None, entity=None)
                for row in rows:
                    # Skipped: what was delivered meanwhile (this process's own commits). A number missing
                    # below the first row can only have been pruned, while this process could not read.
                    if row.seq > self.last_seq:
                        if self._read_from_log is not None:
                            self._read_from_log(row.entity, row.entity_id)
                        self._deliver(row.seq, row.at, row.entity, self._frame(row))
                if len(rows) < BATCH:
                    return

    async def replay(self, entity: str, since: int, until: int) -> AsyncIterator[list[tuple[int, bytes]]]:
        """The events of ``entity`` with ``since < seq <= until``, in order, a batch at a time.

        Raises :class:`ReplayOutrun` if retention deleted entries the replay had not reached (a slow reader):
        each batch is read first and ``pruned_through`` after it, and since that only grows, a batch read
        before the prune passed its start is complete.
        """
        cursor = since
        while cursor < until:
            rows = await self._read(after=cursor, until=until, entity=entity)
            _, pruned_through = await self.window()
            if pruned_through > cursor:
                raise ReplayOutrun
            if not rows:
                return
            yield [(row.seq, self._frame(row)) for row in rows]
            cursor = rows[-1].seq

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()
            try:
                await self.catch_up()
            except Exception as exc:  # try again at the next poll
                # A database fault is the process's database outage; anything else is the feed's own, with
                # its traceback once: either way one line when it starts, not one every poll.
                if self._faults is None or self._faults.met(exc) is None:
                    self._stalled.failed(STALLED, exc, traceback=True)
            else:
                self._stalled.recovered()

    async def _read(self, *, after: int, until: int | None, entity: str | None) -> Sequence[Any]:
        statement = select(*ENTRY_COLUMNS).where(ChangeEntry.seq > after)
        if until is not None:
            statement = statement.where(ChangeEntry.seq <= until)
        if entity is not None:
            statement = statement.where(ChangeEntry.entity == entity)
        async with self._session_factory() as session:
            rows: Sequence[Any] = (
                await session.execute(statement.order_by(ChangeEntry.seq).limit(BATCH))
            ).all()
        return rows

    def _frame(self, row: Row[Any]) -> bytes:
        representation = row.before_json if row.after_json is None else row.after_json
        return self._fanout.frame(
            seq=row.seq,
            at=row.at,
            entity=row.entity,
            action=row.action,
            actor_id=row.actor_id,
            representation=msgspec.Raw(representation.encode()),
        )

    def _deliver(self, seq: int, at: datetime, entity: str, frame: bytes) -> None:
        self.last_seq = seq
        # The lag from commit to delivery: near 0 for this process's writes, up to the poll for others'.
        CHANGE_LOG_LAG.observe(max((datetime.now(UTC) - at).total_seconds(), 0.0))
        if entity in LOGGED_ENTITIES:
            self._fanout.publish(entity, frame)
