"""Fixtures: the real app over HTTP (Litestar's async test client) and over WebSocket (a live server).

API tests run on SQLite and on PostgreSQL, realtime tests on the in-memory and on the Redis channels
backend. The PostgreSQL and Redis servers come from VMS_TEST_POSTGRES_URL / VMS_TEST_REDIS_URL (defaults:
the local servers); when one is not reachable its tests are skipped, except under CI, where they fail.
The plain helpers these fixtures use, and the tests share, are in ``tests.helpers``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app import create_app
from app.config import Settings
from tests.helpers import (
    Account,
    LiveServer,
    PrivateRedis,
    create_account,
    make_settings,
    private_redis_server,
    require,
    run_server,
    scratch_postgres_database,
    sign_in_admin,
    truncate_postgres,
)

# ---------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """The test session's PostgreSQL database."""
    require("postgres")
    with scratch_postgres_database("vms_test") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """``sqlite`` (a fresh file per test) or the URL of the session's PostgreSQL database, emptied."""
    if request.param == "sqlite":
        return "sqlite"
    url: str = request.getfixturevalue("postgres_database")
    asyncio.run(truncate_postgres(url))
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


@pytest.fixture
async def admin(client: AsyncTestClient[Litestar]) -> Account:
    """The administrador created at start from VMS_ADMIN_EMAIL / VMS_ADMIN_PASSWORD."""
    return await sign_in_admin(client)


@pytest.fixture
async def cliente(client: AsyncTestClient[Litestar], admin: Account) -> Account:
    return await create_account(client, admin)


# ---------------------------------------------------------------- live server (WebSocket)


@pytest.fixture
async def live_server(tmp_path: Any, channels_backend: str) -> AsyncIterator[LiveServer]:
    """The app on a real uvicorn server in this event loop, on SQLite and the chosen channels backend."""
    app = create_app(make_settings(tmp_path, channels=channels_backend))
    async with run_server(app) as server:
        yield server


# ---------------------------------------------------------------- a Redis server of the test's own


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """Started on a free port, stopped by its PID afterwards; the shared server is never touched."""
    with private_redis_server() as server:
        yield server
