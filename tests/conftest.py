"""Fixtures: the real app over HTTP (Litestar's async test client) and over WebSocket (a live server).

API tests run on SQLite and on PostgreSQL, realtime tests on the in-memory and on the Redis channels
backend. The PostgreSQL and Redis servers come from VMS_TEST_POSTGRES_URL / VMS_TEST_REDIS_URL (defaults:
the local servers); when one is not reachable its tests are skipped, except under CI, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import redis
import uvicorn
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app import create_app
from app.config import Settings, load_settings

POSTGRES_URL = os.environ.get("VMS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("VMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-1"


def _reachable(kind: str) -> str | None:
    """None when the server answers, else why not."""
    try:
        if kind == "postgres":

            async def probe() -> None:
                connection = await asyncpg.connect(POSTGRES_URL, timeout=3)
                await connection.close()

            asyncio.run(probe())
        else:
            redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except Exception as exc:
        return f"{kind} not reachable ({exc.__class__.__name__}: {exc})"
    return None


_availability: dict[str, str | None] = {}


def require(kind: str) -> None:
    if kind not in _availability:
        _availability[kind] = _reachable(kind)
    reason = _availability[kind]
    if reason is not None:
        if IN_CI:
            pytest.fail(f"{reason}: CI must run the {kind} tests")
        pytest.skip(reason)


# ---------------------------------------------------------------- databases


async def postgres_admin_sql(sql: str) -> None:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextmanager
def scratch_postgres_database(prefix: str) -> Iterator[str]:
    """A database of its own (its asyncpg URL), dropped afterwards, so runs can repeat and overlap."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    asyncio.run(postgres_admin_sql(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
    finally:
        asyncio.run(postgres_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """The test session's PostgreSQL database."""
    require("postgres")
    with scratch_postgres_database("vms_test") as url:
        yield url


async def _truncate_postgres(url: str) -> None:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        exists = await connection.fetchval("SELECT to_regclass('public.user_account') IS NOT NULL")
        if exists:
            await connection.execute("TRUNCATE user_account, virtual_machine RESTART IDENTITY CASCADE")
    finally:
        await connection.close()


def make_settings(
    tmp_path: Any, *, database: str = "sqlite", channels: str = "memory", **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "VMS_BCRYPT_ROUNDS": "4",
        "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
        "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "VMS_ADMIN_NAME": "Admin",
        "VMS_JWT_SECRET_FILE": str(tmp_path / "jwt-secret"),
        "VMS_LOGIN_RATE_LIMIT": "1000",
        "VMS_REDIS_NAMESPACE": f"vms-test-{uuid.uuid4().hex[:8]}",
    }
    if database == "sqlite":
        values["VMS_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'vms.sqlite3'}"
    else:
        values["VMS_DATABASE_URL"] = database
    if channels == "redis":
        values["VMS_REDIS_URL"] = REDIS_URL
    values.update({f"VMS_{key.upper()}": str(value) for key, value in overrides.items()})
    return load_settings(values)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """``sqlite`` (a fresh file per test) or the URL of the session's PostgreSQL database, emptied."""
    if request.param == "sqlite":
        return "sqlite"
    url: str = request.getfixturevalue("postgres_database")
    asyncio.run(_truncate_postgres(url))
    return url


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def channels_backend(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        require("redis")
    return str(request.param)


# ---------------------------------------------------------------- HTTP


@pytest.fixture
def settings(tmp_path: Any, database_url: str) -> Settings:
    return make_settings(tmp_path, database=database_url)


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Account:
    id: int
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


async def login(client: Any, email: str, password: str) -> str:
    response = await client.post("/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def create_account(
    client: Any, admin: Account | None, *, rol: str = "cliente", name: str = ""
) -> Account:
    email = f"{rol}-{uuid.uuid4().hex[:8]}@example.com"
    password = f"pw-{uuid.uuid4().hex[:12]}"
    body = {"name": name or email.split("@")[0], "email": email, "password": password, "rol": rol}
    response = await client.post("/users", json=body, headers=admin.headers if admin else {})
    assert response.status_code == 201, response.text
    return Account(
        id=response.json()["id"], email=email, password=password, token=await login(client, email, password)
    )


@pytest.fixture
async def admin(client: AsyncTestClient[Litestar]) -> Account:
    """The administrador created at start from VMS_ADMIN_EMAIL / VMS_ADMIN_PASSWORD."""
    token = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    me = (await client.get("/users/me", headers=bearer(token))).json()
    return Account(id=me["id"], email=ADMIN_EMAIL, password=ADMIN_PASSWORD, token=token)


@pytest.fixture
async def cliente(client: AsyncTestClient[Litestar], admin: Account) -> Account:
    return await create_account(client, admin)


VM_BODY = {"name": "web-01", "cores": 2, "ram": 2048, "disk": 40, "os": "Debian 12", "status": "running"}


async def create_vm(client: Any, admin: Account, **fields: Any) -> dict[str, Any]:
    response = await client.post("/vms", json={**VM_BODY, **fields}, headers=admin.headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# ---------------------------------------------------------------- live server (WebSocket)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    base_url: str
    ws_url: str
    http: httpx.AsyncClient
    app: Litestar


@pytest.fixture
async def live_server(tmp_path: Any, channels_backend: str) -> AsyncIterator[LiveServer]:
    """The app on a real uvicorn server in this event loop, on SQLite and the chosen channels backend."""
    app = create_app(make_settings(tmp_path, channels=channels_backend))
    async with run_server(app) as server:
        yield server


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns the signals
        pass


@asynccontextmanager
async def run_server(app: Litestar) -> AsyncIterator[LiveServer]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio", lifespan="on"
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
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        try:
            yield LiveServer(base_url=base_url, ws_url=f"ws://127.0.0.1:{port}", http=http, app=app)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, timeout=30)


def decode(message: str | bytes) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.json.decode(message)
    return result


# ---------------------------------------------------------------- a Redis server of the test's own


@dataclass
class PrivateRedis:
    """A ``redis-server`` this test started (no persistence), for isolation or for killing it."""

    url: str
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """Started on a free port, stopped by its PID afterwards; the shared server is never touched."""
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("redis-server is not installed: CI must run the Redis fault tests")
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = PrivateRedis(url=f"redis://127.0.0.1:{port}/0", process=process)
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=1)
        for _ in range(250):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert process.poll() is None, "redis-server exited at start"
                time.sleep(0.02)
        client.close()
        yield server
    finally:
        server.kill()
