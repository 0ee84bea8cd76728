"""API1:2023 Broken Object Level Authorization: a cliente reaching other people's records by id.

Users are the objects with an owner here (a cliente may read and update only its own account); the VM
inventory is shared and read-only for clientes, so for VMs the object-level question is writes.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import Account, create_account, create_vm, login

DENIED = {403, 404}


@pytest.fixture
async def other(client: Any, admin: Account) -> Account:
    """A second cliente: the victim."""
    return await create_account(client, admin, name="Victim")


async def read_user(client: Any, admin: Account, user_id: int) -> dict[str, Any]:
    response = await client.get(f"/users/{user_id}", headers=admin.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_cliente_reads_its_own_record(client: Any, cliente: Account) -> None:
    """The control: the refusals below are about whose record it is, not a blanket refusal."""
    response = await client.get(f"/users/{cliente.id}", headers=cliente.headers)
    assert response.status_code == 200
    assert response.json()["email"] == cliente.email


@pytest.mark.parametrize("victim", ["other", "admin"])
async def test_a_cliente_cannot_read_another_users_record(
    client: Any, cliente: Account, other: Account, admin: Account, victim: str
) -> None:
    target = other if victim == "other" else admin
    response = await client.get(f"/users/{target.id}", headers=cliente.headers)
    assert response.status_code in DENIED, response.text
    assert target.email not in response.text


async def test_existing_and_missing_ids_look_the_same_to_a_cliente(
    client: Any, cliente: Account, other: Account
) -> None:
    """Otherwise the status code is an oracle for which ids exist."""
    existing = await client.get(f"/users/{other.id}", headers=cliente.headers)
    missing = await client.get("/users/987654321", headers=cliente.headers)
    assert existing.status_code == missing.status_code
    assert existing.json()["detail"] == missing.json()["detail"]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_a_cliente_cannot_update_another_user(
    client: Any, cliente: Account, other: Account, admin: Account, method: str
) -> None:
    before = await read_user(client, admin, other.id)
    response = await client.request(
        method, f"/users/{other.id}", json={"name": "pwned"}, headers=cliente.headers
    )
    assert response.status_code in DENIED, response.text
    assert await read_user(client, admin, other.id) == before


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_a_cliente_cannot_take_over_another_account(
    client: Any, cliente: Account, other: Account, method: str
) -> None:
    """Changing someone else's email or password is an account takeover."""
    takeover = {"email": f"taken-{other.email}", "password": "attacker-chosen-1"}
    response = await client.request(method, f"/users/{other.id}", json=takeover, headers=cliente.headers)
    assert response.status_code in DENIED, response.text
    assert await login(client, other.email, other.password)
    refused = await client.post("/login", json={"email": other.email, "password": "attacker-chosen-1"})
    assert refused.status_code == 401


async def test_a_cliente_cannot_update_the_administrador(
    client: Any, cliente: Account, admin: Account
) -> None:
    body = {"email": "mine@example.com"}
    response = await client.patch(f"/users/{admin.id}", json=body, headers=cliente.headers)
    assert response.status_code in DENIED, response.text
    assert (await read_user(client, admin, admin.id))["email"] == admin.email


async def test_a_cliente_cannot_delete_another_user(
    client: Any, cliente: Account, other: Account, admin: Account
) -> None:
    response = await client.delete(f"/users/{other.id}", headers=cliente.headers)
    assert response.status_code in DENIED, response.text
    await read_user(client, admin, other.id)
    assert (await client.get("/users/me", headers=other.headers)).status_code == 200


async def test_an_id_in_the_body_does_not_redirect_an_update(
    client: Any, cliente: Account, other: Account, admin: Account
) -> None:
    """PATCH my own record with someone else's id in the body: only my record may change."""
    before = await read_user(client, admin, other.id)
    response = await client.patch(
        f"/users/{cliente.id}", json={"id": other.id, "name": "renamed"}, headers=cliente.headers
    )
    assert response.status_code in {200, 400, 403, 422}, response.text
    assert await read_user(client, admin, other.id) == before
    me = (await client.get("/users/me", headers=cliente.headers)).json()
    assert me["id"] == cliente.id


async def test_users_me_is_always_the_caller(client: Any, cliente: Account, other: Account) -> None:
    for account in (cliente, other):
        me = await client.get("/users/me", headers=account.headers)
        assert me.json()["id"] == account.id


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_a_cliente_cannot_write_a_vm_it_can_read(
    client: Any, cliente: Account, admin: Account, method: str
) -> None:
    vm = await create_vm(client, admin, name="shared-01")
    readable = await client.get(f"/vms/{vm['id']}", headers=cliente.headers)
    assert readable.status_code == 200
    body = {"status": "stopped"} if method != "DELETE" else None
    response = await client.request(method, f"/vms/{vm['id']}", json=body, headers=cliente.headers)
    assert response.status_code == 403, response.text
    after = await client.get(f"/vms/{vm['id']}", headers=admin.headers)
    assert after.json() == vm


async def test_an_administrador_reads_any_record(client: Any, admin: Account, other: Account) -> None:
    """The other side of the rule: administradores are meant to reach every record."""
    assert (await read_user(client, admin, other.id))["email"] == other.email
