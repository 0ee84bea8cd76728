"""Litestar's route decorators, with guards that are handed the route handler itself.

Litestar hands each guard a shallow copy of the route handler (``copy(self)`` in
``BaseRouteHandler.authorize_connection``), so a guard that changes it cannot change the route. VMS's
guards (app/domain/auth/guards.py) only read the connection's user, and that copy of a handler with
dozens of attributes was 5% of a cached ``GET /vms/{id}``'s CPU time (py-spy). The handler classes here
run the same guards in the same order, on the handler as it is; everything else is Litestar's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import HttpMethod
from litestar.connection import ASGIConnection
from litestar.handlers import HTTPRouteHandler


class route(HTTPRouteHandler):  # the decorator's name, as Litestar's
    async def authorize_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> None:
        for guard in self.resolve_guards():
            await guard(connection, self)  # type: ignore[misc]


# Litestar's ``get``/``post``/``delete`` classes may not be subclassed (deprecated before Litestar 3): the
# same decorators as functions. The default status follows the method, as there (201 for POST, 204 for
# DELETE).
def get(path: str | Sequence[str] | None = None, **kwargs: Any) -> route:
    return route(path, http_method=HttpMethod.GET, **kwargs)


def post(path: str | Sequence[str] | None = None, **kwargs: Any) -> route:
    return route(path, http_method=HttpMethod.POST, **kwargs)


def delete(path: str | Sequence[str] | None = None, **kwargs: Any) -> route:
    return route(path, http_method=HttpMethod.DELETE, **kwargs)
