"""Revocation is durable, and every refusal says why.

A logout ends the token's sign-in session in the database, so neither a restart nor a second process
sharing the database re-admits the token. A 401 names its reason (missing, malformed, expired, revoked) and,
when a token was presented, carries RFC 6750's ``WWW-Authenticate: Bearer error="invalid_token"``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app import create_app
from app.config import Settings
from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PrivateRedis,
    assert_error,
    bearer,
    dispose_engines,
    expect,
    get_me,
    login,
    make_settings,
    require,
    resign,
)

INVALID_TOKEN_CHALLENGE = 'Bearer error="invalid_token"'


async def test_a_logout_outlives_a_restart(tmp_path: Path, database_url: str) -> None:
    """Failed before: revoked token ids lived in memory, so a restarted service accepted them again."""
    settings = make_settings(tmp_path, database=database_url)
    first = create_app(settings)
    async with AsyncTestClient(app=first) as client:
        revoked = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        kept = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        expect(await client.post("/logout", headers=bearer(revoked)), 204)
    await dispose_engines(first)

    second = create_app(settings)  # the same database and secret: a restart
    try:
        async with AsyncTestClient(app=second) as client:
            body = assert_error(await get_me(client, revoked), 401)
            assert "revoked" in body["detail"].lower(), body
            assert expect(await get_me(client, kept), 200)["email"] == ADMIN_EMAIL
    finally:
        await dispose_engines(second)


@pytest.mark.redis
async def test_a_logout_through_one_process_is_refused_by_another_at_once(
    tmp_path: Path, database_url: str
) -> None:
    """Two app instances share the database and Redis (as two workers do): A's logout binds B at once."""
    require("redis")
    settings = make_settings(tmp_path, database=database_url, channels="redis")
    a, b = create_app(settings), create_app(settings)
    try:
        async with AsyncTestClient(app=a) as client_a, AsyncTestClient(app=b) as client_b:
            token = await login(client_a, ADMIN_EMAIL, ADMIN_PASSWORD)
            expect(await get_me(client_b, token), 200)
            expect(await client_a.post("/logout", headers=bearer(token)), 204)
            assert_error(await get_me(client_b, token), 401)
    finally:
        await dispose_engines(a)
        await dispose_engines(b)


@pytest.mark.redis
async def test_a_logout_does_not_depend_on_redis(
    tmp_path: Path, database_url: str, private_redis: PrivateRedis
) -> None:
    """A logs out through its Redis, which then dies; B, started on the same database while Redis is
    unreachable, refuses the token, and so does C, with no Redis at all: the revocation is in the database.
    (Its predecessor looked for a key in a private dict of the app's stores, and could not fail.)"""
    settings = make_settings(tmp_path, database=database_url, redis_url=private_redis.url)
    a = create_app(settings)
    try:
        async with AsyncTestClient(app=a) as client:
            token = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
            kept = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
            expect(await client.post("/logout", headers=bearer(token)), 204)
            private_redis.kill()
            b = create_app(settings)
            try:
                async with AsyncTestClient(app=b) as other:
                    assert "revoked" in assert_error(await get_me(other, token), 401)["detail"].lower()
                    expect(await get_me(other, kept), 200)
                    private_redis.restart()  # empty: what Redis held is gone; B and A stop promptly
            finally:
                await dispose_engines(b)
    finally:
        await dispose_engines(a)
    c = create_app(make_settings(tmp_path, database=database_url))
    try:
        async with AsyncTestClient(app=c) as client:
            assert "revoked" in assert_error(await get_me(client, token), 401)["detail"].lower()
            expect(await get_me(client, kept), 200)
    finally:
        await dispose_engines(c)


# ---------------------------------------------------------------- 401 reasons


def _assert_401(response: Any, reason: str, *, presented: bool) -> None:
    body = assert_error(response, 401)
    assert reason in body["detail"].lower(), body
    challenge = response.headers.get("www-authenticate")
    if presented:
        assert challenge == INVALID_TOKEN_CHALLENGE, response.headers
    else:
        assert challenge == "Bearer", response.headers


async def test_every_401_says_why(client: Any, settings: Settings) -> None:
    """Failed before: an expired token read "Invalid token", and no 401 carried ``error="invalid_token"``."""
    token = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    past = datetime.now(UTC) - timedelta(minutes=10)
    _assert_401(await client.get("/users/me"), "not authenticated", presented=False)
    _assert_401(await get_me(client, "not-a-jwt"), "malformed", presented=True)
    _assert_401(await get_me(client, token[:-4] + "AAAA"), "malformed", presented=True)
    expired = resign(
        settings, token, iat=int(past.timestamp()), exp=int((past + timedelta(minutes=5)).timestamp())
    )
    _assert_401(await get_me(client, expired), "expired", presented=True)
    expect(await client.post("/logout", headers=bearer(token)), 204)
    _assert_401(await get_me(client, token), "revoked", presented=True)
    # a token that was once verified and is then presented again after it expired is told so too
    short = resign(
        settings, await login(client, ADMIN_EMAIL, ADMIN_PASSWORD), exp=int(datetime.now(UTC).timestamp()) + 1
    )
    expect(await get_me(client, short), 200)
    await asyncio.sleep(1.5)
    _assert_401(await get_me(client, short), "expired", presented=True)
