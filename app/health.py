"""``GET /health``: can this process reach its database and its channels backend?"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
from litestar import Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

Status = Literal["ok", "unavailable"]
# Checks the channels backend's server (Redis PING); None for the in-memory backend, always up.
ChannelsPing = Callable[[], Awaitable[Any]]
# create_app keeps the ping (or None) under this key of the app state.
CHANNELS_PING_STATE_KEY = "channels_ping"


class Health(msgspec.Struct, kw_only=True):
    status: Status
    database: Status
    channels: Status
    channels_backend: Literal["memory", "redis"]


@get(
    "/health",
    exclude_from_auth=True,
    security=[{}],
    tags=["health"],
    summary="Service health (anyone)",
    responses={503: ResponseSpec(data_container=Health, description="A dependency is down.")},
    cache=False,
)
async def health(db_session: NamedDependency[AsyncSession], state: State) -> Response[Health]:
    database: Status = "ok"
    try:
        await db_session.execute(text("SELECT 1"))
    except Exception:
        database = "unavailable"
    ping: ChannelsPing | None = state.get(CHANNELS_PING_STATE_KEY)
    channels_status: Status = "ok"
    kind: Literal["memory", "redis"] = "memory"
    if ping is not None:
        kind = "redis"
        try:
            await ping()
        except Exception:
            channels_status = "unavailable"
    healthy = database == "ok" and channels_status == "ok"
    body = Health(
        status="ok" if healthy else "unavailable",
        database=database,
        channels=channels_status,
        channels_backend=kind,
    )
    return Response(body, status_code=200 if healthy else 503)
