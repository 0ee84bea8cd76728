from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from advanced_alchemy.filters import LimitOffset, SearchFilter, StatementFilter
from litestar import Controller, HttpMethod, MediaType, Request, Response
from litestar.datastructures import ResponseHeader, State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import HeaderParameter, JSONBody, Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.auth.guards import requires_admin, requires_user
from app.domain.users.models import User
from app.domain.vms.models import VMStatus
from app.domain.vms.reads import VMReads
from app.domain.vms.rows import StoredVM
from app.domain.vms.schemas import OSName, VMCreate, VMRead, VMUpdate
from app.domain.vms.services import VMService
from app.http.conditional import if_none_match_matches
from app.http.openapi import responses_for
from app.http.pagination import (
    ResourceId,
    SortOrder,
    any_of,
    list_route,
    order_filters,
    page_response,
    repeated_filter,
)
from app.http.routes import delete, get, post, route
from app.http.validation import NO_NUL, VISIBLE_TEXT, strict_json_body
from app.state import collaborator

# Bounds on repeated filters keep the IN list, and the query string, small: five statuses exist.
MAX_STATUS_VALUES = 5
MAX_OS_VALUES = 20
# Each os value bounded as a single one always was (OSName validates it; this documents it).
OS_FILTER_ITEM = Schema(type=OpenAPIType.STRING, min_length=1, max_length=100, pattern=VISIBLE_TEXT)
VMSort = Literal["id", "name", "cores", "ram", "disk", "os", "status", "created_at", "updated_at"]

etag_header = ResponseHeader(
    name="ETag",
    description="Version of the VM; send it back in If-Match.",
    value='"1.1"',  # documentation only: gives the header a schema (a string)
    documentation_only=True,
)
IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        max_length=1000,
        description="Only write if the VM still has one of these ETags (strong comparison: a weak "
        '`W/"..."` tag never matches); `*` matches any existing VM.',
    ),
]
IfNoneMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-None-Match",
        max_length=1000,
        description="Answer 304 with no body if the VM still has one of these ETags (or for `*`).",
    ),
]
not_modified = {
    304: ResponseSpec(data_container=None, description="Not modified: the VM still has that ETag.")
}


async def provide_vm_service(state: State) -> VMService:
    return collaborator(state, VMService)


def with_etag(vm: StoredVM, status_code: int = 200) -> Response[VMRead]:
    return Response(content=vm.read, headers={"ETag": vm.etag}, status_code=status_code)


class VMController(Controller):
    path = "/vms"
    tags = ["vms"]  # noqa: RUF012
    dependencies = {"vms": Provide(provide_vm_service)}  # noqa: RUF012

    @list_route(
        summary="List VMs",
        guards=[requires_user],
        responses=responses_for(400, 401),
        change_seq=True,
        repeatable=frozenset({"status", "os"}),
    )
    async def list_vms(
        self,
        state: State,
        db_session: NamedDependency[AsyncSession],
        page: NamedDependency[LimitOffset],
        status: Annotated[
            list[VMStatus] | None,
            repeated_filter(
                "Only VMs in this status; repeat for any of several.", MAX_STATUS_VALUES, VMStatus
            ),
        ] = None,
        os: Annotated[
            list[OSName] | None,
            repeated_filter(
                "Only VMs with exactly this OS; repeat for any of several.", MAX_OS_VALUES, OS_FILTER_ITEM
            ),
        ] = None,
        q: Annotated[
            str | None,
            Parameter(max_length=100, pattern=NO_NUL, description="Search in the name (case-insensitive)."),
        ] = None,
        sort: Annotated[VMSort, Parameter(description="Sort field.")] = "id",
        order: Annotated[SortOrder, Parameter(description="Sort direction.")] = "asc",
    ) -> Response[list[VMRead]]:
        filters: list[StatementFilter] = [page, *order_filters(sort, order)]
        if q:
            filters.append(SearchFilter(field_name="name", value=q, ignore_case=True, escape_wildcards=True))
        filters += [*any_of("status", status), *any_of("os", os)]
        items, total, change_seq = await collaborator(state, VMReads).page(db_session, filters)
        return page_response(items, total, change_seq)

    @get(
        "/{vm_id:int}",
        guards=[requires_user],
        summary="Get a VM",
        response_headers=[etag_header],
        responses={**responses_for(400, 401, 404), **not_modified},
    )
    async def get_vm(
        self, state: State, vm_id: ResourceId, if_none_match: IfNoneMatch = None
    ) -> Response[VMRead]:
        # No session or service here: most reads are answered from memory (app/domain/vms/reads.py).
        found = await collaborator(state, VMReads).one(vm_id)
        if found is None:
            raise NotFoundException(f"VM {vm_id} not found")
        if if_none_match_matches(if_none_match, found.etag):
            return cast(
                "Response[VMRead]", Response(content=b"", status_code=304, headers={"ETag": found.etag})
            )
        # The body is a VMRead, already encoded: Litestar sends bytes as they are.
        response = Response(content=found.body, media_type=MediaType.JSON, headers={"ETag": found.etag})
        return cast("Response[VMRead]", response)

    @post(
        ["/", ""],
        guards=[requires_admin],
        summary="Create a VM (administrador)",
        before_request=strict_json_body(VMCreate),
        response_headers=[etag_header],
        responses=responses_for(400, 401, 403),
    )
    async def create_vm(
        self, request: Request[User, Any, Any], vms: NamedDependency[VMService], data: JSONBody[VMCreate]
    ) -> Response[VMRead]:
        return with_etag(await vms.create_vm(data, actor=request.user), status_code=201)

    @route(
        "/{vm_id:int}",
        http_method=[HttpMethod.PUT, HttpMethod.PATCH],
        guards=[requires_admin],
        summary="Update a VM (administrador; partial, honours If-Match)",
        before_request=strict_json_body(VMUpdate),
        response_headers=[etag_header],
        responses=responses_for(400, 401, 403, 404, 412),
    )
    async def update_vm(
        self,
        request: Request[User, Any, Any],
        vms: NamedDependency[VMService],
        vm_id: ResourceId,
        data: JSONBody[VMUpdate],
        if_match: IfMatch = None,
    ) -> Response[VMRead]:
        return with_etag(await vms.update_vm(vm_id, data, actor=request.user, if_match=if_match))

    @delete(
        "/{vm_id:int}",
        guards=[requires_admin],
        summary="Delete a VM (administrador; honours If-Match)",
        responses=responses_for(400, 401, 403, 404, 412),
    )
    async def delete_vm(
        self,
        request: Request[User, Any, Any],
        vms: NamedDependency[VMService],
        vm_id: ResourceId,
        if_match: IfMatch = None,
    ) -> None:
        await vms.delete_vm(vm_id, actor=request.user, if_match=if_match)
