"""Slow clients are cut off: a request whose headers or body do not arrive in time loses its connection.

A real uvicorn process with the README's ``--http app.http.slow_clients:BoundedHttpToolsProtocol`` and
``VMS_CLIENT_TIMEOUT_SECONDS=1``; raw sockets send half a request and wait. The README's other commands,
``litestar run`` (uvicorn in the same process) and ``litestar run -W 2`` (uvicorn in a child process, with
two workers), get the same bound without the flag.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, REDIS_URL, login, require
from tests.helpers.processes import (
    ServerProcess,
    server_process,
    sqlite_server_env,
    start_litestar_run,
    wait_healthy,
)

BOUND = 1.0
PROTOCOL = ["--http", "app.http.slow_clients:BoundedHttpToolsProtocol"]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    env = sqlite_server_env(tmp_path / "vms.sqlite3", VMS_CLIENT_TIMEOUT_SECONDS=str(BOUND))
    async with server_process(env, tmp_path / "server.log", options=PROTOCOL) as started:
        yield started


async def closed_after(server: ServerProcess, sent: bytes) -> float:
    """Send ``sent`` and nothing more; seconds until the server closed the connection."""
    port = int(server.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(sent)
        await writer.drain()
        async with asyncio.timeout(BOUND + 5):
            while await reader.read(65536):
                pass
        return time.monotonic() - started
    finally:
        writer.close()


async def test_requests_that_do_not_arrive_in_time_lose_their_connection(server: ServerProcess) -> None:
    """Half-sent headers, nothing at all, a body that stops short; and a hundred half-sent requests at
    once, whose descriptors are all given back (v1 kept every one open)."""
    body_head = (
        b"POST /login HTTP/1.1\r\nHost: vms\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    headers, nothing, body, *crowd = await asyncio.gather(
        closed_after(server, b"GET /health HTTP/1.1\r\nHost: vms\r\nX-Slow: "),
        closed_after(server, b""),
        closed_after(server, body_head + b'{"email": '),
        *(closed_after(server, b"GET /health HTTP/1.1\r\nHost: vms\r\n") for _ in range(100)),
    )
    for waited in (headers, nothing, body, *crowd):
        assert BOUND * 0.8 <= waited < BOUND + 3
    descriptors = len(os.listdir(f"/proc/{server.process.pid}/fd"))
    assert descriptors < 60, descriptors


async def test_prompt_clients_are_not_affected(server: ServerProcess) -> None:
    """Keep-alive requests spread over more than the bound, and a WebSocket open for longer, go on."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        token = await login(http, ADMIN_EMAIL, ADMIN_PASSWORD, base_url=server.url)
        for _ in range(3):
            assert (await http.get("/health")).status_code == 200
            await asyncio.sleep(BOUND * 0.6)
        async with connect(f"{server.ws_url}/ws/vms?token={token}") as socket:
            await asyncio.sleep(BOUND * 2)
            created = await http.post(
                "/vms",
                json={
                    "name": "slow",
                    "cores": 1,
                    "ram": 512,
                    "disk": 10,
                    "os": "Debian 12",
                    "status": "running",
                },
                headers={"Authorization": f"Bearer {token}"},
            )
            assert created.status_code == 201, created.text
            async with asyncio.timeout(5):
                assert "vm_created" in str(await socket.recv())


@pytest.mark.parametrize(
    "options",
    [
        pytest.param((), id="litestar run"),
        pytest.param(("-W", "2"), id="litestar run -W 2", marks=pytest.mark.redis),
    ],
)
async def test_litestar_run_bounds_slow_clients_too(tmp_path: Path, options: tuple[str, ...]) -> None:
    """Half-sent requests to ``litestar run``, one worker or two (spread over both: a dozen of them), lose
    their connection within the bound, and a prompt request is answered."""
    values = {"VMS_CLIENT_TIMEOUT_SECONDS": str(BOUND)}
    if options:
        require("redis")  # several workers need Redis (each its own namespace)
        values |= {"VMS_REDIS_URL": REDIS_URL, "VMS_REDIS_NAMESPACE": f"vms-slow-{tmp_path.name[-12:]}"}
    env = sqlite_server_env(tmp_path / "vms.sqlite3", **values)
    server = start_litestar_run(env, tmp_path / "server.log", *options)
    try:
        await wait_healthy(server)
        waits = await asyncio.gather(
            *(closed_after(server, b"GET /health HTTP/1.1\r\nHost: vms\r\nX-Slow: ") for _ in range(12))
        )
        for waited in waits:
            assert BOUND * 0.8 <= waited < BOUND + 3
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.get("/health")).status_code == 200
    finally:
        server.stop()
