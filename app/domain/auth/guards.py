"""Who may call a route: the role guards every route declares (or it is explicitly public)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.connection import ASGIConnection

from app.domain.users.models import User
from app.security.refusals import SCRAPER, TOKEN_MISSING, refuse_forbidden, refuse_unauthenticated

if TYPE_CHECKING:
    from litestar.handlers.base import BaseRouteHandler


# Guards are coroutines: Litestar runs a plain function guard in a worker thread, a hop per request.
async def requires_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    user = connection.user
    if not isinstance(user, User):
        refuse_unauthenticated(connection, TOKEN_MISSING, presented=False)
    if not user.is_admin:
        refuse_forbidden(connection, "This action requires the administrador role")


async def requires_user(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if not isinstance(connection.user, User):
        refuse_unauthenticated(connection, TOKEN_MISSING, presented=False)


async def requires_admin_or_scraper(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """An administrador, or the metrics scraper's token (``VMS_METRICS_TOKEN``)."""
    if connection.auth != SCRAPER:
        await requires_admin(connection, handler)
