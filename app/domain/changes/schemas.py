"""Wire shapes of the change log: one entry as ``GET /changes`` and ``GET /vms/{id}/changes`` answer it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from msgspec import Meta, Struct

from app.context import Source
from app.db.transactions import Action
from app.domain.changes.models import LoggedEntity

EXAMPLE_VM = {
    "id": 7,
    "name": "web-01",
    "cores": 4,
    "ram": 8192,
    "disk": 100,
    "os": "Debian 12",
    "status": "running",
    "created_at": "2026-12-01T09:00:00+00:00",
    "updated_at": "2026-12-01T09:30:00+00:00",
}


class ChangeRead(Struct, kw_only=True):
    seq: Annotated[int, Meta(description="Place in the log; increases in commit order.", examples=[42])]
    at: datetime
    entity: LoggedEntity
    entity_id: int
    action: Action
    actor_id: Annotated[int | None, Meta(description="Who made it; null for the system.", examples=[1])]
    source: Source
    request_id: Annotated[str | None, Meta(description="X-Request-ID of the request that made it.")]
    before: Annotated[
        dict[str, Any] | None,
        Meta(
            description="The public representation before the change; null for a creation.",
            examples=[EXAMPLE_VM],
        ),
    ]
    after: Annotated[
        dict[str, Any] | None,
        Meta(
            description="The public representation after the change; null for a deletion.",
            examples=[{**EXAMPLE_VM, "status": "stopped", "updated_at": "2026-12-01T10:00:00+00:00"}],
        ),
    ]
