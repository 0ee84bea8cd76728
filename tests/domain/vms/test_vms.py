"""/vms: everybody signed in reads the inventory, administradores change it; ETags and list queries."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.testing import AsyncTestClient

from app import create_app
from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    VM_BODY,
    Account,
    LiveServer,
    array_parameter,
    assert_error,
    assert_utc,
    assert_vm,
    bearer,
    create_vm,
    expect,
    login,
    make_settings,
    run_server,
    sign_in_admin,
    total_count,
)


async def get_vm(client: Any, account: Account, vm_id: int) -> dict[str, Any]:
    return assert_vm(expect(await client.get(f"/vms/{vm_id}", headers=account.headers), 200))


# ---------------------------------------------------------------- reading


async def test_any_signed_in_user_reads_the_inventory(client: Any, admin: Account, cliente: Account) -> None:
    vm = await create_vm(client, admin)
    for account in (admin, cliente):
        response = await client.get("/vms", headers=account.headers)
        assert [assert_vm(item) for item in expect(response, 200)] == [vm]
        assert response.headers["X-Total-Count"] == "1"
        assert await get_vm(client, account, vm["id"]) == vm


async def test_reading_needs_a_token(client: Any, admin: Account) -> None:
    vm = await create_vm(client, admin)
    assert_error(await client.get("/vms"), 401)
    assert_error(await client.get("/vms/"), 401)
    assert_error(await client.get(f"/vms/{vm['id']}"), 401)
    assert_error(await client.get(f"/vms/{vm['id']}", headers={"Authorization": "Bearer nope"}), 401)


async def test_unknown_vm_is_404(client: Any, admin: Account, cliente: Account) -> None:
    for account in (admin, cliente):
        assert_error(await client.get("/vms/424242", headers=account.headers), 404)
    assert_error(await client.patch("/vms/424242", json={"name": "x"}, headers=admin.headers), 404)
    assert_error(await client.put("/vms/424242", json={"name": "x"}, headers=admin.headers), 404)
    assert_error(await client.delete("/vms/424242", headers=admin.headers), 404)


async def test_every_read_shows_the_last_committed_change(
    client: Any, admin: Account, cliente: Account
) -> None:
    """Reads are served from memory after the first (app/domain/vms/reads.py); no change may be missed."""
    vm = await create_vm(client, admin)
    path = f"/vms/{vm['id']}"
    first = await client.get(path, headers=cliente.headers)
    assert (await client.get(path, headers=cliente.headers)).headers["ETag"] == first.headers["ETag"]
    patched = expect(await client.patch(path, json={"cores": 16}, headers=admin.headers), 200)
    assert (await get_vm(client, cliente, vm["id"])) == patched
    put = await client.put(path, json={"status": "stopped"}, headers=admin.headers)
    read = await client.get(path, headers=cliente.headers)
    assert assert_vm(expect(read, 200)) == expect(put, 200)
    assert read.headers["ETag"] == put.headers["ETag"] != first.headers["ETag"]
    assert read.headers["content-type"].startswith("application/json")
    expect(await client.delete(path, headers=admin.headers), 204)
    assert_error(await client.get(path, headers=cliente.headers), 404)


async def test_reads_racing_writes_settle_on_the_last_write(live_server: LiveServer) -> None:
    """Reads and writes in flight together, over real sockets: the last write wins every later read."""
    http = live_server.http
    admin = bearer(await login(http, ADMIN_EMAIL, ADMIN_PASSWORD))
    vm = expect(await http.post("/vms", json=VM_BODY, headers=admin), 201)
    path = f"/vms/{vm['id']}"
    writing = True
    reads = 0

    async def write() -> str:
        nonlocal writing
        name = ""
        for round_number in range(40):
            name = f"round-{round_number}"
            expect(await http.patch(path, json={"name": name}, headers=admin), 200)
        writing = False
        return name

    async def read() -> None:
        nonlocal reads
        while writing:
            expect(await http.get(path, headers=admin), 200)
            reads += 1

    last, *_ = await asyncio.gather(write(), *(read() for _ in range(8)))
    assert reads > 40  # the reads really ran between the writes
    for _ in range(3):
        assert expect(await http.get(path, headers=admin), 200)["name"] == last


async def test_reads_with_the_memory_cache_off(tmp_path: Any, database_url: str) -> None:
    settings = make_settings(tmp_path, database=database_url, vm_cache_entries=0)
    async with AsyncTestClient(app=create_app(settings)) as client:
        token = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        admin = Account(id=0, email=ADMIN_EMAIL, password=ADMIN_PASSWORD, token=token)
        vm = await create_vm(client, admin)
        assert await get_vm(client, admin, vm["id"]) == vm
        path = f"/vms/{vm['id']}"
        patched = expect(await client.patch(path, json={"name": "b"}, headers=admin.headers), 200)
        assert await get_vm(client, admin, vm["id"]) == patched


# ---------------------------------------------------------------- writing


async def test_admin_creates_a_vm(client: Any, admin: Account) -> None:
    response = await client.post("/vms", json=VM_BODY, headers=admin.headers)
    vm = assert_vm(expect(response, 201))
    assert {key: vm[key] for key in VM_BODY} == VM_BODY
    assert (
        response.headers["ETag"]
        == (await client.get(f"/vms/{vm['id']}", headers=admin.headers)).headers["ETag"]
    )
    second = await create_vm(client, admin, name="web-02")
    assert second["id"] != vm["id"]


async def test_status_defaults_to_provisioning(client: Any, admin: Account) -> None:
    body = {key: value for key, value in VM_BODY.items() if key != "status"}
    assert (
        expect(await client.post("/vms", json=body, headers=admin.headers), 201)["status"] == "provisioning"
    )


async def test_cliente_and_anonymous_cannot_change_the_inventory(
    client: Any, admin: Account, cliente: Account
) -> None:
    vm = await create_vm(client, admin)
    for headers, status in ((cliente.headers, 403), ({}, 401)):
        assert_error(await client.post("/vms", json={**VM_BODY, "name": "rogue"}, headers=headers), status)
        assert_error(await client.post("/vms/", json={**VM_BODY, "name": "rogue"}, headers=headers), status)
        assert_error(await client.patch(f"/vms/{vm['id']}", json={"cores": 64}, headers=headers), status)
        assert_error(await client.put(f"/vms/{vm['id']}", json={"cores": 64}, headers=headers), status)
        assert_error(await client.delete(f"/vms/{vm['id']}", headers=headers), status)
    assert await total_count(client, "/vms", admin.headers) == 1
    assert await get_vm(client, admin, vm["id"]) == vm


async def test_patch_and_put_are_partial_updates(client: Any, admin: Account) -> None:
    vm = await create_vm(client, admin)
    await asyncio.sleep(0.01)
    patched = expect(
        await client.patch(f"/vms/{vm['id']}", json={"cores": 8, "status": "stopped"}, headers=admin.headers),
        200,
    )
    assert {**vm, "cores": 8, "status": "stopped", "updated_at": patched["updated_at"]} == patched
    assert patched["created_at"] == vm["created_at"]
    assert assert_utc(patched["updated_at"]) > assert_utc(vm["updated_at"])
    await asyncio.sleep(0.01)
    put = expect(
        await client.put(f"/vms/{vm['id']}", json={"name": "renamed", "ram": 4096}, headers=admin.headers),
        200,
    )
    assert (put["name"], put["ram"], put["cores"], put["status"], put["disk"], put["os"]) == (
        "renamed",
        4096,
        8,
        "stopped",
        vm["disk"],
        vm["os"],
    )
    assert assert_utc(put["updated_at"]) > assert_utc(patched["updated_at"])
    assert await get_vm(client, admin, vm["id"]) == put


async def test_every_field_can_be_changed(client: Any, admin: Account) -> None:
    vm = await create_vm(client, admin)
    changes = {
        "name": "db-01",
        "cores": 1024,
        "ram": 16_777_216,
        "disk": 1_048_576,
        "os": "FreeBSD 14",
        "status": "error",
    }
    updated = expect(await client.patch(f"/vms/{vm['id']}", json=changes, headers=admin.headers), 200)
    assert {key: updated[key] for key in changes} == changes


async def test_delete_vm(client: Any, admin: Account) -> None:
    vm = await create_vm(client, admin)
    keep = await create_vm(client, admin, name="keep-me")
    assert expect(await client.delete(f"/vms/{vm['id']}", headers=admin.headers), 204) is None
    assert_error(await client.get(f"/vms/{vm['id']}", headers=admin.headers), 404)
    assert_error(await client.delete(f"/vms/{vm['id']}", headers=admin.headers), 404)
    assert_error(await client.patch(f"/vms/{vm['id']}", json={"cores": 2}, headers=admin.headers), 404)
    assert [item["id"] for item in expect(await client.get("/vms", headers=admin.headers), 200)] == [
        keep["id"]
    ]


async def test_concurrent_updates_of_one_vm_lose_none(app: Any) -> None:
    """Updates of one VM in flight together, over real sockets: each is applied, or refused with 412 when
    another committed between its read and its write (PostgreSQL; SQLite runs them one at a time). Every
    accepted one is a version of its own and an entry of the change log; none is silently overwritten."""
    async with run_server(app) as server:
        client = server.http
        admin = await sign_in_admin(client)
        vm = await create_vm(client, admin)
        url = f"/vms/{vm['id']}"
        names = [f"racer-{index}" for index in range(16)]
        responses = await asyncio.gather(
            *(client.patch(url, json={"name": name}, headers=admin.headers) for name in names)
        )
        accepted = [expect(response, 200)["name"] for response in responses if response.status_code == 200]
        for response in responses:
            if response.status_code != 200:
                assert "changed concurrently" in assert_error(response, 412)["detail"]
        assert accepted
        etag = (await client.get(url, headers=admin.headers)).headers["ETag"]
        assert etag == f'"{vm["id"]}.{1 + len(accepted)}"'  # one version per accepted update, from 1
        updates = [
            entry
            for entry in expect(await client.get(f"{url}/changes", headers=admin.headers), 200)
            if entry["action"] == "updated"
        ]
        assert sorted(entry["after"]["name"] for entry in updates) == sorted(accepted)
        # Each entry's before is the one committed just ahead of it: a chain, no update lost in between.
        chain = [vm["name"], *(entry["after"]["name"] for entry in updates)]
        assert [entry["before"]["name"] for entry in updates] == chain[:-1]
        assert (await get_vm(client, admin, vm["id"]))["name"] == chain[-1]


# ---------------------------------------------------------------- ETag / If-Match


async def test_etag_and_if_match(client: Any, admin: Account) -> None:
    vm = await create_vm(client, admin)
    url = f"/vms/{vm['id']}"
    etag = (await client.get(url, headers=admin.headers)).headers["ETag"]
    assert etag.startswith(('"', 'W/"')), etag
    assert etag.endswith('"'), etag

    response = await client.patch(
        url, json={"name": "web-renamed"}, headers={**admin.headers, "If-Match": etag}
    )
    assert expect(response, 200)["name"] == "web-renamed"
    new_etag = response.headers["ETag"]
    assert new_etag != etag
    assert (await client.get(url, headers=admin.headers)).headers["ETag"] == new_etag
    before = await get_vm(client, admin, vm["id"])

    for method in ("patch", "put"):
        stale = await getattr(client, method)(
            url, json={"name": "lost-update"}, headers={**admin.headers, "If-Match": etag}
        )
        assert_error(stale, 412)
    assert_error(
        await client.patch(url, json={"cores": 3}, headers={**admin.headers, "If-Match": '"garbage"'}), 412
    )
    assert await get_vm(client, admin, vm["id"]) == before
    assert (await client.get(url, headers=admin.headers)).headers["ETag"] == new_etag

    # no If-Match: last write wins, and the ETag moves again
    response = await client.put(url, json={"status": "paused"}, headers=admin.headers)
    assert expect(response, 200)["status"] == "paused"
    assert response.headers["ETag"] not in {etag, new_etag}


async def test_etags_differ_between_vms(client: Any, admin: Account) -> None:
    first, second = await create_vm(client, admin), await create_vm(client, admin, name="web-02")
    tags = [
        (await client.get(f"/vms/{vm['id']}", headers=admin.headers)).headers["ETag"]
        for vm in (first, second)
    ]
    assert tags[0] != tags[1]
    # the first VM's ETag does not unlock the second
    response = await client.patch(
        f"/vms/{second['id']}", json={"cores": 9}, headers={**admin.headers, "If-Match": tags[0]}
    )
    assert_error(response, 412)
    assert (await get_vm(client, admin, second["id"]))["cores"] == second["cores"]


# ---------------------------------------------------------------- listing


async def seed(client: Any, admin: Account) -> list[dict[str, Any]]:
    specs = [
        {"name": "web-01", "cores": 4, "os": "Debian 12", "status": "running"},
        {"name": "Web-02", "cores": 2, "os": "Ubuntu 24.04", "status": "stopped"},
        {"name": "db-01", "cores": 16, "os": "Debian 12", "status": "running"},
        {"name": "cache-WEB", "cores": 8, "os": "Alpine 3.20", "status": "paused"},
        {"name": "batch", "cores": 1, "os": "Debian 12", "status": "stopped"},
    ]
    return [await create_vm(client, admin, **spec) for spec in specs]


async def listing(client: Any, account: Account, **params: Any) -> tuple[list[str], int]:
    response = await client.get("/vms", headers=account.headers, params=params)
    items = expect(response, 200)
    return [assert_vm(item)["name"] for item in items], int(response.headers["X-Total-Count"])


async def test_list_filters(client: Any, admin: Account, cliente: Account) -> None:
    await seed(client, admin)
    assert await listing(client, cliente, status="running") == (["web-01", "db-01"], 2)
    assert await listing(client, cliente, status="error") == ([], 0)
    assert await listing(client, cliente, os="Debian 12") == (["web-01", "db-01", "batch"], 3)
    assert await listing(client, cliente, os="debian") == ([], 0)  # exact match
    assert await listing(client, cliente, q="web") == (["web-01", "Web-02", "cache-WEB"], 3)
    assert await listing(client, cliente, q="WEB-0") == (["web-01", "Web-02"], 2)
    assert await listing(client, cliente, q="nothing-like-it") == ([], 0)
    assert await listing(client, cliente, q="web", status="stopped") == (["Web-02"], 1)
    assert await listing(client, cliente, os="Debian 12", status="stopped") == (["batch"], 1)


async def test_a_repeated_filter_means_any_of_its_values(
    client: Any, admin: Account, cliente: Account
) -> None:
    await seed(client, admin)
    running_or_paused = (["web-01", "db-01", "cache-WEB"], 3)
    assert await listing(client, cliente, status=["running", "paused"]) == running_or_paused
    assert await listing(client, cliente, status=["paused", "running", "paused"]) == running_or_paused
    assert await listing(client, cliente, os=["Alpine 3.20", "Ubuntu 24.04"]) == (["Web-02", "cache-WEB"], 2)
    assert await listing(client, cliente, os=["Alpine 3.20", "nothing"]) == (["cache-WEB"], 1)
    # OR within one filter, AND between filters
    both = {"status": ["stopped", "paused"], "os": ["Debian 12", "Alpine 3.20"]}
    assert await listing(client, cliente, **both) == (["cache-WEB", "batch"], 2)
    assert await listing(client, cliente, status=["stopped", "paused"], q="web") == (
        ["Web-02", "cache-WEB"],
        2,
    )
    # X-Total-Count counts every match, not the page
    page = {"status": ["running", "paused"], "sort": "name", "limit": 1, "offset": 1}
    assert await listing(client, cliente, **page) == (["db-01"], 3)


async def test_repeated_filters_are_bounded_and_each_value_validated(client: Any, cliente: Account) -> None:
    for params in (
        {"status": ["running", "nonsense"]},
        {"status": ["running"] * 6},
        {"os": ["Debian 12", ""]},
        {"os": ["Debian 12", "x" * 101]},
        {"os": [f"os-{n}" for n in range(21)]},
    ):
        response = await client.get("/vms", headers=cliente.headers, params=params)
        assert_error(response, 400)
    assert expect(await client.get("/vms", headers=cliente.headers, params={"os": ["a"] * 20}), 200) == []


async def test_repeated_filters_are_arrays_in_the_schema(client: Any) -> None:
    schema = (await client.get("/docs/openapi.json")).json()  # not expect(): it names password fields
    status, status_items = array_parameter(schema, "/vms", "status")
    assert status["maxItems"] == 5
    assert set(status_items["enum"]) == {"provisioning", "running", "stopped", "paused", "error"}
    os, os_items = array_parameter(schema, "/vms", "os")
    assert os["maxItems"] == 20
    assert (os_items["minLength"], os_items["maxLength"]) == (1, 100)


async def test_list_items_are_the_single_reads_whatever_the_text(client: Any, admin: Account) -> None:
    """On SQLite the page is built as JSON by the database (app/domain/vms/services.py): same output."""
    names = ['quote " back\\slash', "tab\there", "café ☕ 𝄞", "<b>&amp;</b>", "it's", " spaced "]
    created = [await create_vm(client, admin, name=name, os=name) for name in names]
    items = expect(await client.get("/vms", headers=admin.headers), 200)
    assert items == created
    assert [vm["name"] for vm in items] == names
    for item in items:
        assert await get_vm(client, admin, item["id"]) == item
    newest_first = expect(
        await client.get("/vms", headers=admin.headers, params={"sort": "created_at", "order": "desc"}), 200
    )
    assert newest_first == created[::-1]


async def test_list_pages_and_sorts(client: Any, admin: Account, cliente: Account) -> None:
    vms = await seed(client, admin)
    names = [vm["name"] for vm in vms]
    assert await listing(client, cliente) == (names, 5)
    assert await listing(client, cliente, limit=2) == (names[:2], 5)
    assert await listing(client, cliente, limit=2, offset=2) == (names[2:4], 5)
    assert await listing(client, cliente, limit=2, offset=4) == (names[4:], 5)
    assert await listing(client, cliente, offset=99) == ([], 5)
    assert await listing(client, cliente, limit=1000) == (names, 5)

    by_cores = [vm["name"] for vm in sorted(vms, key=lambda vm: vm["cores"])]
    assert await listing(client, cliente, sort="cores") == (by_cores, 5)
    assert await listing(client, cliente, sort="cores", order="desc") == (by_cores[::-1], 5)
    assert await listing(client, cliente, sort="id", order="desc") == (names[::-1], 5)
    assert await listing(client, cliente, sort="cores", order="desc", limit=2, offset=1) == (
        by_cores[::-1][1:3],
        5,
    )
    assert await listing(client, cliente, sort="status", status="running", order="desc") == (
        ["db-01", "web-01"],
        2,
    )
    # equal sort keys keep a stable order (by id), so pages never overlap
    pages = [(await listing(client, cliente, sort="os", limit=1, offset=i))[0] for i in range(5)]
    assert sorted(name for page in pages for name in page) == sorted(names)


async def test_collection_paths_answer_with_and_without_trailing_slash(
    client: Any, admin: Account, cliente: Account
) -> None:
    await create_vm(client, admin)
    for path in ("/vms", "/users"):
        plain = await client.get(path, headers=admin.headers, follow_redirects=False)
        slash = await client.get(path + "/", headers=admin.headers, follow_redirects=False)
        assert plain.status_code == slash.status_code == 200, (plain.text, slash.text)
        assert expect(slash, 200) == expect(plain, 200)
        assert slash.headers["X-Total-Count"] == plain.headers["X-Total-Count"]
        assert "location" not in slash.headers
        assert_error(await client.get(path + "/", follow_redirects=False), 401)
    assert_error(await client.get("/users/", headers=cliente.headers, follow_redirects=False), 403)

    created = await client.post(
        "/vms/", json={**VM_BODY, "name": "slashed"}, headers=admin.headers, follow_redirects=False
    )
    assert expect(created, 201)["name"] == "slashed"
    signup = {"name": "Slash", "email": "slash@example.com", "password": "slash-password"}
    assert expect(await client.post("/users/", json=signup, follow_redirects=False), 201)["rol"] == "cliente"


# ---------------------------------------------------------------- conditional requests (RFC 9110)


async def test_an_etag_never_names_another_vm(client: Any, admin: Account) -> None:
    """Failed before on SQLite: a new VM took a deleted one's id and version 1, so its old ETag matched."""
    first = await create_vm(client, admin, name="doomed")
    old_tag = (await client.get(f"/vms/{first['id']}", headers=admin.headers)).headers["ETag"]
    expect(await client.delete(f"/vms/{first['id']}", headers=admin.headers), 204)
    second = await create_vm(client, admin, name="newcomer")
    assert second["id"] != first["id"]
    response = await client.patch(
        f"/vms/{second['id']}", json={"cores": 9}, headers={**admin.headers, "If-Match": old_tag}
    )
    assert_error(response, 412)


