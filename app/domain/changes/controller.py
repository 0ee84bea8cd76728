"""``GET /changes`` and ``GET /vms/{id}/changes``: the change log's history (administradores)."""

from __future__ import annotations

from typing import Annotated

from advanced_alchemy.filters import LimitOffset
from litestar import Controller, Response
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import Parameter
from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.transactions import Action
from app.domain.auth.guards import requires_admin
from app.domain.changes.models import ChangeEntry, LoggedEntity
from app.domain.changes.schemas import ChangeRead
from app.domain.changes.services import read_changes
from app.domain.vms.models import VM_ENTITY, VirtualMachine
from app.http.openapi import responses_for
from app.http.pagination import MAX_ID, ResourceId, SortOrder, list_route, page_response

Order = Annotated[SortOrder, Parameter(description="By seq: asc (oldest first) or desc.")]


class ChangeController(Controller):
    tags = ["changes"]  # noqa: RUF012

    @list_route(
        path="/changes",
        summary="The change log (administrador)",
        guards=[requires_admin],
        responses=responses_for(400, 401, 403),
    )
    async def list_changes(
        self,
        db_session: NamedDependency[AsyncSession],
        page: NamedDependency[LimitOffset],
        entity: Annotated[
            LoggedEntity | None, Parameter(description="Only changes to VMs, or to users.")
        ] = None,
        entity_id: Annotated[
            int | None,
            Parameter(ge=1, le=MAX_ID, description="Only this VM or user."),
        ] = None,
        action: Annotated[Action | None, Parameter(description="Only this kind of change.")] = None,
        actor_id: Annotated[
            int | None, Parameter(ge=1, le=MAX_ID, description="Only changes by this user.")
        ] = None,
        since: Annotated[
            int | None,
            # schema_extra: Litestar leaves a falsy ge (0) out of an optional parameter's schema.
            Parameter(ge=0, le=MAX_ID, description="Only after this seq.", schema_extra={"minimum": 0}),
        ] = None,
        order: Order = "asc",
    ) -> Response[list[ChangeRead]]:
        conditions: list[ColumnElement[bool]] = []
        if entity is not None:
            conditions.append(ChangeEntry.entity == entity)
        if entity_id is not None:
            conditions.append(ChangeEntry.entity_id == entity_id)
        if action is not None:
            conditions.append(ChangeEntry.action == action)
        if actor_id is not None:
            conditions.append(ChangeEntry.actor_id == actor_id)
        if since is not None:
            conditions.append(ChangeEntry.seq > since)
        items, total = await read_changes(
            db_session, conditions, limit=page.limit, offset=page.offset, descending=order == "desc"
        )
        return page_response(items, total)

    @list_route(
        path="/vms/{vm_id:int}/changes",
        summary="One VM's history, also after it was deleted (administrador)",
        guards=[requires_admin],
        responses=responses_for(400, 401, 403, 404),
    )
    async def vm_history(
        self,
        db_session: NamedDependency[AsyncSession],
        page: NamedDependency[LimitOffset],
        vm_id: ResourceId,
        order: Order = "asc",
    ) -> Response[list[ChangeRead]]:
        conditions = [ChangeEntry.entity == VM_ENTITY, ChangeEntry.entity_id == vm_id]
        items, total = await read_changes(
            db_session, conditions, limit=page.limit, offset=page.offset, descending=order == "desc"
        )
        if not total and await db_session.get(VirtualMachine, vm_id) is None:
            raise NotFoundException(f"VM {vm_id} has no history: it never existed")
        return page_response(items, total)
