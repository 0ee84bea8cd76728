"""One error shape everywhere (Litestar's ``{status_code, detail, extra}``), and no internals in it.

Validation messages name every offending field in ``detail``, in words (app/http/validation.py); repository
and database errors become 404 or 409; a database fault (unreachable, too slow, storage full or read-only:
app/db/faults.py) becomes 503 with ``Retry-After`` and one log line per outage, not a traceback per
request; anything else unexpected becomes a bare 500 whose details only reach the log.
"""

from __future__ import annotations

from types import UnionType
from typing import Any, Union, get_args, get_origin

import msgspec
import structlog
from advanced_alchemy.exceptions import DuplicateKeyError, ForeignKeyError, NotFoundError, RepositoryError
from litestar import MediaType, Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import (
    HTTPException,
    TooManyRequestsException,
    ValidationException,
    WebSocketException,
)
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from app.db.faults import DETAILS, DatabaseFaults, FaultKind, fault_of
from app.http.validation import describe
from app.http.validation_words import humanise
from app.state import collaborator

log = structlog.get_logger("vms.errors")

RETRY_AFTER_SECONDS = 5
"""What a 503 for a database fault tells the client to wait before trying again."""
WS_1013_TRY_AGAIN_LATER = 1013


def _body(status_code: int, detail: str, extra: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status_code": status_code, "detail": detail}
    if extra:
        body["extra"] = extra
    return body


def _response(
    status_code: int, detail: str, extra: Any = None, headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(
        content=_body(status_code, detail, extra),
        status_code=status_code,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _field_of(item: dict[str, Any]) -> str | None:
    key = item.get("key")
    if key:
        return str(key)
    # msgspec reports the path inside the message: "Expected `int`, got `str` - at `$.cores`"
    message = str(item.get("message", ""))
    if "- at `$." in message:
        return message.rsplit("- at `$.", 1)[1].rstrip("`")
    if message.startswith("`") and "`:" in message:
        return message[1 : message.index("`:")]
    return None


def _in_words(request: Request[Any, Any, Any], item: dict[str, Any]) -> dict[str, Any]:
    """One problem Litestar or msgspec reported, rewritten as ``{key, message, source}`` a person reads."""
    field = _field_of(item)
    raw = str(item.get("message", "invalid value"))
    message = humanise(raw.removeprefix(f"`{field}`: ") if field else raw)
    if raw.startswith("Invalid enum value") and field:
        message = _choices_of(request, field) or message
    return {**item, "key": field, "message": message} if field else {**item, "message": message}


def _choices_of(request: Request[Any, Any, Any], name: str) -> str | None:
    # msgspec names the refused value, not the allowed ones; the handler's signature has them.
    parameter = request.route_handler.parsed_fn_signature.parameters.get(name)
    if parameter is None:
        return None
    annotation = _item_type(parameter.annotation)
    try:
        return describe(msgspec.inspect.type_info(annotation), annotation=annotation)
    except (TypeError, ValueError):  # an annotation msgspec cannot inspect: keep the generic words
        return None


def _item_type(annotation: Any) -> Any:
    """``X`` of ``X | None``, ``list[X]`` and ``list[X] | None``: a repeated filter's values are each an X."""
    arguments = [argument for argument in get_args(annotation) if argument is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(arguments) == 1:
        annotation = arguments[0]
    if get_origin(annotation) is list:
        annotation = get_args(annotation)[0]
    return annotation


def validation_handler(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    extra = (
        [_in_words(request, item) for item in exc.extra if isinstance(item, dict)]
        if isinstance(exc.extra, list)
        else []
    )
    parts = [f"{item['key']}: {item['message']}" if item.get("key") else item["message"] for item in extra]
    detail = "Invalid request: " + "; ".join(parts) if parts else (exc.detail or "Invalid request")
    return _response(exc.status_code, detail, extra or None)


def http_exception_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    headers = dict(exc.headers or {})
    if isinstance(exc, TooManyRequestsException) or exc.status_code == HTTP_429_TOO_MANY_REQUESTS:
        # RFC 9110: tell the client when to come back. Litestar's limiter gives the reset time.
        headers.setdefault("Retry-After", headers.get("RateLimit-Reset", "60"))
    if exc.status_code >= HTTP_500_INTERNAL_SERVER_ERROR:
        return _response(exc.status_code, "Internal server error" if exc.status_code == 500 else exc.detail)
    return _response(exc.status_code, exc.detail, exc.extra or None, headers or None)


def repository_handler(request: Request[Any, Any, Any], exc: RepositoryError) -> Response[Any]:
    if isinstance(exc, NotFoundError):
        return _response(HTTP_404_NOT_FOUND, "Not found")
    if isinstance(exc, DuplicateKeyError | ForeignKeyError):
        return _response(HTTP_409_CONFLICT, "Conflicts with an existing record")
    return internal_error_handler(request, exc)  # a database fault there is a 503


def integrity_handler(_: Request[Any, Any, Any], exc: SAIntegrityError) -> Response[Any]:
    return _response(HTTP_409_CONFLICT, "Conflicts with an existing record")


def _fault_met(state: State, exc: BaseException) -> FaultKind | None:
    """The database fault behind ``exc``, recorded in the app's :class:`DatabaseFaults`."""
    try:
        return collaborator(state, DatabaseFaults).met(exc)
    except KeyError:  # an app built without the composition root's collaborators
        return fault_of(exc)


def database_fault_response(request: Request[Any, Any, Any], exc: BaseException) -> Response[Any] | None:
    """503 for a database fault (recorded in the app's :class:`DatabaseFaults`), None for anything else."""
    kind = _fault_met(request.app.state, exc)
    if kind is None:
        return None
    return _response(
        HTTP_503_SERVICE_UNAVAILABLE, DETAILS[kind], headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


def websocket_fault_close(
    connection: ASGIConnection[Any, Any, Any, Any], exc: Exception
) -> WebSocketException | None:
    """The close for a WebSocket that met ``exc``, if it is a database fault (recorded in the app's
    :class:`DatabaseFaults`): 1013 "try again later" with the fault in words, where Litestar would close
    with 4500 "Internal Server Error". None for anything else (re-raise it)."""
    kind = _fault_met(connection.app.state, exc)
    if kind is None:
        return None
    return WebSocketException(detail=DETAILS[kind], code=WS_1013_TRY_AGAIN_LATER)


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    fault = database_fault_response(request, exc)
    if fault is not None:
        return fault
    log.error("unhandled error", path=request.url.path, method=request.method, exc_info=exc)
    return _response(HTTP_500_INTERNAL_SERVER_ERROR, "Internal server error")


def nesting_handler(_: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    # msgspec raises RecursionError past ~1000 levels of JSON nesting (a 2 KB body): a client error.
    return _response(HTTP_400_BAD_REQUEST, "Invalid request: JSON nested too deeply")


exception_handlers: ExceptionHandlersMap = {
    ValidationException: validation_handler,
    RecursionError: nesting_handler,
    HTTPException: http_exception_handler,
    RepositoryError: repository_handler,
    SAIntegrityError: integrity_handler,
    HTTP_500_INTERNAL_SERVER_ERROR: internal_error_handler,
}
