"""One deadline for a request's database work: ``VMS_DB_TIMEOUT_SECONDS`` from its first wait on the database.

Each wait has its own bound (a pooled connection, connecting, each statement, the write gate), but a
request can meet several in a row: on a frozen server it waited up to the timeout for a pooled connection
(or for the batch of writes ahead of it), then up to the timeout again for its own statement, and its 503
came after twice the timeout or more. A request now has one :class:`Deadline`, unarmed while it does no
database work; the first wait on the database arms it (:func:`arm`), and when it expires the request's
task is cancelled wherever it waits, and the request answers 503 like any other database timeout
(app/http/deadline.py). A timer of its own rather than an :class:`asyncio.Timeout` around every
request: the request that never waits on the database (a cached read) pays for no timer and no async
context manager.

- Arming points: a session's first transaction (every ORM session, the request's and those of token
  checks alike: :func:`_arm_on_first_transaction`), a write's turn at the write gate and a queued
  batch write (app/db/transactions.py, app/db/batching.py).
- Paused around work that is not the database's and may queue on a busy host (bcrypt, in
  app/security/passwords.py), and around a connection's bounded close once the write is decided
  (app/db/engine.py): a committed write is answered as such.
- Only the task that entered the deadline arms it: a task started during the request copies its context,
  and must neither cancel the request nor touch a deadline that has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session


class Deadline:
    """A request's database deadline (see the module doc): ``with Deadline(seconds):`` around the request.

    Leaving it, a cancellation it made is taken back, and turned into TimeoutError if it is what ends the
    body."""

    __slots__ = ("_ended", "_expired", "_held", "_owner", "_seconds", "_timer", "_token")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._owner = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = None
        self._held = False  # paused: arming does nothing
        self._expired = False
        self._ended = False
        self._token: Token[Deadline | None] | None = None

    def __enter__(self) -> Deadline:
        self._token = _current.set(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: Any) -> None:
        self._ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._token is not None:
            _current.reset(self._token)
        if self._expired and self._owner is not None:
            others = self._owner.uncancel()
            if kind is asyncio.CancelledError and others == 0:
                raise TimeoutError("the request's database deadline has passed") from error

    def _mine(self) -> bool:
        return not self._ended and not self._expired and asyncio.current_task() is self._owner

    def arm(self) -> None:
        if self._timer is None and not self._held and self._mine():
            self._timer = asyncio.get_running_loop().call_later(self._seconds, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if not self._ended and self._owner is not None:
            self._expired = True
            self._owner.cancel()

    @property
    def expired(self) -> bool:
        return self._expired

    @contextmanager
    def paused(self) -> Iterator[None]:
        if self._held or not self._mine():
            yield
            return
        loop = asyncio.get_running_loop()
        timer, self._timer = self._timer, None
        left = None if timer is None else timer.when() - loop.time()
        if timer is not None:
            timer.cancel()
        self._held = True  # not armed by the body either
        try:
            yield
        finally:
            self._held = False
            if left is not None and self._mine():
                # What was left when the pause began (none left: it expires at once).
                self._timer = loop.call_later(max(left, 0.0), self._expire)


_current: ContextVar[Deadline | None] = ContextVar("vms_db_deadline", default=None)


def arm() -> None:
    """The current task waits on the database now: start its request's deadline, if it has one."""
    deadline = _current.get()
    if deadline is not None:
        deadline.arm()


@contextmanager
def paused() -> Iterator[None]:
    """Stop the current request's deadline for the body (work that is not the database's)."""
    deadline = _current.get()
    if deadline is None:
        yield
        return
    with deadline.paused():
        yield


def _arm_on_first_transaction(*_: Any) -> None:
    arm()


# A session's transaction is created as it begins, before it checks out a connection: every ORM session's
# first statement, commit or flush comes through here (in the request's task: SQLAlchemy runs the session's
# work in a greenlet that shares the task's context). Once per process, for every session.
event.listen(Session, "after_transaction_create", _arm_on_first_transaction)
