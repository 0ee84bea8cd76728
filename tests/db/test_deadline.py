"""One database deadline per request (app/db/deadline.py): it starts at the first wait on the database, it
pauses for work that is not the database's, only the request's own task moves it, and a write queued
behind a stuck one answers 503 within the timeout, not after the wait ahead of it and its own."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app.db import deadline
from app.db.batching import Coalescer
from tests.helpers import VM_BODY, expect, server_with, settings_of, sign_in_admin

SECONDS = 0.5
"""The deadline in these tests. Each body waits 2 x SECONDS before its first database wait, so the deadline
ends 3 x SECONDS after the start; one paid twice would end at 4 x SECONDS."""
EARLY = 0.05
"""How far below its bound the timer may fire (the event loop's clock resolution and rounding)."""
LATE = 0.35
"""How far past its bound it may fire on a busy machine; under SECONDS, so a deadline paid twice fails."""


async def seconds_until_it_expires(body: Callable[[], Awaitable[None]]) -> float:
    """Run ``body`` under a request deadline of ``SECONDS``; how long until the deadline ended it."""
    started = time.monotonic()

    async def run() -> None:
        with deadline.Deadline(SECONDS) as held:
            await body()
        assert held.expired

    with pytest.raises(TimeoutError):
        await run()
    return time.monotonic() - started


async def test_the_deadline_starts_at_the_first_database_wait_not_at_the_request() -> None:
    async def body() -> None:
        await asyncio.sleep(2 * SECONDS)  # no database work yet: not counted
        deadline.arm()
        deadline.arm()  # arming again does not move it
        await asyncio.sleep(10)

    assert 3 * SECONDS - EARLY <= await seconds_until_it_expires(body) < 3 * SECONDS + LATE


async def test_a_pause_stops_the_clock_and_keeps_what_was_left() -> None:
    async def body() -> None:
        deadline.arm()
        with deadline.paused():
            await asyncio.sleep(2 * SECONDS)  # bcrypt's turn, say
            deadline.arm()  # a wait inside a pause does not start it anew
        await asyncio.sleep(10)

    assert 3 * SECONDS - EARLY <= await seconds_until_it_expires(body) < 3 * SECONDS + LATE


async def test_a_task_started_by_the_request_neither_arms_it_nor_fails_after_it() -> None:
    with deadline.Deadline(SECONDS):

        async def background() -> None:
            deadline.arm()  # another task: not the request's clock
            await asyncio.sleep(2 * SECONDS)
            deadline.arm()  # after the request ended: nothing to do, no error

        task = asyncio.create_task(background())
        await asyncio.sleep(2 * SECONDS)
    await task


async def test_an_orm_session_arms_it_when_its_transaction_begins(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'deadline.sqlite3'}")

    async def body() -> None:
        async with AsyncSession(engine) as session:
            await asyncio.sleep(2 * SECONDS)  # a session made, no statement yet: not armed
            await session.execute(text("SELECT 1"))
            await asyncio.sleep(10)

    try:
        assert 3 * SECONDS - EARLY <= await seconds_until_it_expires(body) < 3 * SECONDS + LATE
    finally:
        await engine.dispose()


async def test_a_queued_write_whose_caller_left_is_not_written() -> None:
    release = asyncio.Event()
    batches: list[list[str]] = []

    async def run_batch(items: Any) -> list[str]:
        batches.append(list(items))
        await release.wait()
        return list(items)

    coalescer: Coalescer[str, str] = Coalescer(run_batch, max_batch=10)
    first = asyncio.create_task(coalescer.submit("first"))
    await asyncio.sleep(0.05)  # the first batch runs and waits
    gone = asyncio.create_task(coalescer.submit("gone"))
    kept = asyncio.create_task(coalescer.submit("kept"))
    await asyncio.sleep(0.05)
    gone.cancel()
    await asyncio.sleep(0)
    release.set()
    assert await first == "first"
    assert await kept == "kept"
    assert gone.cancelled()
    assert batches == [["first"], ["kept"]]


def _hold_write_lock(path: Path, seconds: float, locked: threading.Event) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(seconds)
        connection.execute("ROLLBACK")
    finally:
        connection.close()


async def test_a_write_queued_behind_a_stuck_one_answers_503_within_the_timeout(tmp_path: Path) -> None:
    """Another process holds SQLite's write lock: the first write waits the timeout for it, and a second
    one, queued behind the first, used to wait that long and then the timeout again for its own turn."""
    timeout = 2.0
    async with server_with(tmp_path, db_timeout_seconds=timeout) as server:
        admin = await sign_in_admin(server.http)
        database = settings_of(server).sqlite_path
        locked = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(database, 2.5 * timeout, locked))
        holder.start()
        try:
            await asyncio.to_thread(locked.wait, 5)

            async def create(name: str) -> tuple[Any, float]:
                started = time.monotonic()
                response = await server.http.post(
                    "/vms", json={**VM_BODY, "name": name}, headers=admin.headers
                )
                return response, time.monotonic() - started

            ahead = asyncio.create_task(create("ahead"))
            await asyncio.sleep(timeout / 4)  # the first batch holds the gate, waiting for the lock
            queued, seconds = await create("queued")
            first, _ = await ahead
        finally:
            await asyncio.to_thread(holder.join)
        assert first.status_code == 503, first.text
        assert queued.status_code == 503, queued.text
        assert queued.headers["Retry-After"]
        assert queued.json()["detail"] == "The database is unavailable; try again shortly."
        assert seconds <= timeout + 0.8, f"the queued write answered after {seconds:.2f} s"
        names = [vm["name"] for vm in expect(await server.http.get("/vms", headers=admin.headers), 200)]
        assert "ahead" not in names
        assert "queued" not in names
        expect(await server.http.post("/vms", json=VM_BODY, headers=admin.headers), 201)  # healed
