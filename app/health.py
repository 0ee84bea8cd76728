"""``GET /health``: can this process reach its database and its channels backend?"""

from __future__ import annotations

from typing import Literal

import msgspec
from litestar import Response, get
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

Status = Literal["ok", "unavailable"]


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
async def health(
    db_session: NamedDependency[AsyncSession], channels: NamedDependency[ChannelsPlugin]
) -> Response[Health]:
    database: Status = "ok"
    try:
        await db_session.execute(text("SELECT 1"))
    except Exception:
        database = "unavailable"
    backend = channels._backend
    channels_status: Status = "ok"
    kind: Literal["memory", "redis"] = "memory"
    if not isinstance(backend, MemoryChannelsBackend):  # Redis (imported only when configured)
        kind = "redis"
        try:
            await backend._redis.ping()  # type: ignore[attr-defined]
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
