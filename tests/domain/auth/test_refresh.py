"""POST /login/refresh: when a refresh token expires, how long it lives, and what a bad request is told.

Rotation and reuse detection are in test_sessions.py; the cookie a browser may keep it in is in
test_refresh_cookie.py.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app import create_app
from app.config import Settings
from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Account,
    assert_error,
    dispose_engines,
    expect,
    get_me,
    make_settings,
    session_of,
)


async def sign_in(client: Any, email: str, password: str) -> dict[str, Any]:
    return dict(expect(await client.post("/login", json={"email": email, "password": password}), 200))


async def refresh(client: Any, refresh_token: str) -> Any:
    return await client.post("/login/refresh", json={"refresh_token": refresh_token})


async def test_an_expired_refresh_token_is_refused_and_nothing_is_issued(
    client: Any, cliente: Account, settings: Settings
) -> None:
    pair = await sign_in(client, cliente.email, cliente.password)
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as connection:  # as if it had not been used for its whole lifetime
            await connection.execute(
                text("UPDATE auth_session SET refresh_expires_at = :at WHERE id = :id"),
                {"at": datetime.now(UTC) - timedelta(seconds=1), "id": session_of(pair["access_token"])},
            )
        count = text("SELECT count(*), count(spent_at) FROM auth_refresh_token")
        async with engine.connect() as connection:
            before = (await connection.execute(count)).one()
        response = await refresh(client, pair["refresh_token"])
        async with engine.connect() as connection:
            after = (await connection.execute(count)).one()
    finally:
        await engine.dispose()
    body = assert_error(response, 401)
    assert "expired" in body["detail"], body
    assert pair["refresh_token"] not in response.text
    assert hashlib.sha256(pair["refresh_token"].encode()).hexdigest() not in response.text
    assert after == before  # no token issued, and the presented one not spent either
    # Its access token is not affected until it expires itself.
    expect(await get_me(client, pair["access_token"]), 200)


async def test_the_refresh_lifetime_setting_reaches_the_answers_and_the_session(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, refresh_ttl_days=7, token_ttl_minutes=5)
    app = create_app(settings)
    engine = create_async_engine(settings.database_url)
    try:
        async with AsyncTestClient(app=app) as client:
            first = await sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
            assert (first["expires_in"], first["refresh_expires_in"]) == (5 * 60, 7 * 86_400)
            second = expect(await refresh(client, first["refresh_token"]), 200)
            assert (second["expires_in"], second["refresh_expires_in"]) == (5 * 60, 7 * 86_400)
        query = text("SELECT refresh_expires_at FROM auth_session WHERE id = :id")
        async with engine.connect() as connection:
            stored = (
                await connection.execute(query, {"id": session_of(second["access_token"])})
            ).scalar_one()
    finally:
        await engine.dispose()
        await dispose_engines(app)
    expires = stored if isinstance(stored, datetime) else datetime.fromisoformat(stored)
    left = expires.replace(tzinfo=expires.tzinfo or UTC) - datetime.now(UTC)
    assert timedelta(days=7) - timedelta(minutes=5) < left <= timedelta(days=7), left
