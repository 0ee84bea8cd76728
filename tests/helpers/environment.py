"""The servers and settings the tests run against: PostgreSQL, Redis, and the app's settings for a test.

The PostgreSQL and Redis servers come from VMS_TEST_POSTGRES_URL / VMS_TEST_REDIS_URL (defaults: the local
servers); when one is not reachable its tests are skipped, except under CI, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest
import redis

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


async def truncate_postgres(url: str) -> None:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        if await connection.fetchval("SELECT to_regclass('public.user_account') IS NOT NULL"):
            await connection.execute("TRUNCATE user_account, virtual_machine RESTART IDENTITY CASCADE")
        # The log too: an old entry would describe a new row that got its id.
        if await connection.fetchval("SELECT to_regclass('public.change_log') IS NOT NULL"):
            await connection.execute("TRUNCATE change_log")
            await connection.execute("UPDATE change_log_head SET last_seq = 0, pruned_through = 0")
    finally:
        await connection.close()


# ---------------------------------------------------------------- settings


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
