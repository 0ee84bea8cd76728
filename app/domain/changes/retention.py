"""Pruning the change log in the background: entries past the retention period, and beyond the entry cap.

Each batch is a short transaction of its own through the write gate, so a write waits at most one batch
(on SQLite, where writes take turns); ``pruned_through`` moves with the deleted entries, so a resume
from below it is told to reload (close code 4410) instead of silently missing changes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update

from app.db.engine import SessionFactory
from app.db.faults import DatabaseFaults
from app.db.pruning import BatchPruning
from app.db.transactions import WriteGate
from app.domain.changes.models import ChangeEntry, ChangeLogHead

BATCH = 500


class Retention(BatchPruning):
    what = "the change log"

    def __init__(
        self,
        session_factory: SessionFactory,
        write_gate: WriteGate,
        *,
        days: int,
        max_entries: int,
        every_seconds: float,
        faults: DatabaseFaults | None = None,
    ) -> None:
        """``faults``: the process's database faults, where a prune that meets one records it (one log line
        per outage, not a traceback per attempt)."""
        super().__init__(every_seconds=every_seconds, faults=faults)
        self._session_factory = session_factory
        self._write_gate = write_gate
        self.days = days
        self.max_entries = max_entries

    async def prune_batch(self) -> int:
        cutoff = datetime.now(UTC) - timedelta(days=self.days)
        async with self._session_factory() as session, self._write_gate.transaction(session):
            last = (
                await session.execute(select(ChangeLogHead.last_seq).where(ChangeLogHead.id == 1))
            ).scalar_one()
            expired = ChangeEntry.at < cutoff
            if self.max_entries:
                expired = expired | (ChangeEntry.seq <= last - self.max_entries)
            seqs = select(ChangeEntry.seq).where(expired).order_by(ChangeEntry.seq).limit(BATCH)
            through = (await session.execute(select(func.max(seqs.subquery().c.seq)))).scalar_one()
            if through is None:
                return 0
            result = await session.execute(delete(ChangeEntry).where(ChangeEntry.seq <= through))
            await session.execute(
                update(ChangeLogHead)
                .where(ChangeLogHead.id == 1, ChangeLogHead.pruned_through < through)
                .values(pruned_through=through)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]
