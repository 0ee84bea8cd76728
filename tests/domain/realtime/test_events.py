"""The realtime contract: what each change publishes, to whom, in which order, and who gets nothing."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.helpers import (
    VM_BODY,
    LiveServer,
    admin_account,
    assert_silent,
    create_account,
    create_vm,
    decode,
    expect_refused,
    forge_token,
    login,
    receive_event,
    receive_events,
    wait_closed_with,
    ws_connect,
)


def assert_envelope(
    event: dict[str, Any], name: str, key: str, body: dict[str, Any], actor_id: int | None
) -> None:
    """One event: its name, the same representation as the REST body, and the documented extra keys."""
    assert event["event"] == name
    assert event[key] == body
    assert isinstance(event["seq"], int)
    assert datetime.fromisoformat(event["at"]).utcoffset() is not None
    assert event["actor_id"] == actor_id
    assert ("user" if key == "vm" else "vm") not in event


def assert_increasing(events: list[dict[str, Any]]) -> None:
    seqs = [event["seq"] for event in events]
    assert all(a < b for a, b in itertools.pairwise(seqs)), seqs


def assert_lifecycle(
    events: list[dict[str, Any]], key: str, created: dict[str, Any], updated: dict[str, Any], actor_id: int
) -> None:
    """Created, updated, deleted (carrying the last state), in increasing ``seq`` order."""
    assert_envelope(events[0], f"{key}_created", key, created, actor_id)
    assert_envelope(events[1], f"{key}_updated", key, updated, actor_id)
    assert_envelope(events[2], f"{key}_deleted", key, updated, actor_id)
    assert_increasing(events)


# ---------------------------------------------------------------- what is published


async def test_vm_changes_reach_every_signed_in_user(live_server: LiveServer) -> None:
    admin = await admin_account(live_server)
    cliente = await create_account(live_server.http, admin)
    async with (
        ws_connect(live_server, "/ws/vms", admin.token) as admin_socket,
        ws_connect(live_server, "/ws/vms", cliente.token) as cliente_socket,
    ):
        created = await create_vm(live_server.http, admin, name="db-01")
        response = await live_server.http.patch(
            f"/vms/{created['id']}", json={"status": "stopped", "cores": 8}, headers=admin.headers
        )
        assert response.status_code == 200, response.text
        updated = response.json()
        response = await live_server.http.delete(f"/vms/{created['id']}", headers=admin.headers)
        assert response.status_code == 204, response.text

        for socket in (admin_socket, cliente_socket):
            events = await receive_events(socket, 3)
            assert_lifecycle(events, "vm", created, updated, admin.id)
            await assert_silent(socket)


async def test_user_changes_reach_admins_without_secrets(live_server: LiveServer) -> None:
    admin = await admin_account(live_server)
    async with ws_connect(live_server, "/ws/users", admin.token) as socket:
        body = {"name": "Ada", "email": "ada@example.com", "password": "ada-password-1", "rol": "cliente"}
        response = await live_server.http.post("/users", json=body, headers=admin.headers)
        assert response.status_code == 201, response.text
        created = response.json()
        response = await live_server.http.patch(
            f"/users/{created['id']}",
            json={"name": "Ada L.", "password": "new-password-2", "rol": "administrador"},
            headers=admin.headers,
        )
        assert response.status_code == 200, response.text
        updated = response.json()
        response = await live_server.http.delete(f"/users/{created['id']}", headers=admin.headers)
        assert response.status_code == 204, response.text

        raw = [await asyncio.wait_for(socket.recv(), 5) for _ in range(3)]
        for frame in raw:
            assert isinstance(frame, str)
            assert "password" not in frame
            assert "$2b$" not in frame  # no bcrypt hash under any key
        events = [decode(frame) for frame in raw]
        assert_lifecycle(events, "user", created, updated, admin.id)
        await assert_silent(socket)


async def test_self_sign_up_event_has_no_actor(live_server: LiveServer) -> None:
    admin = await admin_account(live_server)
    async with ws_connect(live_server, "/ws/users", admin.token, header=True) as socket:
        body = {"name": "Bob", "email": "bob@example.com", "password": "bob-password-1"}
        response = await live_server.http.post("/users", json=body)
        assert response.status_code == 201, response.text
        event = await receive_event(socket)
        assert_envelope(event, "user_created", "user", response.json(), actor_id=None)


async def test_events_arrive_in_commit_order(live_server: LiveServer) -> None:
    admin = await admin_account(live_server)
    async with ws_connect(live_server, "/ws/vms", admin.token) as socket:
        names = [f"vm-{index:03d}" for index in range(100)]
        for name in names:
            await create_vm(live_server.http, admin, name=name)
        events = await receive_events(socket, len(names))
        assert [event["vm"]["name"] for event in events] == names
        assert_increasing(events)


async def test_concurrent_writes_are_all_delivered_in_sequence_order(live_server: LiveServer) -> None:
    admin = await admin_account(live_server)
    vms = [await create_vm(live_server.http, admin, name=f"c-{index}") for index in range(20)]
    async with ws_connect(live_server, "/ws/vms", admin.token) as socket:

        async def bump(vm: dict[str, Any]) -> None:
            response = await live_server.http.patch(
                f"/vms/{vm['id']}", json={"cores": 3}, headers=admin.headers
            )
            assert response.status_code == 200, response.text

        await asyncio.gather(*(bump(vm) for vm in vms))
        events = await receive_events(socket, len(vms))
        assert sorted(event["vm"]["id"] for event in events) == sorted(vm["id"] for vm in vms)
        assert_increasing(events)
        await assert_silent(socket)


async def test_every_listener_gets_every_event(live_server: LiveServer) -> None:
    admin = await admin_account(live_server)
    cliente = await create_account(live_server.http, admin)
    listeners = 60
    # Half on each account, a third with the token in the header.
    sockets = await asyncio.wait_for(
        asyncio.gather(
            *(
                ws_connect(live_server, "/ws/vms", (admin, cliente)[index % 2].token, header=index % 3 == 0)
                for index in range(listeners)
            )
        ),
        10,
    )
    try:
        names = [f"fan-{index}" for index in range(10)]
        for name in names:
            await create_vm(live_server.http, admin, name=name)
        received = await asyncio.wait_for(
            asyncio.gather(*(receive_events(socket, len(names)) for socket in sockets)), 10
        )
        for events in received:
            assert [event["vm"]["name"] for event in events] == names
            assert_increasing(events)
        assert [event["seq"] for event in received[0]] == [event["seq"] for event in received[-1]]
    finally:
        await asyncio.gather(*(socket.close() for socket in sockets))


# ---------------------------------------------------------------- who gets nothing


async def test_authorization_header_is_accepted(live_server: LiveServer) -> None:
    admin = await admin_account(live_server)
    async with (
        ws_connect(live_server, "/ws/users", admin.token, header=True) as users,
        ws_connect(live_server, "/ws/vms", admin.token, header=True) as vms,
    ):
        cliente = await create_account(live_server.http, admin)
        vm = await create_vm(live_server.http, admin)
        assert (await receive_event(users))["user"]["id"] == cliente.id
        assert (await receive_event(vms))["vm"] == vm


@pytest.mark.parametrize("kind", ["missing", "garbage", "wrong-secret", "expired"])
async def test_bad_tokens_get_nothing(live_server: LiveServer, kind: str) -> None:
    admin = await admin_account(live_server)
    token: str | None = {
        "missing": None,
        "garbage": "not-a-jwt",
        "wrong-secret": forge_token(
            live_server, admin.token, expires_in=timedelta(minutes=5), secret="x" * 48
        ),
        "expired": forge_token(live_server, admin.token, expires_in=timedelta(seconds=-30)),
    }[kind]
    for path in ("/ws/vms", "/ws/users"):
        for header in (False, True) if token else (False,):
            outcome = await expect_refused(live_server, path, token, header=header)
            assert outcome.startswith(("refused", "closed")), (path, header, outcome)


@pytest.mark.parametrize("header", [False, True], ids=["query", "header"])
async def test_cliente_gets_no_user_events(live_server: LiveServer, header: bool) -> None:
    admin = await admin_account(live_server)
    cliente = await create_account(live_server.http, admin)
    await expect_refused(live_server, "/ws/users", cliente.token, header=header)


async def test_rejected_writes_publish_nothing(live_server: LiveServer) -> None:
    admin = await admin_account(live_server)
    async with (
        ws_connect(live_server, "/ws/vms", admin.token) as vms,
        ws_connect(live_server, "/ws/users", admin.token) as users,
    ):
        # Made while subscribed, and their events taken: on Redis an event published just before a
        # socket subscribed could otherwise still arrive on it, and be mistaken for a rejected write's.
        cliente = await create_account(live_server.http, admin)
        vm = await create_vm(live_server.http, admin)
        assert (await receive_event(users))["user"]["id"] == cliente.id
        assert (await receive_event(vms))["vm"]["id"] == vm["id"]
        rejected = [
            (
                "post",
                "/users",
                {"name": "Dup", "email": cliente.email.upper(), "password": "pw-123456789"},
                {},
            ),
            ("post", "/vms", {**VM_BODY, "cores": 0}, {}),
            ("post", "/vms", {**VM_BODY, "name": None}, {}),
            ("patch", f"/vms/{vm['id']}", {"ram": 1}, {"If-Match": '"0.0"'}),
            ("patch", f"/vms/{vm['id'] + 1000}", {"ram": 1}, {}),
            ("patch", f"/users/{admin.id}", {"rol": "cliente"}, {}),  # the last administrador
            ("delete", f"/users/{admin.id}", None, {}),
        ]
        statuses = []
        for method, path, body, extra in rejected:
            kwargs: dict[str, Any] = {"headers": {**admin.headers, **extra}}
            if body is not None:
                kwargs["json"] = body
            response = await live_server.http.request(method.upper(), path, **kwargs)
            statuses.append(response.status_code)
        forbidden = await live_server.http.post("/vms", json=VM_BODY, headers=cliente.headers)
        statuses.append(forbidden.status_code)
        assert all(400 <= status < 500 for status in statuses), statuses
        assert {409, 412, 404, 403} <= set(statuses), statuses

        good_vm = await create_vm(live_server.http, admin, name="after-rejections")
        good_user = await create_account(live_server.http, admin)
        vm_event = await receive_event(vms)
        user_event = await receive_event(users)
        assert (vm_event["event"], vm_event["vm"]) == ("vm_created", good_vm)
        assert (user_event["event"], user_event["user"]["id"]) == ("user_created", good_user.id)
        await assert_silent(vms)
        await assert_silent(users)


# ---------------------------------------------------------------- who is cut off


async def test_deleting_the_user_closes_its_sockets(live_server: LiveServer) -> None:
    admin = await admin_account(live_server)
    cliente = await create_account(live_server.http, admin)
    async with (
        ws_connect(live_server, "/ws/vms", cliente.token) as doomed,
        ws_connect(live_server, "/ws/vms", admin.token) as bystander,
    ):
        response = await live_server.http.delete(f"/users/{cliente.id}", headers=admin.headers)
        assert response.status_code == 204, response.text
        await wait_closed_with(doomed, [1008])
        vm = await create_vm(live_server.http, admin)
        assert (await receive_event(bystander))["vm"] == vm


@pytest.mark.parametrize(
    ("rol", "path", "change"),
    [
        pytest.param("cliente", "/ws/vms", {"password": "another-password-9"}, id="password-change"),
        pytest.param("administrador", "/ws/users", {"rol": "cliente"}, id="admin-demoted"),
    ],
)
async def test_a_change_to_the_user_closes_its_sockets(
    live_server: LiveServer, rol: str, path: str, change: dict[str, str]
) -> None:
    """Changing the password closes the user's sockets; demoting an admin closes its user events socket."""
    admin = await admin_account(live_server)
    user = await create_account(live_server.http, admin, rol=rol)
    async with ws_connect(live_server, path, user.token) as socket:
        response = await live_server.http.patch(f"/users/{user.id}", json=change, headers=admin.headers)
        assert response.status_code == 200, response.text
        await wait_closed_with(socket, [1008])


async def test_logout_closes_the_sockets_of_that_token_only(live_server: LiveServer) -> None:
    admin = await admin_account(live_server)
    cliente = await create_account(live_server.http, admin)
    second_token = await login(live_server.http, cliente.email, cliente.password)
    async with (
        ws_connect(live_server, "/ws/vms", cliente.token) as revoked,
        ws_connect(live_server, "/ws/vms", second_token, header=True) as kept,
    ):
        response = await live_server.http.post("/logout", headers=cliente.headers)
        assert response.status_code == 204, response.text
        await wait_closed_with(revoked, [1008], seconds=3)
        vm = await create_vm(live_server.http, admin)
        assert (await receive_event(kept))["vm"] == vm


async def test_socket_is_closed_when_its_token_expires(live_server: LiveServer) -> None:
    admin = await admin_account(live_server)
    token = forge_token(live_server, admin.token, expires_in=timedelta(seconds=2))
    async with ws_connect(live_server, "/ws/vms", token) as socket:
        vm = await create_vm(live_server.http, admin)
        assert (await receive_event(socket))["vm"] == vm  # still good before it expires
        started = time.monotonic()
        await wait_closed_with(socket, [1008], seconds=6)
        assert time.monotonic() - started < 4
