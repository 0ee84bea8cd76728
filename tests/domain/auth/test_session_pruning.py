"""Sessions no token can use any more are deleted in the background, with their refresh tokens.

Ages are made by moving a session's timestamps back in the database itself; everything else goes through
the real app, whose pruning runs every second here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app import create_app
from app.config import Settings
from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    assert_error,
    bearer,
    dispose_engines,
    expect,
    get_me,
    make_settings,
    session_of,
)

PRUNED_SECONDS = 10.0
"""How long the test waits for a run of the pruning (every second here) to delete what it should."""
ACCESS_TTL = timedelta(minutes=15)


@asynccontextmanager
async def app_and_database(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Any, AsyncEngine]]:
    settings: Settings = make_settings(tmp_path, database=database_url, session_prune_seconds=1)
    app = create_app(settings)
    engine = create_async_engine(settings.database_url)
    try:
        async with AsyncTestClient(app=app) as client:
            yield client, engine
    finally:
        await engine.dispose()
        await dispose_engines(app)


async def sign_in(client: Any) -> dict[str, Any]:
    response = await client.post("/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    return dict(expect(response, 200))


async def set_column(engine: AsyncEngine, session_id: int, column: str, value: datetime) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(f"UPDATE auth_session SET {column} = :value WHERE id = :id"),  # noqa: S608 (a test's own names)
            {"value": value, "id": session_id},
        )


async def rows(engine: AsyncEngine, table: str, column: str) -> set[int]:
    async with engine.connect() as connection:
        return set((await connection.execute(text(f"SELECT {column} FROM {table}"))).scalars())  # noqa: S608


async def wait_pruned(engine: AsyncEngine, session_ids: set[int]) -> None:
    deadline = time.monotonic() + PRUNED_SECONDS
    while left := session_ids & await rows(engine, "auth_session", "id"):
        assert time.monotonic() < deadline, f"sessions {left} still there after {PRUNED_SECONDS} s"
        await asyncio.sleep(0.2)


async def test_sessions_no_token_can_use_are_pruned_with_their_refresh_tokens(
    tmp_path: Path, database_url: str
) -> None:
    """Failed before: session rows and their refresh tokens were never deleted."""
    long_ago = datetime.now(UTC) - ACCESS_TTL - timedelta(minutes=5)
    async with app_and_database(tmp_path, database_url) as (client, engine):
        names = ["ended long ago", "ended now", "refresh expired long ago", "refresh expired now", "live"]
        pairs = {name: await sign_in(client) for name in names}
        ids = {name: session_of(pair["access_token"]) for name, pair in pairs.items()}
        for name in names:  # each token checked once: the process caches the state of its session
            expect(await get_me(client, pairs[name]["access_token"]), 200)
        for name in ("ended long ago", "ended now"):
            expect(await client.post("/logout", headers=bearer(pairs[name]["access_token"])), 204)
        await set_column(engine, ids["ended long ago"], "ended_at", long_ago)
        await set_column(engine, ids["refresh expired long ago"], "refresh_expires_at", long_ago)
        await set_column(engine, ids["refresh expired now"], "refresh_expires_at", datetime.now(UTC))
        tokens_before = await rows(engine, "auth_refresh_token", "session_id")

        pruned = {ids["ended long ago"], ids["refresh expired long ago"]}
        await wait_pruned(engine, pruned)
        # A session ended or expired within an access token's life stays: its tokens may still be about.
        assert await rows(engine, "auth_session", "id") >= set(ids.values()) - pruned
        assert await rows(engine, "auth_refresh_token", "session_id") == tokens_before - pruned
        # A token whose session is gone is refused as revoked (its access token has not expired).
        body = assert_error(await get_me(client, pairs["refresh expired long ago"]["access_token"]), 401)
        assert "revoked" in body["detail"].lower(), body
        assert_error(
            await client.post(
                "/login/refresh", json={"refresh_token": pairs["ended long ago"]["refresh_token"]}
            ),
            401,
        )
        expect(await get_me(client, pairs["live"]["access_token"]), 200)
