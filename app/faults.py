"""Faults of what the service depends on, as states: one log line when a fault starts, one when it ends.

A dependency that fails fails for every request at once; a traceback per request buries the one line an
operator needs (what broke, since when) under thousands. Each kind of fault (the database unreachable, its
storage full or read-only, Redis unreachable) is an :class:`Outage`: code that meets the fault calls
:meth:`Outage.failed`, code that succeeds again calls :meth:`Outage.recovered`, and only the changes of
state reach the log. ``/health`` reads the same states.

A process has one of each, shared by everything that meets that fault: Redis's, for one, by the bus
between processes and both login limits, so one outage is one "lost" line and one "back" line, written
by whichever of them notices first.
"""

from __future__ import annotations

import time

import structlog

log = structlog.get_logger("vms.faults")

REDIS_LOST = (
    "lost (until it is back, events between processes come from each process's poll of the change log, "
    "and the login limits count per process)"
)
"""Why the process's Redis outage started, in words (every user of Redis fails it with this)."""


class Outage:
    """Whether one kind of fault is going on, logged once when it starts and once when it ends."""

    __slots__ = ("_since", "name", "reason")

    def __init__(self, name: str) -> None:
        self.name = name
        self.reason: str | None = None
        self._since: float | None = None

    @property
    def active(self) -> bool:
        return self._since is not None

    def failed(self, reason: str, error: BaseException | None = None, *, traceback: bool = False) -> None:
        """The fault is going on (``reason`` in words; ``error`` only names the exception class, unless
        ``traceback``: a fault nobody foresaw carries its traceback, on its one line)."""
        self.reason = reason
        if self._since is None:
            self._since = time.monotonic()
            log.warning(
                f"{self.name}: {reason}",
                fault=self.name,
                state="started",
                error=None if error is None else type(error).__name__,
                exc_info=error if traceback and error is not None else None,
            )

    def recovered(self) -> None:
        if self._since is not None:
            lasted = time.monotonic() - self._since
            self._since = None
            self.reason = None
            log.info(f"{self.name}: back", fault=self.name, state="ended", lasted_seconds=round(lasted, 1))
