"""Group commit: concurrent calls of one kind of write share a transaction; each caller gets its own answer.

On one worker a write is bound by the CPU the event loop spends per statement (SQLAlchemy's execution
path: about 200 µs each on this project's machine), not by the database: SQLite commits tens of
thousands of single-row transactions a second. Writers also queue for one lock (the write gate), so
while one write runs the next ones wait anyway. A :class:`Coalescer` takes every call queued by the
time the previous batch is done (up to ``max_batch``) and hands them to one ``run_batch`` call, which
writes them with one multi-row statement per table and one commit: the per-statement cost is paid once
per batch instead of once per write. Nothing waits to fill a batch: a call made while no batch runs
starts one at once, so a lone write is as fast as before.

A caller is answered only after its batch's commit (its future is set after ``run_batch`` returns). A
batch that raises answers every caller in it with that exception; ``run_batch`` may instead answer each
item on its own (a value or an exception per item), which is how one bad row fails only its own request
(see :meth:`app.domain.vms.services.VMService`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from app.db import deadline
from app.db.faults import fault_of

Item = TypeVar("Item")
Answer = TypeVar("Answer")

BatchRunner = Callable[[Sequence[Item]], Awaitable[Sequence[Answer | Exception]]]


class Coalescer(Generic[Item, Answer]):
    def __init__(self, run_batch: BatchRunner[Item, Answer], *, max_batch: int) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._queue: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Answer:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._draining is None:
            # A task of its own: a caller that goes away (cancelled) does not take its batch with it.
            self._draining = asyncio.create_task(self._drain())
        deadline.arm()  # its turn to write is a wait on the database (app/db/deadline.py)
        try:
            return await future
        except asyncio.CancelledError:
            # Gone before a batch took it (its request's deadline passed, or the client left): then it is
            # not written at all. Once in a batch, it is written or not with the others.
            for index, (_, queued) in enumerate(self._queue):
                if queued is future:
                    del self._queue[index]
                    break
            raise

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                try:
                    answers: Sequence[Answer | Exception] = await self._run_batch([item for item, _ in batch])
                except Exception as exc:
                    answers = [exc] * len(batch)
                except BaseException as exc:  # cancelled (shutdown): tell every caller, then stop
                    waiting, self._queue = [*batch, *self._queue], []
                    _answer(waiting, [exc] * len(waiting))
                    raise
                _answer(batch, answers)
        finally:
            self._draining = None


def _answer(
    waiting: Sequence[tuple[object, asyncio.Future[Answer]]], answers: Sequence[Answer | BaseException]
) -> None:
    for (_, future), answer in zip(waiting, answers, strict=True):
        if future.done():  # its caller was cancelled; the write stands
            continue
        if isinstance(answer, BaseException):
            future.set_exception(answer)
        else:
            future.set_result(answer)


def each_alone_if_refused(run_batch: BatchRunner[Item, Answer]) -> BatchRunner[Item, Answer]:
    """``run_batch``, and when it raises anything but a database fault, ``run_batch`` again for each item
    alone: one row the database refuses (or a row another writer changed under the batch) fails the
    shared statement, and only its own caller should get the error. A database fault (unreachable, disk
    full, read-only) answers every caller of the batch with it."""

    async def run(items: Sequence[Item]) -> Sequence[Answer | Exception]:
        try:
            return await run_batch(items)
        except Exception as exc:
            if len(items) == 1 or fault_of(exc) is not None:
                raise
        answers: list[Answer | Exception] = []
        for item in items:
            try:
                answers.extend(await run_batch([item]))
            except Exception as alone:
                answers.append(alone)
        return answers

    return run
