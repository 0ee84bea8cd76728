"""SIGTERM: the server finishes the requests in flight, keeps what it acknowledged and closes WebSockets
with 1012 (service restart), so dashboards reconnect with ``since`` and miss nothing."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
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


def hold_write_lock(path: Path, locked: threading.Event, release: threading.Event) -> None:
    """Another process's write transaction on the database (SQLite's lock), until ``release``."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(30)
        connection.execute("ROLLBACK")
    finally:
        connection.close()


async def test_sigterm_lets_a_request_in_flight_finish_with_its_answer(tmp_path: Path) -> None:
    """A write waiting for SQLite's lock when SIGTERM arrives, and for two seconds more: the server waits
    for it (uvicorn sets no limit on its graceful shutdown; with one, the write was cut off with a 500),
    answers it 201 once the lock is free, and the write is there after a restart."""
    database = tmp_path / "vms.sqlite3"
    env = sqlite_server_env(database, VMS_DB_TIMEOUT_SECONDS="10")
    server = start_server_process(env, tmp_path / "server.log")
    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(database, locked, release))
    try:
        await wait_healthy(server)
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            token = await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=server.url)
            holder.start()
            assert await asyncio.to_thread(locked.wait, 10)
            in_flight = asyncio.create_task(
                http.post("/vms", json={**VM_BODY, "name": "in-flight"}, headers=bearer(token))
            )
            await asyncio.sleep(0.5)  # the write is waiting for the lock
            assert not in_flight.done()
            server.process.terminate()
            await asyncio.sleep(2.0)  # the server is shutting down, the write still waiting
            assert not in_flight.done()
            assert server.process.poll() is None, "the server exited with a request in flight"
            release.set()
            answered = await in_flight
            assert answered.status_code == 201, answered.text
        assert await asyncio.to_thread(server.process.wait, 15) in (0, -signal.SIGTERM)
    finally:
        release.set()
        if holder.is_alive():
            holder.join(10)
        server.stop()
    restarted = start_server_process(env, tmp_path / "restarted.log")
    try:
        await wait_healthy(restarted)
        async with httpx.AsyncClient(base_url=restarted.url, timeout=10) as http:
            token = await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=restarted.url)
            again = await http.get(f"/vms/{answered.json()['id']}", headers=bearer(token))
            assert again.status_code == 200, again.text
            assert again.json()["name"] == "in-flight"
    finally:
        restarted.stop()