async def test_if_match_on_delete(client: Any, admin: Account) -> None:
    """Failed before: DELETE ignored If-Match."""
    vm = await create_vm(client, admin)
    url = f"/vms/{vm['id']}"
    etag = (await client.get(url, headers=admin.headers)).headers["ETag"]
    assert_error(await client.delete(url, headers={**admin.headers, "If-Match": '"0.0"'}), 412)
    assert_error(await client.delete(url, headers={**admin.headers, "If-Match": f"W/{etag}"}), 412)
    expect(await client.get(url, headers=admin.headers), 200)  # still there
    expect(await client.delete(url, headers={**admin.headers, "If-Match": f'"0.0", {etag}'}), 204)
    expect(await client.get(url, headers=admin.headers), 404)
    other = await create_vm(client, admin)
    expect(await client.delete(f"/vms/{other['id']}", headers={**admin.headers, "If-Match": "*"}), 204)
    assert_error(await client.delete(f"/vms/{other['id']}", headers={**admin.headers, "If-Match": "*"}), 404)


async def test_weak_tags_never_match_if_match(client: Any, admin: Account) -> None:
    """Failed before: the W/ prefix was stripped, so a weak tag unlocked a write (RFC 9110: strong match)."""
    vm = await create_vm(client, admin)
    url = f"/vms/{vm['id']}"
    etag = (await client.get(url, headers=admin.headers)).headers["ETag"]
    assert not etag.startswith("W/")
    response = await client.patch(url, json={"cores": 3}, headers={**admin.headers, "If-Match": f"W/{etag}"})
    assert_error(response, 412)
    response = await client.put(url, json={"cores": 3}, headers={**admin.headers, "If-Match": "*"})
    assert expect(response, 200)["cores"] == 3


