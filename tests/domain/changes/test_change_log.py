"""The change log records every committed write, once, with what the API said, and nothing else.

Each write is followed by a read of ``GET /changes?since=<the seq before it>``: exactly one entry, made by
that request (its ``X-Request-ID``), whose ``before``/``after`` are the REST representations on either side.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from litestar.testing import AsyncTestClient, TestClient

from app import create_app
from app.cli import users_group
from app.config import Settings, get_settings, load_settings
from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    GENERATED_REQUEST_ID,
    USER_FIELDS,
    VM_BODY,
    VM_FIELDS,
    Account,
    assert_entry,
    assert_error,
    assert_no_secrets_in_log,
    bearer,
    create_account,
    create_vm,
    dispose_engines,
    entries_since,
    expect,
    last_seq,
    login,
    read_log,
    sign_in_admin,
    the_entry_of,
)


async def vm_representation(client: Any, admin: Account, vm_id: int) -> dict[str, Any]:
    body: dict[str, Any] = expect(await client.get(f"/vms/{vm_id}", headers=admin.headers), 200)
    return body


async def user_representation(client: Any, admin: Account, user_id: int) -> dict[str, Any]:
    body: dict[str, Any] = expect(await client.get(f"/users/{user_id}", headers=admin.headers), 200)
    return body


# ---------------------------------------------------------------- every write leaves one entry


async def test_each_vm_write_leaves_one_entry(client: Any, admin: Account) -> None:
    seqs = [await last_seq(client, admin)]

    since = seqs[-1]
    response = await client.post(
        "/vms", json=VM_BODY, headers={**admin.headers, "X-Request-ID": "ops-create.1:a"}
    )
    vm = expect(response, 201)
    assert response.headers["X-Request-ID"] == "ops-create.1:a"
    entry = assert_entry(
        await the_entry_of(client, admin, since, response),
        entity="vm",
        entity_id=vm["id"],
        action="created",
        actor_id=admin.id,
        before=None,
        after=vm,
    )
    assert entry["request_id"] == "ops-create.1:a"
    seqs.append(entry["seq"])

    path = f"/vms/{vm['id']}"
    for method, body in (("PUT", {"status": "stopped"}), ("PATCH", {"cores": 8, "name": "web-02"})):
        before = await vm_representation(client, admin, vm["id"])
        since = seqs[-1]
        response = await client.request(method, path, json=body, headers=admin.headers)
        after = expect(response, 200)
        assert after == {**before, **body, "updated_at": after["updated_at"]}
        entry = assert_entry(
            await the_entry_of(client, admin, since, response),
            entity="vm",
            entity_id=vm["id"],
            action="updated",
            actor_id=admin.id,
            before=before,
            after=after,
        )
        assert GENERATED_REQUEST_ID.match(entry["request_id"]), entry
        seqs.append(entry["seq"])

    before = await vm_representation(client, admin, vm["id"])
    since = seqs[-1]
    response = await client.delete(path, headers=admin.headers)
    expect(response, 204)
    entry = assert_entry(
        await the_entry_of(client, admin, since, response),
        entity="vm",
        entity_id=vm["id"],
        action="deleted",
        actor_id=admin.id,
        before=before,
        after=None,
    )
    seqs.append(entry["seq"])

    assert seqs == sorted(set(seqs)), seqs  # strictly increasing
    for entry in await entries_since(client, admin, seqs[0]):
        for representation in (entry["before"], entry["after"]):
            assert representation is None or set(representation) == VM_FIELDS, entry


async def test_each_user_write_leaves_one_entry_without_secrets(client: Any, admin: Account) -> None:
    start = since = await last_seq(client, admin)
    passwords = [ADMIN_PASSWORD]

    # An administrador creates an account: its actor is the administrador.
    body = {"name": "Ann", "email": "ann@example.com", "password": "ann-password-1", "rol": "cliente"}
    passwords.append(body["password"])
    response = await client.post("/users", json=body, headers=admin.headers)
    ann = expect(response, 201)
    entry = assert_entry(
        await the_entry_of(client, admin, since, response),
        entity="user",
        entity_id=ann["id"],
        action="created",
        actor_id=admin.id,
        before=None,
        after=ann,
    )
    since = entry["seq"]

    # Self sign-up: nobody signed in made it, so there is no actor.
    body = {"name": "Bob", "email": "bob@example.com", "password": "bob-password-1"}
    passwords.append(body["password"])
    response = await client.post("/users", json=body)
    bob = expect(response, 201)
    entry = assert_entry(
        await the_entry_of(client, admin, since, response),
        entity="user",
        entity_id=bob["id"],
        action="created",
        actor_id=None,
        before=None,
        after=bob,
    )
    since = entry["seq"]

    # The user itself changes its name and its password: it is the actor.
    bob_token = await login(client, "bob@example.com", "bob-password-1")
    changes = {"name": "Robert", "password": "bob-password-2", "current_password": "bob-password-1"}
    passwords.append(changes["password"])
    before = await user_representation(client, admin, bob["id"])
    response = await client.patch(f"/users/{bob['id']}", json=changes, headers=bearer(bob_token))
    after = expect(response, 200)
    assert after["name"] == "Robert"
    entry = assert_entry(
        await the_entry_of(client, admin, since, response),
        entity="user",
        entity_id=bob["id"],
        action="updated",
        actor_id=bob["id"],
        before=before,
        after=after,
    )
    since = entry["seq"]

    # The administrador: a name (PATCH), a role (PUT), a password (PATCH).
    for method, changes in (
        ("PATCH", {"name": "Ann B."}),
        ("PUT", {"rol": "administrador"}),
        ("PATCH", {"password": "ann-password-2"}),
    ):
        passwords.extend(value for key, value in changes.items() if key == "password")
        before = await user_representation(client, admin, ann["id"])
        response = await client.request(method, f"/users/{ann['id']}", json=changes, headers=admin.headers)
        after = expect(response, 200)
        assert {key: after[key] for key in changes if key != "password"} == {
            key: value for key, value in changes.items() if key != "password"
        }
        entry = assert_entry(
            await the_entry_of(client, admin, since, response),
            entity="user",
            entity_id=ann["id"],
            action="updated",
            actor_id=admin.id,
            before=before,
            after=after,
        )
        since = entry["seq"]

    before = await user_representation(client, admin, ann["id"])
    response = await client.delete(f"/users/{ann['id']}", headers=admin.headers)
    expect(response, 204)
    assert_entry(
        await the_entry_of(client, admin, since, response),
        entity="user",
        entity_id=ann["id"],
        action="deleted",
        actor_id=admin.id,
        before=before,
        after=None,
    )

    entries = await entries_since(client, admin, start)
    assert [entry["action"] for entry in entries] == ["created"] * 2 + ["updated"] * 4 + ["deleted"]
    seqs = [entry["seq"] for entry in entries]
    assert seqs == sorted(set(seqs)), seqs
    assert_no_secrets_in_log(entries, *passwords)
    for entry in entries:
        for representation in (entry["before"], entry["after"]):
            assert representation is None or set(representation) == USER_FIELDS, entry


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("abc-123.XYZ:9", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("x" * 200, False),
        ("has spaces in it", False),
        ("slash/and;semicolon", False),
        ("", False),
    ],
    ids=["sane", "64-chars", "65-chars", "200-chars", "spaces", "punctuation", "empty"],
)
async def test_a_sane_request_id_is_kept_and_another_replaced(
    client: Any, admin: Account, given: str, kept: bool
) -> None:
    vm = await create_vm(client, admin)
    since = await last_seq(client, admin)
    response = await client.patch(
        f"/vms/{vm['id']}", json={"cores": 3}, headers={**admin.headers, "X-Request-ID": given}
    )
    expect(response, 200)
    answered = response.headers["X-Request-ID"]
    if kept:
        assert answered == given
    else:
        assert answered != given
        assert GENERATED_REQUEST_ID.match(answered), answered
    assert (await the_entry_of(client, admin, since, response))["request_id"] == answered


async def test_a_write_that_changes_nothing_leaves_no_entry(
    client: Any, admin: Account, cliente: Account
) -> None:
    """The log records changes: a PATCH that sets nothing, or sets a value it already has, commits no
    change (the row, its ``updated_at`` and the VM's ETag stay as they were), so it must leave no entry and
    send no ``*_updated`` event saying so."""
    vm = await create_vm(client, admin)
    path = f"/vms/{vm['id']}"
    etag = (await client.get(path, headers=admin.headers)).headers["ETag"]
    since = await last_seq(client, admin)
    for target, body in ((path, {}), (path, {"cores": vm["cores"]}), (f"/users/{cliente.id}", {})):
        response = await client.patch(target, json=body, headers=admin.headers)
        expect(response, 200)
    assert (await client.get(path, headers=admin.headers)).headers["ETag"] == etag
    assert await vm_representation(client, admin, vm["id"]) == vm
    assert await entries_since(client, admin, since) == []


async def test_concurrent_writes_get_consecutive_seqs_and_one_entry_each(client: Any, admin: Account) -> None:
    """Writes that race (creations, updates of one VM that may lose to each other with 412, sign-ups of
    one email of which one wins): one entry per write answered 2xx, none for the others, and seqs with no
    hole (a reader who has seen N has seen everything up to N)."""
    vm = await create_vm(client, admin)
    since = await last_seq(client, admin)
    etag = (await client.get(f"/vms/{vm['id']}", headers=admin.headers)).headers["ETag"]
    requests = [
        *(client.post("/vms", json={**VM_BODY, "name": f"vm-{n}"}, headers=admin.headers) for n in range(8)),
        *(
            client.patch(
                f"/vms/{vm['id']}", json={"cores": n + 1}, headers={**admin.headers, "If-Match": etag}
            )
            for n in range(6)
        ),
        *(
            client.post("/users", json={"name": "Twin", "email": "twin@example.com", "password": "twin-pw-1"})
            for _ in range(6)
        ),
    ]
    responses = await asyncio.gather(*requests)
    statuses = sorted(response.status_code for response in responses)
    written = [response for response in responses if response.status_code in (200, 201)]
    assert statuses.count(201) == 8 + 1, statuses  # every VM, one twin
    assert statuses.count(200) >= 1, statuses  # at least the first update with that ETag
    assert set(statuses) <= {200, 201, 409, 412}, statuses

    entries = await entries_since(client, admin, since)
    assert [entry["seq"] for entry in entries] == list(range(since + 1, since + 1 + len(written)))
    assert sorted(entry["request_id"] for entry in entries) == sorted(
        response.headers["X-Request-ID"] for response in written
    )
    by_request = {entry["request_id"]: entry for entry in entries}
    for response in written:
        assert by_request[response.headers["X-Request-ID"]]["after"] == response.json()


# ---------------------------------------------------------------- refused writes leave none


async def test_refused_and_rolled_back_writes_leave_no_entry(
    client: Any, admin: Account, cliente: Account
) -> None:
    vm = await create_vm(client, admin)
    path = f"/vms/{vm['id']}"
    etag = (await client.get(path, headers=admin.headers)).headers["ETag"]
    other = await create_account(client, admin)
    anonymous: dict[str, str] = {}

    def user(email: str, **extra: str) -> dict[str, str]:
        return {"name": "X", "email": email, "password": "long-pw-1", **extra}

    wrong_current = {"password": "new-pw-1", "current_password": "wrong"}

    refused: list[tuple[str, str, dict[str, str], Any, int]] = [
        # Bodies the API refuses (nothing stored).
        ("POST", "/vms", admin.headers, {}, 400),
        ("POST", "/vms", admin.headers, {**VM_BODY, "cores": 0}, 400),
        ("POST", "/vms", admin.headers, {**VM_BODY, "name": "   "}, 400),
        ("POST", "/vms", admin.headers, {**VM_BODY, "colour": "red"}, 400),
        ("POST", "/vms", admin.headers, b"{not json", 400),
        ("PATCH", path, admin.headers, {"status": "exploded"}, 400),
        ("PUT", path, admin.headers, {"ram": 0}, 400),
        ("POST", "/users", admin.headers, user("not-an-email"), 400),
        ("POST", "/users", anonymous, user("x@example.com", password="short"), 400),
        ("PATCH", f"/users/{other.id}", admin.headers, {"rol": "root"}, 400),
        # Nothing to change.
        ("PATCH", "/vms/424242", admin.headers, {"cores": 2}, 404),
        ("PUT", "/vms/424242", admin.headers, {"cores": 2}, 404),
        ("DELETE", "/vms/424242", admin.headers, None, 404),
        ("PATCH", "/users/424242", admin.headers, {"name": "Nobody"}, 404),
        ("DELETE", "/users/424242", admin.headers, None, 404),
        # If-Match that does not match (a weak tag never does).
        ("PATCH", path, {**admin.headers, "If-Match": '"not-the-etag"'}, {"cores": 2}, 412),
        ("PUT", path, {**admin.headers, "If-Match": f"W/{etag}"}, {"cores": 2}, 412),
        ("DELETE", path, {**admin.headers, "If-Match": '"not-the-etag"'}, None, 412),
        # Conflicts: a taken email (on creation, sign-up and update), the last administrador.
        ("POST", "/users", admin.headers, user(other.email), 409),
        ("POST", "/users", anonymous, user(other.email.upper()), 409),
        ("PATCH", f"/users/{other.id}", admin.headers, {"email": ADMIN_EMAIL}, 409),
        ("PATCH", f"/users/{admin.id}", admin.headers, {"rol": "cliente"}, 409),
        ("DELETE", f"/users/{admin.id}", admin.headers, None, 409),
        # A cliente's writes it may not make.
        ("POST", "/vms", cliente.headers, VM_BODY, 403),
        ("PATCH", path, cliente.headers, {"cores": 2}, 403),
        ("PUT", path, cliente.headers, {"cores": 2}, 403),
        ("DELETE", path, cliente.headers, None, 403),
        ("POST", "/users", cliente.headers, user("y@example.com", rol="administrador"), 403),
        ("POST", "/users", anonymous, user("z@example.com", rol="administrador"), 403),
        ("PATCH", f"/users/{other.id}", cliente.headers, {"name": "Not yours"}, 403),
        ("PATCH", f"/users/{cliente.id}", cliente.headers, {"rol": "administrador"}, 403),
        ("PATCH", f"/users/{cliente.id}", cliente.headers, wrong_current, 403),
        ("DELETE", f"/users/{cliente.id}", cliente.headers, None, 403),
        # Nobody signed in.
        ("PATCH", path, anonymous, {"cores": 2}, 401),
        ("DELETE", f"/users/{other.id}", anonymous, None, 401),
    ]  # fmt: skip
    since = await last_seq(client, admin)
    for method, target, headers, body, status in refused:
        if isinstance(body, bytes):
            request = {"content": body, "headers": {**headers, "Content-Type": "application/json"}}
        else:
            request = {"json": body, "headers": headers} if body is not None else {"headers": headers}
        response = await client.request(method, target, **request)
        assert_error(response, status)
        assert await entries_since(client, admin, since) == [], (method, target, body, status)
    assert await last_seq(client, admin) == since
    assert (await client.get("/vms", headers=admin.headers)).headers["X-Change-Seq"] == str(since)


# ---------------------------------------------------------------- writes that are not the API's


async def test_the_start_up_administrador_is_recorded_once(settings: Settings, client: Any) -> None:
    admin = await sign_in_admin(client)
    entries, total = await read_log(client, admin)
    assert total == 1, entries  # a fresh database: nothing else has happened
    (entry,) = entries
    assert_entry(
        entry,
        entity="user",
        entity_id=admin.id,
        action="created",
        actor_id=None,
        before=None,
        after=await user_representation(client, admin, admin.id),
        source="startup",
    )
    assert entry["request_id"] is None

    # Another start on the same database finds the administrador there: no second entry.
    again = create_app(settings)
    try:
        async with AsyncTestClient(app=again) as second:
            assert (await read_log(second, admin))[0] == entries
    finally:
        await dispose_engines(again)
    assert (await read_log(client, admin))[0] == entries


@pytest.fixture
def cli_environment(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """VMS_* for the CLI, which reads the process environment (through the cached get_settings)."""
    for name in list(os.environ):
        if name.startswith("VMS_"):
            monkeypatch.delenv(name)
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.sqlite3'}" if database_url == "sqlite" else database_url
    env = {
        "VMS_DATABASE_URL": url,
        "VMS_BCRYPT_ROUNDS": "4",
        "VMS_JWT_SECRET_FILE": str(tmp_path / "jwt-secret"),
        "VMS_LOGIN_RATE_LIMIT": "1000",
        "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
        "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "VMS_REDIS_NAMESPACE": f"vms-test-{uuid.uuid4().hex[:8]}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_cli_command_is_recorded_with_its_source(cli_environment: None) -> None:
    """``litestar users create-admin`` while the app serves the same database: the app's log shows it."""
    app = create_app(load_settings(dict(os.environ)))
    with TestClient(app=app) as client:
        token = client.post("/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).json()
        headers = bearer(token["access_token"])
        (startup,) = client.get("/changes", headers=headers).json()
        assert startup["source"] == "startup"

        result = CliRunner().invoke(
            users_group,
            ["create-admin", "--email", "ops@example.com", "--name", "Ops", "--password", "cli-password-1"],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output

        response = client.get("/changes", headers=headers, params={"since": startup["seq"]})
        assert response.status_code == 200, response.text
        (entry,) = response.json()
        ops = [
            user
            for user in client.get("/users", headers=headers).json()
            if user["email"] == "ops@example.com"
        ]
        assert len(ops) == 1, ops
        assert_entry(
            entry,
            entity="user",
            entity_id=ops[0]["id"],
            action="created",
            actor_id=None,
            before=None,
            after=ops[0],
            source="cli",
        )
        assert entry["request_id"] is None
        assert entry["seq"] > startup["seq"]
        assert response.headers["X-Total-Count"] == "1"
        assert client.get("/users", headers=headers).headers["X-Change-Seq"] == str(entry["seq"])
