"""Migrations bring an existing database to the current schema without losing or confusing anything."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import anyio
from advanced_alchemy.alembic.commands import AlembicCommands
from litestar.testing import AsyncTestClient

from app import create_app
from app.db.engine import MIGRATIONS_DIR, create_alchemy_config, create_engine
from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    assert_error,
    bearer,
    dispose_engines,
    expect,
    login,
    make_settings,
    run_cli,
)
from tests.helpers.processes import sqlite_server_env

HEAD = sorted(path.name[:4] for path in (MIGRATIONS_DIR / "versions").glob("0*.py"))[-1]
VM_ROW = "INSERT INTO virtual_machine (name, cores, ram, disk, os, status, version, created_at, updated_at) "
VM_VALUES = "VALUES (?, 1, 1, 1, 'Debian 12', 'running', 1, '2026-11-27 10:00:00', '2026-11-27 10:00:00')"


async def test_ids_of_vms_deleted_before_the_upgrade_are_not_confused(tmp_path: Path) -> None:
    """A v1 SQLite database (revision 0001) where the newest VM was deleted: after the upgrade, a new VM
    may take that id (the migration cannot know it was used), but no ETag written before matches it, and
    from then on ids are never reused."""
    settings = make_settings(tmp_path)
    engine = create_engine(settings)
    commands = AlembicCommands(sqlalchemy_config=create_alchemy_config(settings, engine))
    await anyio.to_thread.run_sync(commands.upgrade, "0001")  # Alembic runs its own event loop
    path = settings.sqlite_path
    assert path is not None
    with sqlite3.connect(path) as db:
        for name in ("kept", "deleted"):
            db.execute(VM_ROW + VM_VALUES, (name,))
        db.execute("DELETE FROM virtual_machine WHERE name = 'deleted'")
    old_tag = '"2-1"'  # what v1 answered for the deleted VM

    app = create_app(settings)  # upgrades to head on start
    try:
        async with AsyncTestClient(app=app) as client:
            headers = bearer(await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
            kept = expect(await client.get("/vms/1", headers=headers), 200)
            assert kept["name"] == "kept"
            body = {"name": "new", "cores": 1, "ram": 1, "disk": 1, "os": "Debian 12"}
            new = expect(await client.post("/vms", json=body, headers=headers), 201)
            response = await client.patch(
                f"/vms/{new['id']}", json={"cores": 2}, headers={**headers, "If-Match": old_tag}
            )
            assert_error(response, 412)
            expect(await client.delete(f"/vms/{new['id']}", headers=headers), 204)
            newer = expect(await client.post("/vms", json=body, headers=headers), 201)
            assert newer["id"] > new["id"]  # AUTOINCREMENT: a deleted id is never given again
    finally:
        await dispose_engines(app)
        await engine.dispose()


async def test_processes_migrating_one_fresh_sqlite_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Several workers started at once (``litestar run -W 2`` on a new database) each migrate at start.
    Alembic commits each revision on its own on SQLite, so two of them interleaved: one created a table
    or column the other had just created, and failed to start (seen in CI). Now one migrates at a time
    and the others find the schema at head. Three rounds of four at once: the race showed in most."""
    for round_ in range(3):
        database = tmp_path / f"fresh-{round_}.sqlite3"
        env = sqlite_server_env(database)
        upgrades = await asyncio.gather(
            *(run_cli(env, "database", "upgrade", "--no-prompt", close_stdin=True) for _ in range(4))
        )
        for upgrade in upgrades:
            assert upgrade.code == 0, upgrade.output[-2000:]
        with sqlite3.connect(database) as db:
            assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
