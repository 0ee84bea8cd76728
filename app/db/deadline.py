"""One deadline for a request's database work: ``VMS_DB_TIMEOUT_SECONDS`` from its first wait on the database.

Each wait has its own bound (a pooled connection, connecting, each statement, the write gate), but a
request can meet several in a row: on a frozen server it waited up to the timeout for a pooled connection
(or for the batch of writes ahead of it), then up to the timeout again for its own statement, and its 503
came after twice the timeout or more. A request now runs under one :class:`asyncio.Timeout`, unarmed
while it does no database work; the first wait on the database arms it (:func:`arm`), and when it
expires the request's task is cancelled wherever it waits, and the request answers 503 like any other
database timeout (app/http/deadline.py).

- Arming points: a session's first transaction (every ORM session, the request's and those of token
  checks alike: :func:`_arm_on_first_transaction`), a write's turn at the write gate and a queued
  batch write (app/db/transactions.py, app/db/batching.py).
- Paused around work that is not the database's and may queue on a busy host (bcrypt, in
  app/security/passwords.py), and around a connection's bounded close once the write is decided
  (app/db/engine.py): a committed write is answered as such.
- Disarmed when the response starts (its status is decided; the session's close after it has a bound of
  its own).
- Only the task that entered the deadline arms it: a task started during the request copies its context,
  and must neither cancel the request nor touch a deadline that has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session


class Deadline:
    """A request's database deadline (see the module doc)."""

    __slots__ = ("_held", "_owner", "_seconds", "_timeout")

    def __init__(self, timeout: asyncio.Timeout, seconds: float) -> None:
        self._timeout = timeout
        self._seconds = seconds
        self._owner = asyncio.current_task()
        # Paused, or disarmed for good (the response started): arming does nothing then.
        self._held = False

    def _mine(self) -> bool:
        return asyncio.current_task() is self._owner and not self._timeout.expired()

    def arm(self) -> None:
        if self._timeout.when() is None and not self._held and self._mine():
            self._timeout.reschedule(asyncio.get_running_loop().time() + self._seconds)

    def disarm(self) -> None:
        """For good: the response is decided."""
        if self._mine():
            self._held = True
            self._timeout.reschedule(None)

    @property
    def expired(self) -> bool:
        return self._timeout.expired()

    @contextmanager
    def paused(self) -> Iterator[None]:
        if self._held or not self._mine():
            yield
            return
        when = self._timeout.when()
        loop = asyncio.get_running_loop()
        left = None if when is None else when - loop.time()
        self._held = True  # not armed by the body either
        if left is not None:
            self._timeout.reschedule(None)
        try:
            yield
        finally:
            self._held = False
            if left is not None and not self._timeout.expired():
                # What was left when the pause began (none left: it expires at once).
                self._timeout.reschedule(loop.time() + max(left, 0.0))


_current: ContextVar[Deadline | None] = ContextVar("vms_db_deadline", default=None)


@asynccontextmanager
async def request_deadline(seconds: float) -> AsyncIterator[Deadline]:
    """Run the body under one database deadline of ``seconds``, armed by its first database wait.

    Raises TimeoutError (``Deadline.expired`` is then true) when it expired in the body."""
    async with asyncio.timeout(None) as timeout:
        deadline = Deadline(timeout, seconds)
        token = _current.set(deadline)
        try:
            yield deadline
        finally:
            _current.reset(token)


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
