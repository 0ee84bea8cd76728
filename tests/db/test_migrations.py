"""Migrations bring an existing database to the current schema without losing or confusing anything."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
from advanced_alchemy.alembic.commands import AlembicCommands
from litestar.testing import AsyncTestClient

from app import create_app
from app.db.engine import create_alchemy_config, create_engine
from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    assert_error,
    bearer,
    dispose_engines,
    expect,
    login,
    make_settings,
)

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
