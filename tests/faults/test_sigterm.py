"""SIGTERM: the server finishes what it acknowledged and closes WebSockets with 1012 (service restart), so
dashboards reconnect with ``since`` and miss nothing."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, VM_BODY, bearer, login
from tests.helpers.processes import sqlite_server_env, start_server_process, wait_healthy

pytestmark = pytest.mark.faults


async def read_until_closed(socket: ClientConnection) -> None:
    async with asyncio.timeout(15):
        while True:
            await socket.recv()


async def test_sigterm_closes_websockets_with_1012_and_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    env = sqlite_server_env(tmp_path / "vms.sqlite3")
    server = start_server_process(env, tmp_path / "server.log")
    try:
        await wait_healthy(server)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            token = await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=server.url)
            async with connect(f"{server.ws_url}/ws/vms?token={token}") as socket:
                created = await http.post("/vms", json=VM_BODY, headers=bearer(token))
                assert created.status_code == 201, created.text
                async with asyncio.timeout(5):
                    assert "vm_created" in str(await socket.recv())
                server.process.terminate()
                with pytest.raises(ConnectionClosed) as closed:
                    await read_until_closed(socket)
                assert closed.value.rcvd is not None, closed.value
                assert closed.value.rcvd.code == 1012, closed.value.rcvd
        # uvicorn shuts down, then re-raises the signal so the exit status says what stopped it.
        assert await asyncio.to_thread(server.process.wait, 15) in (0, -signal.SIGTERM)
        # The acknowledged write is there after a restart on the same file.
        restarted = start_server_process(env, tmp_path / "restarted.log")
        try:
            await wait_healthy(restarted)
            async with httpx.AsyncClient(base_url=restarted.url, timeout=10) as http:
                token = await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=restarted.url)
                again = await http.get(f"/vms/{created.json()['id']}", headers=bearer(token))
                assert again.status_code == 200, again.text
        finally:
            restarted.stop()
    finally:
        server.stop()
