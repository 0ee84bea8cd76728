"""API2: the per-account login throttle. Failures for one email, from any number of addresses, lock it.

Real clients on a live uvicorn server, each bound to its own loopback address (all of 127.0.0.0/8 is
local), so the per-address limit sees many callers while the per-account limit sees one account.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    LiveServer,
    PrivateRedis,
    require,
    server_with,
)

LIMIT = 3
WINDOW_SECONDS = 15 * 60
_addresses = iter(range(2, 250))


def next_address() -> str:
    """A loopback address no earlier client of this test module used (127.0.0.2, 127.0.0.3, ...)."""
    return f"127.0.0.{next(_addresses, 2)}"


async def attempt(
    server: LiveServer, email: str, password: str, address: str | None = None
) -> httpx.Response:
    """One POST /login from its own client address."""
    transport = httpx.AsyncHTTPTransport(local_address=address or next_address())
    async with httpx.AsyncClient(base_url=server.base_url, transport=transport, timeout=30) as client:
        return await client.post("/login", json={"email": email, "password": password})


def assert_throttled(response: httpx.Response) -> int:
    """429 with Retry-After (seconds left in the window) and the usual JSON error body; returns the wait."""
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 0 < retry_after <= WINDOW_SECONDS
    body = response.json()
    assert body["status_code"] == 429
    assert isinstance(body["detail"], str)
    assert "access_token" not in body
    return retry_after


def server_on(tmp_path: Path, **overrides: Any) -> AbstractAsyncContextManager[LiveServer]:
    """A live server whose account limit is ``LIMIT`` unless said otherwise."""
    overrides.setdefault("login_account_failures", LIMIT)
    return server_with(tmp_path, **overrides)


@pytest.fixture
async def server(tmp_path: Path, database_url: str) -> AsyncIterator[LiveServer]:
    """SQLite or PostgreSQL, in-memory counters."""
    async with server_on(tmp_path, database=database_url, bcrypt_rounds=10) as live:
        yield live


async def test_failures_from_many_addresses_lock_the_account_even_for_the_right_password(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[bytes] = []
    checkpw = bcrypt.checkpw

    def counted(password: bytes, hashed: bytes) -> bool:
        checks.append(password)
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counted)
    for _ in range(LIMIT):
        response = await attempt(server, ADMIN_EMAIL, "wrong-password")
        assert response.status_code == 401, response.text
    assert len(checks) == LIMIT
    locked = await attempt(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert_throttled(locked)
    # No bcrypt for a locked account (counted, not timed: a count is exact on a busy machine).
    assert len(checks) == LIMIT
    assert_throttled(await attempt(server, ADMIN_EMAIL.upper(), ADMIN_PASSWORD))  # the same account


async def test_unknown_and_existing_emails_are_answered_alike(server: LiveServer) -> None:
    """No enumeration: the same statuses, details and headers whether or not the account exists."""
    outcomes = []
    for email in (ADMIN_EMAIL, f"nobody-{uuid.uuid4().hex[:8]}@example.com"):
        responses = [await attempt(server, email, "wrong-password") for _ in range(LIMIT + 1)]
        outcomes.append([(r.status_code, r.json()["detail"], "retry-after" in r.headers) for r in responses])
    assert outcomes[0] == outcomes[1]
    assert [status for status, _, _ in outcomes[0]] == [401] * LIMIT + [429]


async def test_a_success_before_the_limit_clears_the_count(server: LiveServer) -> None:
    for _ in range(2):
        for _ in range(LIMIT - 1):
            assert (await attempt(server, ADMIN_EMAIL, "wrong-password")).status_code == 401
        assert (await attempt(server, ADMIN_EMAIL, ADMIN_PASSWORD)).status_code == 200


async def test_another_email_is_unaffected(server: LiveServer) -> None:
    victim = f"victim-{uuid.uuid4().hex[:8]}@example.com"
    for _ in range(LIMIT):
        assert (await attempt(server, victim, "wrong-password")).status_code == 401
    assert_throttled(await attempt(server, victim, "wrong-password"))
    assert (await attempt(server, ADMIN_EMAIL, ADMIN_PASSWORD)).status_code == 200


@pytest.mark.redis
async def test_the_count_is_shared_by_two_instances_on_one_redis_namespace(tmp_path: Path) -> None:
    require("redis")
    shared = {
        "channels": "redis",
        "redis_namespace": f"vms-test-{uuid.uuid4().hex[:8]}",
        "jwt_secret": uuid.uuid4().hex + uuid.uuid4().hex,
    }
    async with server_on(tmp_path, **shared) as first, server_on(tmp_path, **shared) as second:
        for index in range(LIMIT):
            response = await attempt((first, second)[index % 2], ADMIN_EMAIL, "wrong-password")
            assert response.status_code == 401, response.text
        assert_throttled(await attempt(second, ADMIN_EMAIL, ADMIN_PASSWORD))
        assert_throttled(await attempt(first, ADMIN_EMAIL, ADMIN_PASSWORD))


async def test_logins_go_on_when_redis_dies(
    tmp_path: Path, private_redis: PrivateRedis, capfd: pytest.CaptureFixture[str]
) -> None:
    """A Redis server this test started, then killed: 200, 401 or 429, never a 500; one line in the log
    (the login limits and the bus share one view of Redis)."""
    async with server_on(tmp_path, channels="redis", redis_url=private_redis.url) as server:
        assert (await attempt(server, ADMIN_EMAIL, ADMIN_PASSWORD)).status_code == 200
        assert (await attempt(server, ADMIN_EMAIL, "wrong-password")).status_code == 401
        capfd.readouterr()
        private_redis.kill()
        statuses = []
        for _ in range(2):
            statuses.append((await attempt(server, ADMIN_EMAIL, ADMIN_PASSWORD)).status_code)
            for _ in range(LIMIT + 1):
                statuses.append((await attempt(server, ADMIN_EMAIL, "wrong-password")).status_code)
        assert set(statuses) <= {200, 401, 429}, statuses
        # Per-process counters took over: the account is still locked after LIMIT failures.
        assert statuses[: LIMIT + 2] == [200] + [401] * LIMIT + [429], statuses
        assert_throttled(await attempt(server, ADMIN_EMAIL, ADMIN_PASSWORD))
        await asyncio.sleep(0)
        out, err = capfd.readouterr()
    lost = [line for line in (out + err).splitlines() if "Redis: lost" in line]
    assert len(lost) == 1, (out + err)[-3000:]  # one for the process, not one per component or request
