"""SQLite's driver path: how many hand-offs to aiosqlite's thread a write makes while it holds the lock.

Writers queue for SQLite's one write lock, so each hand-off made while holding it is paid by every
writer (app/db/sqlite_fastpath.py). These count the hand-offs, not time: a count is exact on a noisy
machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiosqlite.core
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import Column, Integer, MetaData, String, Table, delete, func, insert, select

from app import create_app
from app.db.engine import create_engine
from app.db.multirow import insert_returning_keys
from app.db.transactions import COMMIT_WITH_STATEMENT
from tests.helpers import VM_BODY, bearer, expect, last_seq, make_settings, sign_in_admin

LAST = {COMMIT_WITH_STATEMENT: True}


@pytest.fixture
def hand_offs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = aiosqlite.core.Connection._execute

    async def counted(self: Any, function: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(function, "__qualname__", repr(function)))
        return await original(self, function, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    return calls


async def test_a_write_commits_with_its_change_log_entry_in_one_hand_off(
    tmp_path: Path, hand_offs: list[str]
) -> None:
    """POST /vms: the VM's INSERT, then the change log's INSERT and the COMMIT together; the session's
    commit that follows has nothing left to do. Before, the COMMIT was a third hand-off."""
    async with AsyncTestClient(create_app(make_settings(tmp_path))) as client:
        admin = await sign_in_admin(client)
        expect(await client.post("/vms", json=VM_BODY, headers=bearer(admin.token)), 201)  # warm the pool
        before = await last_seq(client, admin)
        hand_offs.clear()
        created = expect(await client.post("/vms", json=VM_BODY, headers=bearer(admin.token)), 201)
        writes = list(hand_offs)
        assert len(writes) == 2, writes
        # Committed, not left open: other connections see both the VM and its entry.
        assert await last_seq(client, admin) == before + 1
        vm = expect(await client.get(f"/vms/{created['id']}", headers=bearer(admin.token)), 200)
        assert vm == created


def _rows_table() -> Table:
    return Table(
        "rows_in_order",
        MetaData(),
        Column("key", Integer, primary_key=True),
        Column("name", String(20), nullable=False),
        sqlite_autoincrement=True,
    )


async def test_several_rows_are_one_statement_with_their_keys_in_order(
    tmp_path: Path, hand_offs: list[str]
) -> None:
    """app/db/multirow.py: SQLAlchemy's ordered RETURNING sends one INSERT per row on SQLite; ours is one
    statement, and the keys still come back in the order of the rows (gaps left by deleted rows too)."""
    engine = create_engine(make_settings(tmp_path))
    table = _rows_table()
    try:
        async with engine.begin() as connection:
            await connection.run_sync(table.metadata.create_all)
            await connection.execute(insert(table), [{"name": "gone"}] * 3)
            await connection.execute(delete(table).where(table.c.key == 2))
        async with engine.connect() as connection:
            hand_offs.clear()
            keys = await insert_returning_keys(
                connection, table, table.c.key, [{"name": f"row-{index}"} for index in range(40)]
            )
            assert len(hand_offs) == 1, hand_offs
            await connection.commit()
            stored = {key: name for key, name in await connection.execute(select(table.c.key, table.c.name))}
        assert [stored[key] for key in keys] == [f"row-{index}" for index in range(40)]
        assert keys == list(range(4, 44))
    finally:
        await engine.dispose()


async def test_a_statement_split_into_several_never_commits_with_the_first(tmp_path: Path) -> None:
    """A statement SQLAlchemy splits into one per row (ordered RETURNING on SQLite) and that asks to commit
    with it commits nothing of its own: the transaction stays whole, and a rollback takes every row back.
    Before, the first row's statement committed the transaction and each later row committed its own."""
    engine = create_engine(make_settings(tmp_path))
    table = _rows_table()
    ordered = insert(table).returning(table.c.key, sort_by_parameter_order=True)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(table.metadata.create_all)
        async with engine.connect() as connection:
            await connection.execute(insert(table), {"name": "written first"})
            result = await connection.execute(
                ordered, [{"name": "a"}, {"name": "b"}, {"name": "c"}], execution_options=LAST
            )
            assert len(result.scalars().all()) == 3
            await connection.rollback()
            assert (await connection.execute(select(func.count()).select_from(table))).scalar() == 0
    finally:
        await engine.dispose()
