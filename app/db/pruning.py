"""Deleting what is no longer needed, in the background: a batch per short transaction, every so often.

Subclasses say what one batch deletes (:meth:`BatchPruning.prune_batch`, run through the write gate so a
write waits at most one batch on SQLite, where writes take turns). A run deletes batches until one comes
back empty; a database fault is recorded in the process's fault tracker (one line per outage), and any
other failure logs one line, with its traceback, when runs start failing and one when a run succeeds
again, not a traceback per run.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod

import structlog

from app.db.faults import DatabaseFaults
from app.faults import Outage

log = structlog.get_logger("vms.pruning")


class BatchPruning(ABC):
    what: str
    """What is pruned, in words: "the change log", "sign-in sessions"."""

    def __init__(self, *, every_seconds: float, faults: DatabaseFaults | None = None) -> None:
        self.every_seconds = every_seconds
        self._faults = faults
        self._failing = Outage(f"pruning {self.what}")
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def prune_batch(self) -> int:
        """Delete one batch in a transaction of its own; how many were deleted (0: nothing is left)."""

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def prune(self) -> int:
        """Delete everything due, a batch per transaction; how many were deleted."""
        deleted = 0
        while (batch := await self.prune_batch()) > 0:
            deleted += batch
            await asyncio.sleep(0)  # let waiting writes go first
        if deleted:
            log.info(f"pruned {self.what}", deleted=deleted)
        return deleted

    async def _run(self) -> None:
        while True:
            try:
                await self.prune()
            except Exception as exc:
                if self._faults is None or self._faults.met(exc) is None:
                    self._failing.failed(f"could not prune {self.what}; retrying", exc, traceback=True)
            else:
                self._failing.recovered()
            await asyncio.sleep(self.every_seconds)
