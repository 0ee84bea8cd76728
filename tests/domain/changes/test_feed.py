"""The change feed (app/domain/changes/feed.py) when it cannot read the log for a reason that is not a
database fault: one log line (with the traceback, once) when it starts failing and one when it reads
again, not a traceback every poll; its listeners get what it could not deliver once it can."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from app.domain.changes.feed import POLL_SECONDS
from tests.helpers import (
    VM_BODY,
    expect,
    receive_event,
    server_with,
    settings_of,
    sign_in_admin,
    ws_connect,
)

FEED = "change feed"


def write_entry_without_a_representation(database: Path, like_seq: int) -> int:
    """Another writer's entry (the CLI's, say) that the feed cannot turn into an event: neither ``before``
    nor ``after``. Its seq comes from the counter, as every writer's does."""
    with sqlite3.connect(database) as connection:
        (seq,) = connection.execute(
            "UPDATE change_log_head SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq"
        ).fetchone()
        connection.execute(
            "INSERT INTO change_log (seq, at, entity, entity_id, action, actor_id, source, request_id, "
            "before_json, after_json) SELECT ?, at, entity, entity_id, 'updated', actor_id, 'cli', NULL, "
            "NULL, NULL FROM change_log WHERE seq = ?",
            (seq, like_seq),
        )
    return int(seq)


def repair(database: Path, seq: int, like_seq: int) -> None:
    with sqlite3.connect(database) as connection:
        connection.execute(
            "UPDATE change_log SET after_json = (SELECT after_json FROM change_log WHERE seq = ?) "
            "WHERE seq = ?",
            (like_seq, seq),
        )


async def test_an_entry_the_feed_cannot_read_is_one_line_each_way_not_a_traceback_per_poll(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    async with server_with(tmp_path) as server:
        admin = await sign_in_admin(server.http)
        database = settings_of(server).sqlite_path
        async with ws_connect(server, "/ws/vms", admin.token) as socket:
            created = expect(await server.http.post("/vms", json=VM_BODY, headers=admin.headers), 201)
            first = await receive_event(socket)
            capfd.readouterr()

            poison = write_entry_without_a_representation(database, first["seq"])
            await asyncio.sleep(8 * POLL_SECONDS)  # several polls meet it
            failing = capfd.readouterr()
            repair(database, poison, first["seq"])

            repaired = await receive_event(socket)
            assert (repaired["seq"], repaired["vm"]["id"]) == (poison, created["id"])
            expect(await server.http.post("/vms", json=VM_BODY, headers=admin.headers), 201)
            assert (await receive_event(socket))["seq"] == poison + 1
            healed = capfd.readouterr()
    during = [line for line in (failing.out + failing.err).splitlines() if FEED in line]
    assert len(during) == 1, during
    assert '"state":"started"' in during[0], during
    assert "Traceback" in during[0], during  # once, for whoever debugs it
    after = [line for line in (healed.out + healed.err).splitlines() if FEED in line]
    assert len(after) == 1, after
    assert '"state":"ended"' in after[0], after
    assert "Traceback" not in healed.out + healed.err


async def test_pruning_that_fails_for_no_database_fault_is_one_line_each_way(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Background pruning (app/domain/changes/retention.py) every second, while the log's head row is
    unreadable to it (a column renamed by hand): one line with its traceback, then one when it prunes."""
    async with server_with(tmp_path, change_log_prune_seconds=1) as server:
        database = settings_of(server).sqlite_path
        capfd.readouterr()
        with sqlite3.connect(database) as connection:
            connection.execute("ALTER TABLE change_log_head RENAME COLUMN last_seq TO hidden_seq")
        await asyncio.sleep(3.5)  # three or four prunings meet it
        failing = capfd.readouterr()
        with sqlite3.connect(database) as connection:
            connection.execute("ALTER TABLE change_log_head RENAME COLUMN hidden_seq TO last_seq")
        await asyncio.sleep(2.5)
        healed = capfd.readouterr()
    during = [line for line in (failing.out + failing.err).splitlines() if "prun" in line]
    assert len(during) == 1, during
    assert '"state":"started"' in during[0], during
    assert "Traceback" in during[0], during
    after = [line for line in (healed.out + healed.err).splitlines() if "prun" in line]
    assert len(after) == 1, after
    assert '"state":"ended"' in after[0], after
