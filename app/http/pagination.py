"""List query parameters shared by every collection route, turned into Advanced Alchemy filters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar, get_args

from advanced_alchemy.filters import CollectionFilter, LimitOffset, OrderBy, StatementFilter
from litestar import Request, Response
from litestar.datastructures import ResponseHeader
from litestar.di import Provide
from litestar.exceptions import ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import Parameter
from litestar.types import Guard

from app.http.routes import get

T = TypeVar("T")

MAX_PAGE_SIZE = 1000
MAX_OFFSET = 2**31 - 1
TOTAL_COUNT_HEADER = "X-Total-Count"
CHANGE_SEQ_HEADER = "X-Change-Seq"

total_count_header = ResponseHeader(
    name=TOTAL_COUNT_HEADER,
    description="Number of items matching the filters, ignoring limit and offset.",
    value="0",  # documentation only: gives the header a schema (a string of digits)
    documentation_only=True,
    required=True,
)

change_seq_header = ResponseHeader(
    name=CHANGE_SEQ_HEADER,
    description="Seq of the last change this list reflects: subscribe with ?since=<it> to miss nothing.",
    value="0",  # documentation only: gives the header a schema (a string of digits)
    documentation_only=True,
    required=True,
)

SortOrder = Literal["asc", "desc"]
# Ids are BIGINT on PostgreSQL: anything larger is refused before it reaches the database.
MAX_ID = 2**63 - 1
# Litestar writes `le` into the schema as a float, and float(2**63 - 1) == 2**63: say it exactly.
ResourceId = Annotated[
    int,
    Parameter(ge=1, le=MAX_ID, description="Resource id.", schema_extra={"minimum": 1, "maximum": MAX_ID}),
]


def provide_limit_offset(
    limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE_SIZE, description="Page size (at most 1000).")] = 100,
    offset: Annotated[int, Parameter(ge=0, le=MAX_OFFSET, description="Items to skip.")] = 0,
) -> LimitOffset:
    return LimitOffset(limit=limit, offset=offset)


def order_filters(sort: str, order: SortOrder) -> list[StatementFilter]:
    # A stable tie-breaker on id keeps pages from overlapping when the sort column has duplicates.
    filters: list[StatementFilter] = [OrderBy(field_name=sort, sort_order=order)]
    if sort != "id":
        filters.append(OrderBy(field_name="id", sort_order=order))
    return filters


def list_route(
    *,
    summary: str,
    guards: list[Guard],
    responses: dict[int, Any],
    path: str | None = None,
    change_seq: bool = False,
    repeatable: frozenset[str] = frozenset(),
) -> HTTPRouteHandler:
    """The ``GET`` of a collection: with and without the trailing slash (no redirect), a ``page``
    dependency (``limit``, ``offset``) and ``X-Total-Count``; answer with :func:`page_response`.

    Only the ``repeatable`` filters may be given more than once: Litestar would silently keep one value
    of any other (``?q=a&q=b``), answering a question the client did not ask."""

    async def refuse_repeats(request: Request[Any, Any, Any]) -> None:
        for key in request.query_params:
            if key not in repeatable and len(request.query_params.getall(key)) > 1:
                raise ValidationException(f"{key}: may be given only once")

    return get(
        ["/", ""] if path is None else [path, path + "/"],
        before_request=refuse_repeats,
        guards=guards,
        summary=summary,
        dependencies={"page": Provide(provide_limit_offset, sync_to_thread=False)},
        response_headers=[total_count_header, change_seq_header] if change_seq else [total_count_header],
        responses=responses,
    )


def page_response(items: list[T], total: int, change_seq: int | None = None) -> Response[list[T]]:
    headers = {TOTAL_COUNT_HEADER: str(total)}
    if change_seq is not None:
        headers[CHANGE_SEQ_HEADER] = str(change_seq)
    return Response(content=items, headers=headers)


def any_of(field: str, values: Sequence[object] | None) -> list[StatementFilter]:
    """``field IN (values)`` for a repeated query filter (``?status=a&status=b`` means either).

    Nothing when the filter is absent. Duplicates are dropped so the IN list stays as short as the
    distinct values asked for; one value matches exactly what ``field = value`` did.
    """
    if not values:
        return []
    return [CollectionFilter(field_name=field, values=list(dict.fromkeys(values)))]


def repeated_filter(description: str, max_items: int, items: Schema | Any) -> Any:
    """The Parameter of an optional repeated query filter (``list[X] | None``), documented as an array.

    ``items`` is the item schema, or a Literal whose values it enumerates. Litestar would write the type
    as ``oneOf: [array, null]`` with ``maxItems`` beside the ``oneOf`` and no bounds on the items; a query
    parameter is never null, and Schemathesis, mutating that wrapper, sent values that serialise back
    into valid queries and then reported them accepted. Each item is still validated by its annotation.
    """
    if not isinstance(items, Schema):
        items = Schema(type=OpenAPIType.STRING, enum=list(get_args(items)))
    return Parameter(
        description=description,
        max_items=max_items,
        schema_extra={"one_of": None, "type": OpenAPIType.ARRAY, "items": items, "max_items": max_items},
    )