async def test_if_none_match_answers_304(client: Any, admin: Account, cliente: Account) -> None:
    """Failed before: If-None-Match was ignored and the full body sent again."""
    vm = await create_vm(client, admin)
    url = f"/vms/{vm['id']}"
    etag = (await client.get(url, headers=cliente.headers)).headers["ETag"]
    for tag in (etag, f"W/{etag}", f'"0.0", {etag}', "*"):
        response = await client.get(url, headers={**cliente.headers, "If-None-Match": tag})
        assert response.status_code == 304, (tag, response.status_code, response.text)
        assert response.headers["ETag"] == etag
        assert response.content == b""
    response = await client.get(url, headers={**cliente.headers, "If-None-Match": '"0.0"'})
    assert expect(response, 200)["id"] == vm["id"]
    await client.patch(url, json={"cores": 5}, headers=admin.headers)
    response = await client.get(url, headers={**cliente.headers, "If-None-Match": etag})
    assert expect(response, 200)["cores"] == 5
    assert response.headers["ETag"] != etag


async def test_a_single_valued_filter_given_twice_is_refused(client: Any, admin: Account) -> None:
    for query in ("q=a&q=b", "sort=name&sort=id", "limit=5&limit=6"):
        body = assert_error(await client.get(f"/vms?{query}", headers=admin.headers), 400)
        assert "only once" in body["detail"], body
    assert (await client.get("/vms?status=running&status=paused", headers=admin.headers)).status_code == 200
