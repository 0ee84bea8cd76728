"""Running the app: on a live uvicorn server (for WebSocket), with other settings, and a private Redis."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app import create_app
from app.config import Settings
from app.state import collaborator
from tests.helpers.environment import IN_CI, make_settings

# uvicorn closes a connection idle for 5 s (its keep-alive timeout) and httpx reuses one idle for up to 5 s:
# a request sent on a connection the server is closing at that moment fails with a ReadError. A client
# that forgets idle connections well before the server does never meets that race.
CLIENT_LIMITS = httpx.Limits(keepalive_expiry=1.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- live server (WebSocket)


@dataclass
class LiveServer:
    base_url: str
    ws_url: str
    http: httpx.AsyncClient
    app: Litestar


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns the signals
        pass


@asynccontextmanager
async def run_server(app: Litestar, **uvicorn_options: Any) -> AsyncIterator[LiveServer]:
    """``uvicorn_options``: more of ``uvicorn.Config``'s (``proxy_headers=False``, say)."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        lifespan="on",
        **uvicorn_options,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    base_url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=CLIENT_LIMITS) as http:
        try:
            yield LiveServer(base_url=base_url, ws_url=f"ws://127.0.0.1:{port}", http=http, app=app)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, timeout=30)


def settings_of(server: LiveServer) -> Any:
    return collaborator(server.app.state, Settings)


# ---------------------------------------------------------------- apps with other settings


async def dispose_engines(app: Litestar) -> None:
    """Close the app's database pool (F14: the app's shutdown leaves it to the garbage collector)."""
    plugin = app.plugins.get(SQLAlchemyPlugin)
    configs = plugin.config if isinstance(plugin.config, list | tuple) else [plugin.config]
    for config in configs:
        await config.get_engine().dispose()


@asynccontextmanager
async def client_with(tmp_path: Path, **overrides: Any) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The real app, on its own SQLite file, with these settings (``login_rate_limit=3``, ...)."""
    directory = tmp_path / f"app-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    app = create_app(make_settings(directory, **overrides))
    try:
        async with AsyncTestClient(app=app) as client:
            yield client
    finally:
        await dispose_engines(app)


@asynccontextmanager
async def server_with(tmp_path: Path, **overrides: Any) -> AsyncIterator[LiveServer]:
    """The real app on a real uvicorn server (for WebSocket), on its own SQLite file."""
    directory = tmp_path / f"server-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    app = create_app(make_settings(directory, **overrides))
    try:
        async with run_server(app) as server:
            yield server
    finally:
        await dispose_engines(app)


# ---------------------------------------------------------------- a Redis server of the test's own


@dataclass
class PrivateRedis:
    """A ``redis-server`` this test started (no persistence), for isolation or for killing it."""

    url: str
    process: subprocess.Popen[bytes]
    command: list[str]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """A new, empty ``redis-server`` on the same port (killing this one first), answering on return."""
        self.kill()
        self.process = _start_redis(self.command, self.url)


def _start_redis(command: list[str], url: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        for _ in range(250):
            try:
                client.ping()
                return process
            except redis.ConnectionError:
                assert process.poll() is None, "redis-server exited at start"
                time.sleep(0.02)
    finally:
        client.close()
    process.kill()
    process.wait(timeout=10)
    raise AssertionError(f"redis-server did not answer on {url}")


@contextmanager
def private_redis_server() -> Iterator[PrivateRedis]:
    """Started on a free port, stopped by its PID afterwards; the shared server is never touched."""
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("redis-server is not installed: CI must run the Redis fault tests")
        pytest.skip("redis-server is not installed")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    url = f"redis://127.0.0.1:{port}/0"
    server = PrivateRedis(url=url, process=_start_redis(command, url), command=command)
    try:
        yield server
    finally:
        server.kill()
