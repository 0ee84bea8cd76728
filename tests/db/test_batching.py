"""Group commit (app/db/batching.py): creations made at the same time share a transaction, and each request
still gets its own answer, its own change-log entry and its own event, only after the shared commit."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from litestar import Litestar

from tests.helpers import (
    VM_BODY,
    LiveServer,
    assert_vm,
    expect,
    receive_events,
    run_server,
    settings_of,
    sign_in_admin,
    ws_connect,
)

CONCURRENT = 30


async def all_created(http: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await http.get(
        "/changes", params={"action": "created", "entity": "vm", "limit": 1000}, headers=headers
    )
    entries: list[dict[str, Any]] = expect(response, 200)
    return entries


async def test_creations_at_once_share_commits_and_keep_their_own_request(app: Litestar) -> None:
    async with run_server(app) as server:
        http = server.http
        admin = await sign_in_admin(http)
        async with ws_connect(server, "/ws/vms", admin.token) as listener:
            await asyncio.sleep(0.2)  # subscribed before the writes
            responses = await asyncio.gather(
                *(
                    http.post(
                        "/vms",
                        json={**VM_BODY, "name": f"at-once-{index}"},
                        headers={**admin.headers, "X-Request-ID": f"create-{index}"},
                    )
                    for index in range(CONCURRENT)
                )
            )
            created = [assert_vm(expect(response, 201)) for response in responses]
            events = await receive_events(listener, CONCURRENT)
        by_id = {vm["id"]: (index, vm) for index, vm in enumerate(created)}
        assert len(by_id) == CONCURRENT  # each request got a VM of its own
        for response, vm in zip(responses, created, strict=True):
            assert response.headers["X-Request-ID"] == f"create-{vm['name'].removeprefix('at-once-')}"

        entries = await all_created(http, admin.headers)
        assert len(entries) == CONCURRENT
        for entry in entries:
            index, vm = by_id[entry["entity_id"]]
            assert entry["request_id"] == f"create-{index}"  # the request that asked, not the batch's first
            assert entry["actor_id"] == admin.id
            assert entry["source"] == "api"
            assert entry["after"] == vm
        seqs = [entry["seq"] for entry in entries]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == CONCURRENT
        assert [entry["entity_id"] for entry in entries] == sorted(by_id)  # ids in commit order
        # Entries of one transaction share its time: fewer times than entries means commits were shared.
        assert len({entry["at"] for entry in entries}) < CONCURRENT

        assert [event["event"] for event in events] == ["vm_created"] * CONCURRENT
        assert [event["seq"] for event in events] == seqs  # every event, once, in commit order
        assert [event["vm"] for event in events] == [by_id[entry["entity_id"]][1] for entry in entries]


# Which row of a table names the VM called ``name``: the VM's own row, or its change-log entry.
WHERE_NAMED = {
    "virtual_machine": "NEW.name = '{name}'",
    "change_log": 'NEW.after_json LIKE \'%"name":"{name}"%\'',
}


@asynccontextmanager
async def refusing_name(server: LiveServer, name: str, table: str = "virtual_machine") -> AsyncIterator[None]:
    """A database trigger that refuses to store the row of ``table`` for a VM called ``name``: a row the
    database itself refuses, whatever the reason (a constraint a migration added, say), which the API's
    validation cannot foresee."""
    settings = settings_of(server)
    named = WHERE_NAMED[table].format(name=name)
    if settings.is_sqlite:
        path = settings.sqlite_path
        with sqlite3.connect(path) as db:
            db.execute(
                f"CREATE TRIGGER refuse_name BEFORE INSERT ON {table} "
                f"WHEN {named} BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        try:
            yield
        finally:
            with sqlite3.connect(path) as db:
                db.execute("DROP TRIGGER IF EXISTS refuse_name")
        return
    connection = await asyncpg.connect(
        settings.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    )
    try:
        await connection.execute(
            "CREATE OR REPLACE FUNCTION vms_test_refuse_name() RETURNS trigger AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql"
        )
        await connection.execute(
            f"CREATE TRIGGER vms_test_refuse_name BEFORE INSERT ON {table} FOR EACH ROW "
            f"WHEN ({named}) EXECUTE FUNCTION vms_test_refuse_name()"
        )
        yield
    finally:
        await connection.execute(f"DROP TRIGGER IF EXISTS vms_test_refuse_name ON {table}")
        await connection.execute("DROP FUNCTION IF EXISTS vms_test_refuse_name()")
        await connection.close()


@pytest.mark.parametrize("table", ["virtual_machine", "change_log"])
async def test_a_row_the_database_refuses_fails_only_its_own_request(app: Litestar, table: str) -> None:
    """Whichever of a creation's rows the database refuses, its VM's or its change-log entry, the shared
    transaction is all or nothing: only that request fails, and the table and the log agree afterwards (a
    batch that committed part of its change log with its first entry left VMs with no entry)."""
    async with run_server(app) as server:
        http = server.http
        admin = await sign_in_admin(http)
        names = [f"fine-{index}" for index in range(CONCURRENT)]
        names.insert(CONCURRENT // 2, "refused")
        async with refusing_name(server, "refused", table):
            responses = await asyncio.gather(
                *(http.post("/vms", json={**VM_BODY, "name": name}, headers=admin.headers) for name in names)
            )
        for name, response in zip(names, responses, strict=True):
            if name == "refused":
                assert response.status_code >= 400, "the trigger did not refuse the row"
            else:
                assert expect(response, 201)["name"] == name  # its batch-mates were written all the same
        stored = expect(await http.get("/vms", params={"limit": 1000}, headers=admin.headers), 200)
        assert sorted(vm["name"] for vm in stored) == sorted(name for name in names if name != "refused")
        entries = await all_created(http, admin.headers)
        assert sorted(entry["after"]["name"] for entry in entries) == sorted(vm["name"] for vm in stored)


async def test_updates_at_once_each_get_their_own_answer(app: Litestar) -> None:
    """A batch of updates mixes VMs, repeats one, and holds updates that must fail on their own: a stale
    If-Match (412), a VM that does not exist (404), one that changes nothing (200, no new version)."""
    async with run_server(app) as server:
        http = server.http
        admin = await sign_in_admin(http)
        vms = [
            expect(
                await http.post("/vms", json={**VM_BODY, "name": f"vm-{index}"}, headers=admin.headers), 201
            )
            for index in range(4)
        ]
        first, second, third, fourth = (f"/vms/{vm['id']}" for vm in vms)
        stale = (await http.get(fourth, headers=admin.headers)).headers["ETag"]
        expect(await http.patch(fourth, json={"cores": 7}, headers=admin.headers), 200)
        requests = [
            (first, {"cores": 5}, {}),
            (first, {"cores": 6}, {}),  # the same VM again: applied after the one ahead of it
            (second, {"name": "renamed"}, {}),
            (third, {"name": vms[2]["name"]}, {}),  # changes nothing
            (fourth, {"cores": 9}, {"If-Match": stale}),  # stale: refused alone
            ("/vms/999999", {"cores": 2}, {}),  # no such VM
            (first, {"ram": 4096}, {}),
        ]
        responses = await asyncio.gather(
            *(
                http.patch(path, json=body, headers={**admin.headers, **extra})
                for path, body, extra in requests
            )
        )
        statuses = [response.status_code for response in responses]
        assert statuses == [200, 200, 200, 200, 412, 404, 200]
        final = expect(await http.get(first, headers=admin.headers), 200)
        assert (final["cores"], final["ram"]) == (6, 4096)
        assert (await http.get(first, headers=admin.headers)).headers["ETag"] == f'"{vms[0]["id"]}.4"'
        assert (await http.get(third, headers=admin.headers)).headers["ETag"] == f'"{vms[2]["id"]}.1"'
        assert expect(await http.get(fourth, headers=admin.headers), 200)["cores"] == 7
        query = {"action": "updated", "entity": "vm", "limit": 1000}
        entries = expect(await http.get("/changes", params=query, headers=admin.headers), 200)
        by_vm = [(entry["entity_id"], entry["before"]["cores"], entry["after"]["cores"]) for entry in entries]
        one, two, four = vms[0]["id"], vms[1]["id"], vms[3]["id"]
        # the fourth VM's own update first, then the batch in order: the first VM 2 -> 5 -> 6, then its RAM
        assert by_vm == [(four, 2, 7), (one, 2, 5), (one, 5, 6), (two, 2, 2), (one, 6, 6)]
