"""What a request's ASGI scope says about it, once routed and authenticated: its route and its caller."""

from __future__ import annotations

from typing import Any

from litestar.types import Scope

MAX_PATH = 200


def route_of(scope: Scope) -> str:
    """The route's template, or for a request no route matched its path, cut to ``MAX_PATH``."""
    template = scope.get("path_template")
    return template if template is not None else scope["path"][:MAX_PATH]


def user_id_of(scope: Scope) -> Any:
    """The id of the signed-in caller, or None (anonymous, or not authenticated yet)."""
    return getattr(scope.get("user"), "id", None)
