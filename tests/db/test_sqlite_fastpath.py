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

from app import create_app
from tests.helpers import VM_BODY, bearer, expect, last_seq, make_settings, sign_in_admin


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
