"""A socket whose sign-in session ends is closed with 1008, whatever ended the session and wherever.

The session can end in this process (logout, the session routes, an account change through the API) or in
another one that shares the database (the command line, another worker while Redis is away): each server
asks the database, for all its open sockets at once, which of their sessions have ended.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    LiveServer,
    admin_account,
    bearer,
    create_account,
    create_vm,
    expect,
    login,
    receive_event,
    run_cli,
    server_process,
    server_with,
    settings_of,
    wait_closed_with,
    ws_connect,
)
from tests.helpers.processes import sqlite_server_env

CLOSE_SECONDS = 5.0
"""A socket of a session ended elsewhere is closed within this: the servers' check runs every second."""


async def test_a_password_reset_on_the_command_line_closes_the_users_sockets(tmp_path: Path) -> None:
    """Failed before: one process on SQLite and no Redis, so nothing told the server; its token check
    refused the token, but the socket compared only the token version, which a password does not bump."""
    env = sqlite_server_env(tmp_path / "vms.sqlite3")
    async with server_process(env, tmp_path / "server.log") as server, httpx.AsyncClient(timeout=10) as http:
        admin = bearer(await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=server.url))
        body = {"name": "Cy", "email": "cy@example.com", "password": "cy-password-1", "rol": "cliente"}
        expect(await http.post(f"{server.url}/users", json=body, headers=admin), 201)
        token = await login(http, "cy@example.com", "cy-password-1", base_url=server.url)
        url = f"{server.ws_url}/ws/vms"
        async with (
            connect(url, additional_headers=bearer(token), open_timeout=10, close_timeout=2) as doomed,
            connect(url, additional_headers=admin, open_timeout=10, close_timeout=2) as bystander,
        ):
            reset = await run_cli(
                env, "users", "reset-password", "cy@example.com", "--password-stdin", input="cy-password-2\n"
            )
            assert reset.code == 0, reset.output
            await wait_closed_with(doomed, [1008], seconds=CLOSE_SECONDS)
            response = await http.get(f"{server.url}/users/me", headers=bearer(token))
            assert response.status_code == 401, response.text
            vm = await http.post(
                f"{server.url}/vms",
                json={
                    "name": "after",
                    "cores": 1,
                    "ram": 512,
                    "disk": 1,
                    "os": "Debian 12",
                    "status": "running",
                },
                headers=admin,
            )
            assert (await receive_event(bystander))["vm"] == expect(vm, 201)


async def test_your_own_new_password_closes_the_sockets_of_your_other_sessions_only(
    live_server: LiveServer,
) -> None:
    admin = await admin_account(live_server)
    cliente = await create_account(live_server.http, admin)
    here = await login(live_server.http, cliente.email, cliente.password)
    async with (
        ws_connect(live_server, "/ws/vms", here) as kept,
        ws_connect(live_server, "/ws/vms", cliente.token) as elsewhere,
    ):
        body = {"password": "my-new-password-1", "current_password": cliente.password}
        expect(await live_server.http.patch(f"/users/{cliente.id}", json=body, headers=bearer(here)), 200)
        await wait_closed_with(elsewhere, [1008], seconds=CLOSE_SECONDS)
        vm = await create_vm(live_server.http, admin)
        assert (await receive_event(kept))["vm"] == vm


@pytest.mark.parametrize(
    ("rol", "to"),
    [
        pytest.param("cliente", "administrador", id="promotion"),
        pytest.param("administrador", "cliente", id="demotion"),
    ],
)
async def test_a_role_change_closes_the_users_sockets_on_the_vm_channel(
    live_server: LiveServer, rol: str, to: str
) -> None:
    """A role change ends every session of the user: its sockets on /ws/vms too, which any role may read."""
    admin = await admin_account(live_server)
    user = await create_account(live_server.http, admin, rol=rol)
    async with (
        ws_connect(live_server, "/ws/vms", user.token) as doomed,
        ws_connect(live_server, "/ws/vms", admin.token) as bystander,
    ):
        expect(
            await live_server.http.patch(f"/users/{user.id}", json={"rol": to}, headers=admin.headers), 200
        )
        await wait_closed_with(doomed, [1008], seconds=CLOSE_SECONDS)
        vm = await create_vm(live_server.http, admin)
        assert (await receive_event(bystander))["vm"] == vm


async def test_a_session_check_that_fails_for_no_database_fault_is_one_line_each_way(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The check every second, while the sessions table is unreadable to it (a column renamed by hand):
    one line with its traceback when it starts failing, one when it works again; the socket stays open."""
    async with server_with(tmp_path) as server:
        admin = await admin_account(server)
        database = settings_of(server).sqlite_path
        async with ws_connect(server, "/ws/vms", admin.token) as socket:
            await asyncio.sleep(0.3)
            capfd.readouterr()
            with sqlite3.connect(database) as connection:
                connection.execute("ALTER TABLE auth_session RENAME COLUMN ended_at TO hidden_ended_at")
            await asyncio.sleep(3.5)  # three or four checks meet it
            failing = capfd.readouterr()
            with sqlite3.connect(database) as connection:
                connection.execute("ALTER TABLE auth_session RENAME COLUMN hidden_ended_at TO ended_at")
            await asyncio.sleep(2.5)
            healed = capfd.readouterr()
            await create_vm(server.http, admin)
            assert (await receive_event(socket))["event"] == "vm_created"  # still open, still served
    during = [line for line in (failing.out + failing.err).splitlines() if "sessions of open sockets" in line]
    assert len(during) == 1, during
    assert '"state":"started"' in during[0], during
    assert "Traceback" in during[0], during
    after = [line for line in (healed.out + healed.err).splitlines() if "session check" in line]
    assert len(after) == 1, after
    assert '"state":"ended"' in after[0], after
