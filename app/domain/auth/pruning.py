"""Deleting sign-in sessions nobody can use any more, in the background, with their refresh tokens.

A session is deleted once it ended, or its refresh token expired, longer ago than an access token lives:
by then no token of it can still be valid (an access token is issued at most at the session's last
refresh, and lives ``VMS_TOKEN_TTL_MINUTES``), so deleting it changes no answer. A token whose session row
is gone is refused like one of an ended session (401 "revoked", :mod:`app.domain.auth.principals`); a
token issued under a longer ``VMS_TOKEN_TTL_MINUTES`` than today's may so be refused before its expiry,
which errs on the safe side. Its refresh tokens go with it (ON DELETE CASCADE), so presenting one is then
an unknown token, not reuse: its session has ended either way.

Each batch is one statement in a short transaction of its own through the write gate (on SQLite, where
writes take turns, a write waits at most one batch), and reports each deleted session to the change seam,
so this process's cached copy of it is dropped (app/wiring.py).

The statement scans ``auth_session`` (no index serves it): it runs every ``VMS_SESSION_PRUNE_SECONDS``
(an hour by default), while an index on the two timestamps would cost every login and refresh.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, or_, select

from app.db.engine import SessionFactory
from app.db.faults import DatabaseFaults
from app.db.pruning import BatchPruning
from app.db.transactions import Change, WriteGate
from app.domain.auth.models import SESSION_ENTITY, AuthSession

BATCH = 500


def unusable_since(cutoff: datetime) -> ColumnElement[bool]:
    """The sessions that ended, or whose refresh token expired, before ``cutoff``. A session from before
    refresh tokens (no ``refresh_expires_at``) could not be refreshed: its last token was its first."""
    refresh_ends = func.coalesce(AuthSession.refresh_expires_at, AuthSession.created_at)
    return or_(AuthSession.ended_at < cutoff, refresh_ends < cutoff)


class SessionPruning(BatchPruning):
    what = "sign-in sessions"

    def __init__(
        self,
        session_factory: SessionFactory,
        write_gate: WriteGate,
        *,
        access_ttl: timedelta,
        every_seconds: float,
        faults: DatabaseFaults | None = None,
    ) -> None:
        """``access_ttl``: how long an access token lives. ``faults``: the process's database faults, where
        a run that meets one records it (one log line per outage, not a traceback per run)."""
        super().__init__(every_seconds=every_seconds, faults=faults)
        self._session_factory = session_factory
        self._write_gate = write_gate
        self.access_ttl = access_ttl

    async def prune_batch(self) -> int:
        cutoff = datetime.now(UTC) - self.access_ttl
        batch = select(AuthSession.id).where(unusable_since(cutoff)).limit(BATCH).scalar_subquery()
        async with self._session_factory() as session, self._write_gate.transaction(session) as transaction:
            ids = list(
                await session.scalars(
                    delete(AuthSession).where(AuthSession.id.in_(batch)).returning(AuthSession.id)
                )
            )
            for session_id in ids:
                transaction.record(Change(SESSION_ENTITY, "deleted", session_id))
        return len(ids)
