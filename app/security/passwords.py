"""Password hashing: bcrypt on a small pool of low-priority threads."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import bcrypt

from app.db import deadline
from app.security.credentials import MAX_PASSWORD_BYTES

BCRYPT_THREAD_NICENESS = 10  # added to the process's niceness


def _yield_cpu_to_the_event_loop() -> None:
    """Run this bcrypt thread at a lower CPU priority than the event loop (Linux: per-thread niceness).

    With one hashing thread per core, a login storm kept every core busy and the event loop waited for the
    scheduler: reads slowed to 3.6 times their idle p99. At lower priority the hashes still take every
    core the requests leave idle, and a request preempts them.
    """
    if sys.platform == "linux":  # elsewhere PRIO_PROCESS would renice the whole process
        thread = threading.get_native_id()
        with contextlib.suppress(OSError):
            # Relative to the process's own niceness, so the threads always end up below the event loop.
            niceness = min(os.getpriority(os.PRIO_PROCESS, thread) + BCRYPT_THREAD_NICENESS, 19)
            os.setpriority(os.PRIO_PROCESS, thread, niceness)


class PasswordHasher:
    """bcrypt on a small dedicated thread pool.

    bcrypt releases the GIL, so hashing runs in parallel with the event loop; a pool of its own bounds how
    many hashes run at once, so a login storm queues here instead of starving the default executor.
    """

    def __init__(self, rounds: int, threads: int) -> None:
        self.rounds = rounds
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._dummy_hash: bytes | None = None

    async def _run(self, func: Any, *args: Any) -> Any:
        if self._executor is None:  # created lazily: an app may be started again after a shutdown
            self._executor = ThreadPoolExecutor(
                max_workers=self.threads,
                thread_name_prefix="bcrypt",
                initializer=_yield_cpu_to_the_event_loop,
            )
        # Not the database's time: a login storm queues here, and a sign-in that waited its turn must not
        # find its database deadline spent (app/db/deadline.py).
        with deadline.paused():
            return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def hash(self, password: str) -> str:
        salt = bcrypt.gensalt(self.rounds)
        hashed: bytes = await self._run(bcrypt.hashpw, password.encode(), salt)
        return hashed.decode()

    async def verify(self, password: str, hashed: str | None) -> bool:
        """Check a password; with no hash (unknown account) do the same work against a dummy hash."""
        candidate = password.encode()
        # bcrypt (>= 5) raises on longer input, and no stored password is longer: spend the same work on
        # an empty candidate and fail, so the answer and its timing match any other failed login.
        too_long = len(candidate) > MAX_PASSWORD_BYTES
        ok = await self._check(b"" if too_long else candidate, hashed)
        return ok and not too_long

    async def _check(self, candidate: bytes, hashed: str | None) -> bool:
        if hashed is None:
            if self._dummy_hash is None:
                self._dummy_hash = (await self.hash(uuid.uuid4().hex)).encode()
            await self._run(bcrypt.checkpw, candidate, self._dummy_hash)
            return False
        try:
            return bool(await self._run(bcrypt.checkpw, candidate, hashed.encode()))
        except ValueError:  # a malformed stored hash never authenticates
            return False

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
