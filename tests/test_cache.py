"""The rules that keep the in-process caches exact (app/cache.py), checked on the class itself, and what
the caches save: a warm read of the real app runs no SQL.

The API tests show reads following writes; the race below (a row read before a commit, stored after the
invalidation) is too narrow to provoke reliably through HTTP, so it is driven step by step here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar.testing import AsyncTestClient
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app import create_app
from app.cache import InvalidatedCache
from app.db.transactions import Change, WriteGate
from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    bearer,
    create_vm,
    dispose_engines,
    expect,
    login,
    make_settings,
    sign_in_admin,
)


def test_a_value_read_before_an_invalidation_is_not_stored_after_it() -> None:
    cache: InvalidatedCache[int, str] = InvalidatedCache("test", enabled=True, max_entries=10)
    generation = cache.generation  # a reader starts its query
    cache.invalidate(1)  # a writer commits a change to row 1
    cache.put(1, "row as read before the change", generation)
    assert cache.get(1) is None
    cache.put(1, "row as read after the change", cache.generation)
    assert cache.get(1) == "row as read after the change"


def test_invalidation_drops_the_entry() -> None:
    cache: InvalidatedCache[int, str] = InvalidatedCache("test", enabled=True, max_entries=10)
    cache.put(1, "one", cache.generation)
    cache.put(2, "two", cache.generation)
    cache.invalidate(1)
    assert cache.get(1) is None
    assert cache.get(2) == "two"


def test_size_is_bounded_oldest_first() -> None:
    cache: InvalidatedCache[int, int] = InvalidatedCache("test", enabled=True, max_entries=3)
    for key in range(5):
        cache.put(key, key, cache.generation)
    assert len(cache) == 3
    assert [cache.get(key) for key in range(5)] == [None, None, 2, 3, 4]


def test_disabled_or_zero_sized_cache_stores_nothing() -> None:
    for cache in (
        InvalidatedCache[int, int]("test", enabled=False, max_entries=10),
        InvalidatedCache[int, int]("test", enabled=True, max_entries=0),
    ):
        cache.put(1, 1, cache.generation)
        assert cache.get(1) is None
        assert len(cache) == 0


async def test_a_commit_that_raises_after_committing_still_invalidates(tmp_path: Path) -> None:
    """The write happened but the caller saw an error (connection lost after COMMIT, or cancelled)."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'gate.sqlite3'}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE item (name TEXT)"))
    cache: InvalidatedCache[int, str] = InvalidatedCache("test", enabled=True, max_entries=10)
    cache.put(1, "old", cache.generation)
    published: list[str] = []
    try:
        async with AsyncSession(engine) as session:
            real_commit = session.commit

            async def commit_then_lose_the_connection() -> None:
                await real_commit()
                raise ConnectionResetError("connection lost after COMMIT")

            session.commit = commit_then_lose_the_connection  # type: ignore[method-assign]

            gate = WriteGate(serialize_transactions=True)
            gate.subscribe(
                after_attempt=lambda changes: [cache.invalidate(change.entity_id) for change in changes],
                after_commit=lambda changes: published.extend(change.entity for change in changes),
            )

            async def write() -> None:
                async with gate.transaction(session) as transaction:
                    await session.execute(text("INSERT INTO item VALUES ('new')"))
                    transaction.record(Change("item", "created", 1))

            with pytest.raises(ConnectionResetError):
                await write()
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT name FROM item"))).scalar_one() == "new"
        assert cache.get(1) is None  # the next read goes to the database
        assert published == []  # events are only for commits known to have happened
    finally:
        await engine.dispose()


async def test_a_warm_cached_read_runs_no_sql_statement(tmp_path: Path) -> None:
    """The issue's "no database round trip on the cached read path": with the account, the session and
    the VM cached (one process, SQLite, no Redis), ``GET /vms/{id}`` runs no statement at all. A cold read
    of the same VM with a new session's token is counted too, so the counter is shown to count."""
    app = create_app(make_settings(tmp_path))
    config = app.plugins.get(SQLAlchemyPlugin).config
    (alchemy,) = config if isinstance(config, list | tuple) else [config]
    engine = alchemy.get_engine()
    statements: list[str] = []

    def count(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    try:
        async with AsyncTestClient(app=app) as client:
            admin = await sign_in_admin(client)
            vm = await create_vm(client, admin)
            fresh = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)  # a session not checked yet
            event.listen(engine.sync_engine, "before_cursor_execute", count)
            try:
                expect(await client.get(f"/vms/{vm['id']}", headers=bearer(fresh)), 200)
                assert statements, "the cold read ran no statement: the counter counts nothing"
                statements.clear()
                for _ in range(3):
                    assert expect(await client.get(f"/vms/{vm['id']}", headers=bearer(fresh)), 200) == vm
                assert statements == [], statements
            finally:
                event.remove(engine.sync_engine, "before_cursor_execute", count)
    finally:
        await dispose_engines(app)
