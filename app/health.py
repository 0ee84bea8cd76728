"""``GET /health``: can this process serve, and is anything it depends on impaired?

- 503 ``unavailable``: the database does not answer within ``VMS_DB_TIMEOUT_SECONDS`` (nothing works);
- 200 ``degraded``: the service works with less: the database takes no writes (storage full or read-only;
  reads go on), or Redis is unreachable (events, limits and revocations carry on per process and from the
  database; see the failure contract);
- 200 ``ok`` otherwise.

Writes are probed (app/db/faults.py: a one-page commit on SQLite, a temporary table's first page on
PostgreSQL) at the first check and while the storage is in doubt, so a read-only database is reported
before any write meets it, and it is reported not writable until a probe writes again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
from litestar import Response
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.faults import DatabaseFaults
from app.http.deadline import OWN_DEADLINE
from app.http.routes import get
from app.state import collaborator

Status = Literal["ok", "unavailable"]
# Checks the channels backend's server (Redis PING); None for the in-memory backend, always up.
ChannelsPing = Callable[[], Awaitable[Any]]
# create_app keeps the ping (or None) under this key of the app state.
CHANNELS_PING_STATE_KEY = "channels_ping"


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok", "degraded", "unavailable"]
    database: Status
    database_writable: bool
    channels: Status
    channels_backend: Literal["memory", "redis"]


@get(
    "/health",
    exclude_from_auth=True,
    security=[{}],
    tags=["health"],
    summary="Service health (anyone)",
    description="200 `ok`; 200 `degraded` when the database takes no writes or Redis is unreachable (the "
    "service goes on with less); 503 `unavailable` when the database does not answer.",
    responses={503: ResponseSpec(data_container=Health, description="The database does not answer.")},
    cache=False,
    opt={OWN_DEADLINE: True},  # its waits are bounded below, and it answers a timeout with its own body
)
async def health(db_session: NamedDependency[AsyncSession], state: State) -> Response[Health]:
    faults = collaborator(state, DatabaseFaults)
    timeout = collaborator(state, Settings).db_timeout_seconds
    database: Status = "ok"
    try:
        async with asyncio.timeout(timeout):
            await db_session.execute(text("SELECT 1"))
            faults.answered()
            if faults.storage.active or not faults.probed:
                await faults.check_writes()
    except Exception as exc:
        if faults.met(exc) in (None, "unavailable") or isinstance(exc, TimeoutError):
            database = "unavailable"
    channels: Status = "ok"
    kind: Literal["memory", "redis"] = "memory"
    ping: ChannelsPing | None = state.get(CHANNELS_PING_STATE_KEY)
    if ping is not None:
        kind = "redis"
        try:
            async with asyncio.timeout(timeout):
                await ping()
        except Exception:
            channels = "unavailable"
    if database == "unavailable":
        status: Literal["ok", "degraded", "unavailable"] = "unavailable"
    elif not faults.writable or channels == "unavailable":
        status = "degraded"
    else:
        status = "ok"
    body = Health(
        status=status,
        database=database,
        database_writable=database == "ok" and faults.writable,
        channels=channels,
        channels_backend=kind,
    )
    return Response(body, status_code=503 if status == "unavailable" else 200)
