"""Reading the change log: ``GET /changes``, ``GET /vms/{id}/changes``, ``X-Change-Seq`` and retention."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app import create_app
from tests.helpers import (
    VM_BODY,
    Account,
    assert_error,
    create_vm,
    dispose_engines,
    expect,
    last_seq,
    log_head,
    make_settings,
    read_log,
    sign_in_admin,
)


async def openapi(client: Any) -> dict[str, Any]:
    response = await client.get("/docs/openapi.json")  # names password fields: not expect()
    assert response.status_code == 200, response.text
    schema: dict[str, Any] = response.json()
    return schema


def parameters_of(schema: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    return {parameter["name"]: parameter for parameter in schema["paths"][path]["get"]["parameters"]}


async def some_history(client: Any, admin: Account, cliente: Account) -> list[dict[str, Any]]:
    """A few changes of each kind, by two actors; the whole log, oldest first."""
    first = await create_vm(client, admin, name="first")
    second = await create_vm(client, admin, name="second")
    expect(await client.patch(f"/vms/{first['id']}", json={"cores": 4}, headers=admin.headers), 200)
    expect(await client.patch(f"/users/{cliente.id}", json={"name": "Me"}, headers=cliente.headers), 200)
    expect(await client.delete(f"/vms/{second['id']}", headers=admin.headers), 204)
    expect(await client.put(f"/vms/{first['id']}", json={"status": "paused"}, headers=admin.headers), 200)
    entries, total = await read_log(client, admin, limit=1000)
    assert total == len(entries) == 8  # the start-up administrador, the cliente, and the six above
    return entries


# ---------------------------------------------------------------- GET /changes


async def test_the_change_log_is_for_administradores(client: Any, admin: Account, cliente: Account) -> None:
    vm = await create_vm(client, admin)
    for path in ("/changes", "/changes/", f"/vms/{vm['id']}/changes", f"/vms/{vm['id']}/changes/"):
        assert_error(await client.get(path, headers=cliente.headers), 403)
        assert_error(await client.get(path), 401)
        assert_error(await client.get(path, headers={"Authorization": "Bearer nope"}), 401)
        expect(await client.get(path, headers=admin.headers), 200)


async def test_filters_pages_and_order(client: Any, admin: Account, cliente: Account) -> None:
    log = await some_history(client, admin, cliente)
    seqs = [entry["seq"] for entry in log]
    assert seqs == sorted(set(seqs)), seqs
    vm_id = log[2]["entity_id"]
    assert log[2]["entity"] == "vm"

    def matching(**wanted: Any) -> list[dict[str, Any]]:
        return [entry for entry in log if all(entry[key] == value for key, value in wanted.items())]

    cases: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
        ({"entity": "vm"}, matching(entity="vm")),
        ({"entity": "user"}, matching(entity="user")),
        ({"entity": "vm", "entity_id": vm_id}, matching(entity="vm", entity_id=vm_id)),
        ({"entity_id": vm_id}, matching(entity_id=vm_id)),
        ({"action": "created"}, matching(action="created")),
        ({"action": "updated"}, matching(action="updated")),
        ({"action": "deleted"}, matching(action="deleted")),
        ({"actor_id": admin.id}, matching(actor_id=admin.id)),
        ({"actor_id": cliente.id}, matching(actor_id=cliente.id)),
        (
            {"entity": "vm", "action": "updated", "actor_id": admin.id},
            matching(entity="vm", action="updated"),
        ),
        ({"since": 0}, log),
        ({"since": seqs[2]}, log[3:]),
        ({"since": seqs[-1]}, []),
        ({"since": seqs[1], "entity": "vm"}, [entry for entry in log[2:] if entry["entity"] == "vm"]),
    ]
    for params, expected in cases:
        assert expected or params.get("since") == seqs[-1], params  # each case selects something
        for path in ("/changes", "/changes/"):
            assert await read_log(client, admin, path, **params) == (expected, len(expected)), params
            descending = await read_log(client, admin, path, **params, order="desc")
            assert descending == (expected[::-1], len(expected)), params
    assert len(matching(actor_id=cliente.id)) == 1
    assert matching(action="deleted")[0]["after"] is None

    # Pages: X-Total-Count counts every match, whatever the page.
    assert await read_log(client, admin, limit=2, offset=1) == (log[1:3], len(log))
    assert await read_log(client, admin, limit=3, offset=1, order="desc") == (log[::-1][1:4], len(log))
    assert await read_log(client, admin, limit=1, offset=len(log)) == ([], len(log))
    assert await read_log(client, admin, order="asc") == (log, len(log))
    assert await read_log(client, admin, limit=1000) == (log, len(log))
    assert await read_log(client, admin, entity="vm", limit=1, offset=1) == (
        matching(entity="vm")[1:2],
        len(matching(entity="vm")),
    )


@pytest.mark.parametrize(
    "query",
    [
        "entity=foo",
        "entity=vms",
        "entity_id=0",
        "entity_id=abc",
        "action=bogus",
        "action=create",
        "actor_id=0",
        "actor_id=abc",
        "since=-1",
        "since=abc",
        f"since={2**63}",
        "limit=0",
        "limit=1001",
        "limit=abc",
        "offset=-1",
        "order=sideways",
    ],
)
async def test_bad_query_values_are_400(client: Any, admin: Account, query: str) -> None:
    assert_error(await client.get(f"/changes?{query}", headers=admin.headers), 400)


async def test_the_route_and_its_entries_are_documented(client: Any) -> None:
    schema = await openapi(client)
    operation = schema["paths"]["/changes"]["get"]
    parameters = parameters_of(schema, "/changes")
    assert set(parameters) == {
        "entity",
        "entity_id",
        "action",
        "actor_id",
        "since",
        "limit",
        "offset",
        "order",
    }
    assert all(parameter["in"] == "query" for parameter in parameters.values())
    assert set(parameters["entity"]["schema"]["enum"]) - {None} == {"vm", "user"}
    assert set(parameters["action"]["schema"]["enum"]) - {None} == {"created", "updated", "deleted"}
    assert parameters["order"]["schema"]["enum"] == ["asc", "desc"]
    assert parameters["limit"]["schema"]["maximum"] == 1000
    assert parameters["limit"]["schema"]["default"] == 100
    assert {"200", "400", "401", "403"} <= set(operation["responses"])
    ok = operation["responses"]["200"]
    assert "X-Total-Count" in ok["headers"]
    assert ok["content"]["application/json"]["schema"]["items"] == {"$ref": "#/components/schemas/ChangeRead"}

    change = schema["components"]["schemas"]["ChangeRead"]
    assert set(change["required"]) == set(change["properties"]) == {
        "seq", "at", "entity", "entity_id", "action", "actor_id", "source", "request_id", "before", "after",
    }  # fmt: skip
    assert set(change["properties"]["source"]["enum"]) == {"api", "cli", "startup"}
    for name in ("seq", "actor_id", "before", "after"):
        assert change["properties"][name].get("examples"), name
    assert (
        change["properties"]["before"]["examples"][0]["status"]
        != change["properties"]["after"]["examples"][0]["status"]
    )

    history = schema["paths"]["/vms/{vm_id}/changes"]["get"]
    assert set(parameters_of(schema, "/vms/{vm_id}/changes")) == {"vm_id", "limit", "offset", "order"}
    assert {"200", "400", "401", "403", "404"} <= set(history["responses"])
    assert "X-Total-Count" in history["responses"]["200"]["headers"]


async def test_since_is_documented_with_its_lower_bound(client: Any, admin: Account) -> None:
    """``since=-1`` is refused, so the schema must say ``minimum: 0`` (as it says for ``offset``); a
    schema-driven client (Schemathesis) otherwise sends negative values the schema allows and gets 400."""
    assert_error(await client.get("/changes?since=-1", headers=admin.headers), 400)
    expect(await client.get("/changes?since=0", headers=admin.headers), 200)
    since = parameters_of(await openapi(client), "/changes")["since"]["schema"]
    assert since.get("minimum") == 0, since


# ---------------------------------------------------------------- GET /vms/{id}/changes


async def test_a_vms_history_outlives_it(client: Any, admin: Account, cliente: Account) -> None:
    # The administrador's own id names no VM yet: user entries are not VM history.
    assert_error(await client.get(f"/vms/{admin.id}/changes", headers=admin.headers), 404)
    vm = await create_vm(client, admin)
    other = await create_vm(client, admin, name="other")
    path = f"/vms/{vm['id']}"
    expect(await client.put(path, json={"status": "stopped"}, headers=admin.headers), 200)
    expect(await client.patch(f"/vms/{other['id']}", json={"cores": 9}, headers=admin.headers), 200)
    expect(await client.patch(f"/users/{cliente.id}", json={"name": "Noise"}, headers=admin.headers), 200)
    expect(await client.patch(path, json={"cores": 6}, headers=admin.headers), 200)
    alive, _ = await read_log(client, admin, f"{path}/changes")
    expect(await client.delete(path, headers=admin.headers), 204)
    assert_error(await client.get(path, headers=admin.headers), 404)

    history, total = await read_log(client, admin, f"{path}/changes")
    assert [entry["action"] for entry in history] == ["created", "updated", "updated", "deleted"]
    assert total == 4
    assert history[:3] == alive
    assert all(entry["entity"] == "vm" and entry["entity_id"] == vm["id"] for entry in history)
    assert history[0]["after"] == vm
    assert history[-1]["before"] == history[-2]["after"]
    for earlier, later in itertools.pairwise(history):
        assert earlier["seq"] < later["seq"]
        if later["before"] is not None:
            assert later["before"] == earlier["after"]
    assert await read_log(client, admin, "/changes", entity="vm", entity_id=vm["id"]) == (history, 4)
    assert await read_log(client, admin, f"{path}/changes/") == (history, 4)
    assert await read_log(client, admin, f"{path}/changes", order="desc") == (history[::-1], 4)
    assert await read_log(client, admin, f"{path}/changes", limit=2, offset=1) == (history[1:3], 4)

    assert_error(await client.get("/vms/987654/changes", headers=admin.headers), 404)
    assert_error(await client.get(f"{path}/changes", headers=cliente.headers), 403)
    for query in ("order=sideways", "limit=0", "limit=1001", "offset=-1"):
        assert_error(await client.get(f"{path}/changes?{query}", headers=admin.headers), 400)
    assert_error(await client.get("/vms/0/changes", headers=admin.headers), 400)


# ---------------------------------------------------------------- X-Change-Seq


async def change_seqs(client: Any, account: Account, *, users: bool = True, **params: Any) -> dict[str, int]:
    """``X-Change-Seq`` of every list that carries it (``/users`` only for an administrador), with and
    without the trailing slash."""
    paths = ["/vms", "/vms/"] + (["/users", "/users/"] if users else [])
    found = {}
    for path in paths:
        response = await client.get(path, headers=account.headers, params=params)
        expect(response, 200)
        found[path] = int(response.headers["X-Change-Seq"])
    return found


async def test_lists_say_which_change_they_reflect(client: Any, admin: Account, cliente: Account) -> None:
    seq = await last_seq(client, admin)
    assert seq >= 2  # the start-up administrador and the cliente
    assert set((await change_seqs(client, admin)).values()) == {seq}
    empty = await client.get("/vms", headers=admin.headers)
    assert expect(empty, 200) == []
    assert empty.headers["X-Change-Seq"] == str(seq)

    response = await client.post("/vms", json=VM_BODY, headers=admin.headers)
    expect(response, 201)
    (entry,) = (await read_log(client, admin, since=seq))[0]
    for account, users in ((admin, True), (cliente, False)):
        assert set((await change_seqs(client, account, users=users)).values()) == {entry["seq"]}
        # An empty page reflects the same change: by an offset past the end, or a filter matching none.
        empty_pages = await change_seqs(client, account, users=users, offset=100)
        assert set(empty_pages.values()) == {entry["seq"]}
    for params in ({"status": "error"}, {"q": "no-such-vm"}):
        response = await client.get("/vms", headers=cliente.headers, params=params)
        assert (expect(response, 200), response.headers["X-Change-Seq"]) == ([], str(entry["seq"]))
    response = await client.get("/users", headers=admin.headers, params={"q": "nobody-here"})
    assert (expect(response, 200), response.headers["X-Change-Seq"]) == ([], str(entry["seq"]))

    expect(await client.patch(f"/users/{cliente.id}", json={"name": "New"}, headers=admin.headers), 200)
    (entry,) = (await read_log(client, admin, since=entry["seq"]))[0]
    assert set((await change_seqs(client, admin)).values()) == {entry["seq"]}

    # A refused write moves nothing.
    assert_error(await client.patch("/vms/424242", json={"cores": 2}, headers=admin.headers), 404)
    assert set((await change_seqs(client, admin)).values()) == {entry["seq"]}


async def test_x_change_seq_is_documented_on_both_lists(client: Any) -> None:
    schema = await openapi(client)
    for path in ("/vms", "/users"):
        headers = schema["paths"][path]["get"]["responses"]["200"]["headers"]
        assert {"X-Change-Seq", "X-Total-Count"} <= set(headers), (path, headers)
        assert headers["X-Change-Seq"]["description"], headers
    assert "X-Change-Seq" not in schema["paths"]["/changes"]["get"]["responses"]["200"]["headers"]


# ---------------------------------------------------------------- retention


async def wait_for_total(
    client: Any, admin: Account, total: int, *, seconds: float = 10
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while True:
        entries, found = await read_log(client, admin)
        if found == total or time.monotonic() > deadline:
            assert found == total, f"{found} entries after {seconds} s: {entries}"
            return entries
        await asyncio.sleep(0.2)


async def test_retention_keeps_the_newest_entries(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(
        tmp_path, database=database_url, change_log_max_entries=3, change_log_prune_seconds=1
    )
    app = create_app(settings)
    try:
        async with AsyncTestClient(app=app) as client:
            admin = await sign_in_admin(client)
            for index in range(5):
                await create_vm(client, admin, name=f"vm-{index}")
            last = await last_seq(client, admin)
            assert last == 6  # the start-up administrador and five VMs

            entries = await wait_for_total(client, admin, 3)
            assert [entry["seq"] for entry in entries] == [last - 2, last - 1, last]
            assert await log_head(settings.database_url) == (last, last - 3)
            # Lists still say the last change, which is still in the log.
            assert set((await change_seqs(client, admin)).values()) == {last}

            # It goes on: the cap holds as writes come.
            vm = await create_vm(client, admin, name="later")
            expect(await client.delete(f"/vms/{vm['id']}", headers=admin.headers), 204)
            entries = await wait_for_total(client, admin, 3)
            assert [entry["seq"] for entry in entries] == [last, last + 1, last + 2]
            assert await log_head(settings.database_url) == (last + 2, last - 1)
            history, total = await read_log(client, admin, f"/vms/{vm['id']}/changes")
            assert ([entry["action"] for entry in history], total) == (["created", "deleted"], 2)
    finally:
        await dispose_engines(app)
