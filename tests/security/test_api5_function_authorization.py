"""API5:2023 Broken Function Level Authorization: administrador-only functions called by others.

Every administrador-only route, over every spelling of its path, refused to a cliente (403) and to an
anonymous caller (401), with nothing changed afterwards; and the administrador-only WebSocket.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    VM_BODY,
    Account,
    bearer,
    create_account,
    create_vm,
    login,
    server_with,
    ws_events,
)

# (method, path template, body); {vm} and {user} are filled in with real ids
ADMIN_ONLY = [
    ("GET", "/users", None),
    ("GET", "/users/", None),
    ("GET", "/users?limit=1000", None),
    ("POST", "/vms", VM_BODY),
    ("POST", "/vms/", VM_BODY),
    ("PUT", "/vms/{vm}", {"name": "taken"}),
    ("PATCH", "/vms/{vm}", {"status": "stopped"}),
    ("DELETE", "/vms/{vm}", None),
    ("DELETE", "/users/{user}", None),
]
SIGNED_IN = [
    ("GET", "/vms", None),
    ("GET", "/vms/{vm}", None),
    ("GET", "/users/me", None),
    ("GET", "/users/{user}", None),
    ("PATCH", "/users/{user}", {"name": "x"}),
    ("POST", "/logout", None),
]


async def snapshot(client: Any, admin: Account) -> tuple[Any, Any]:
    vms = (await client.get("/vms", headers=admin.headers)).json()
    users = (await client.get("/users", headers=admin.headers)).json()
    return vms, users


@pytest.fixture
async def victim_vm(client: Any, admin: Account) -> dict[str, Any]:
    return await create_vm(client, admin, name="victim-vm")


def fill(path: str, vm: dict[str, Any], user: Account) -> str:
    return path.format(vm=vm["id"], user=user.id)


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ONLY, ids=[f"{m} {p}" for m, p, _ in ADMIN_ONLY])
async def test_a_cliente_is_refused_every_administrador_function(
    client: Any,
    admin: Account,
    cliente: Account,
    victim_vm: dict[str, Any],
    method: str,
    path: str,
    body: Any,
) -> None:
    victim = await create_account(client, admin, name="Victim")
    before = await snapshot(client, admin)
    response = await client.request(method, fill(path, victim_vm, victim), json=body, headers=cliente.headers)
    assert response.status_code == 403, response.text
    assert await snapshot(client, admin) == before


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ONLY, ids=[f"{m} {p}" for m, p, _ in ADMIN_ONLY])
async def test_an_anonymous_caller_is_refused_every_administrador_function(
    client: Any,
    admin: Account,
    cliente: Account,
    victim_vm: dict[str, Any],
    method: str,
    path: str,
    body: Any,
) -> None:
    before = await snapshot(client, admin)
    response = await client.request(method, fill(path, victim_vm, cliente), json=body)
    assert response.status_code == 401, response.text
    assert await snapshot(client, admin) == before


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ONLY, ids=[f"{m} {p}" for m, p, _ in ADMIN_ONLY])
async def test_the_administrador_may_call_every_administrador_function(
    client: Any, admin: Account, victim_vm: dict[str, Any], method: str, path: str, body: Any
) -> None:
    """The control: the refusals above come from the role, not from broken routes."""
    victim = await create_account(client, admin, name="Victim")
    response = await client.request(method, fill(path, victim_vm, victim), json=body, headers=admin.headers)
    assert 200 <= response.status_code < 300, response.text


@pytest.mark.parametrize(("method", "path", "body"), SIGNED_IN, ids=[f"{m} {p}" for m, p, _ in SIGNED_IN])
async def test_an_anonymous_caller_is_refused_every_signed_in_function(
    client: Any, cliente: Account, victim_vm: dict[str, Any], method: str, path: str, body: Any
) -> None:
    response = await client.request(method, fill(path, victim_vm, cliente), json=body)
    assert response.status_code == 401, response.text


@pytest.mark.parametrize(
    "override",
    [
        {"X-HTTP-Method-Override": "DELETE"},
        {"X-HTTP-Method": "DELETE"},
        {"X-Method-Override": "DELETE"},
    ],
)
async def test_method_override_headers_do_not_turn_a_read_into_a_delete(
    client: Any, admin: Account, cliente: Account, victim_vm: dict[str, Any], override: dict[str, str]
) -> None:
    for method in ("GET", "POST"):
        await client.request(method, f"/vms/{victim_vm['id']}", headers={**cliente.headers, **override})
    assert (await client.get(f"/vms/{victim_vm['id']}", headers=admin.headers)).status_code == 200


async def test_a_cliente_cannot_reach_admin_functions_through_odd_paths(
    client: Any, admin: Account, cliente: Account, victim_vm: dict[str, Any]
) -> None:
    before = await snapshot(client, admin)
    for method, path in [
        ("GET", "/USERS"),
        ("GET", "//users"),
        ("GET", "/users/../users"),
        ("GET", "/users%2F"),
        ("DELETE", f"/vms/{victim_vm['id']}/"),
        ("DELETE", f"/vms//{victim_vm['id']}"),
        ("DELETE", f"/VMS/{victim_vm['id']}"),
        ("DELETE", f"/vms/{victim_vm['id']}%20"),
        ("DELETE", f"/vms/0{victim_vm['id']}"),
    ]:
        response = await client.request(method, path, headers=cliente.headers)
        assert response.status_code in {400, 403, 404, 405}, (method, path, response.status_code)
    assert await snapshot(client, admin) == before


# ---------------------------------------------------------------- the administrador-only WebSocket


async def test_ws_users_gives_no_events_to_a_cliente_or_an_anonymous_caller(tmp_path: Any) -> None:
    async with server_with(tmp_path) as server:
        admin_token = await login(server.http, ADMIN_EMAIL, ADMIN_PASSWORD)
        cliente = await create_account(server.http, Account(0, "", "", admin_token))
        sign_ups = itertools.count()

        async def sign_up() -> None:
            body = {"name": "New", "email": f"new-{next(sign_ups)}@example.com", "password": "new-password"}
            assert (await server.http.post("/users", json=body)).status_code == 201

        url = f"{server.ws_url}/ws/users"
        attempts = {
            "cliente ?token=": (f"{url}?token={cliente.token}", None),
            "cliente header": (url, bearer(cliente.token)),
            "anonymous": (url, None),
            "garbage token": (f"{url}?token=not-a-jwt", None),
        }
        for label, (target, headers) in attempts.items():
            outcome = await ws_events(target, headers=headers, trigger=sign_up, seconds=1.0)
            assert isinstance(outcome, str), f"{label} received {outcome}"

        # the control: the administrador gets the event on the same socket
        outcome = await ws_events(f"{url}?token={admin_token}", trigger=sign_up, seconds=1.0)
        assert isinstance(outcome, list)
        assert [event["event"] for event in outcome] == ["user_created"]


async def test_ws_vms_gives_no_events_to_an_anonymous_caller(tmp_path: Any) -> None:
    async with server_with(tmp_path) as server:
        admin_token = await login(server.http, ADMIN_EMAIL, ADMIN_PASSWORD)
        cliente = await create_account(server.http, Account(0, "", "", admin_token))

        async def change() -> None:
            await server.http.post("/vms", json=VM_BODY, headers=bearer(admin_token))

        outcome = await ws_events(f"{server.ws_url}/ws/vms", trigger=change, seconds=1.0)
        assert isinstance(outcome, str), f"an anonymous listener received {outcome}"
        # the control: a cliente may listen to VM events
        outcome = await ws_events(
            f"{server.ws_url}/ws/vms?token={cliente.token}", trigger=change, seconds=1.0
        )
        assert isinstance(outcome, list)
        assert [event["event"] for event in outcome] == ["vm_created"]
