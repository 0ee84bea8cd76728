from __future__ import annotations

from typing import Annotated, Any, Literal

from advanced_alchemy.filters import LimitOffset, SearchFilter, StatementFilter
from litestar import Controller, HttpMethod, Request, Response
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException, PermissionDeniedException
from litestar.params import JSONBody, Parameter
from litestar.security.jwt import Token
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.transactions import WriteGate
from app.domain.auth.guards import requires_admin, requires_user
from app.domain.users.models import ROLE_ADMIN, Role, User
from app.domain.users.schemas import UserCreate, UserRead, UserUpdate
from app.domain.users.services import UserService, to_read
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
from app.http.validation import NO_NUL, strict_json_body
from app.security.jwt import session_id_of
from app.security.passwords import PasswordHasher
from app.security.refusals import AUTH_OPTIONAL
from app.state import collaborator

# A repeated rol means any of them; the bound keeps the query string small (two roles exist).
MAX_ROL_VALUES = 5
UserSort = Literal["id", "name", "email", "rol", "created_at", "updated_at"]


async def provide_user_service(db_session: NamedDependency[AsyncSession], state: State) -> UserService:
    return UserService(
        session=db_session,
        write_gate=collaborator(state, WriteGate),
        hasher=collaborator(state, PasswordHasher),
    )


def _ensure_self_or_admin(caller: User, user_id: int) -> None:
    if caller.id != user_id and not caller.is_admin:
        raise PermissionDeniedException("You may only access your own account")


class UserController(Controller):
    path = "/users"
    tags = ["users"]  # noqa: RUF012
    dependencies = {"users": Provide(provide_user_service)}  # noqa: RUF012

    @list_route(
        summary="List users (administrador)",
        guards=[requires_admin],
        responses=responses_for(400, 401, 403),
        change_seq=True,
        repeatable=frozenset({"rol"}),
    )
    async def list_users(
        self,
        users: NamedDependency[UserService],
        page: NamedDependency[LimitOffset],
        rol: Annotated[
            list[Role] | None,
            repeated_filter("Only users with this role; repeat for any of several.", MAX_ROL_VALUES, Role),
        ] = None,
        q: Annotated[
            str | None,
            Parameter(
                max_length=100, pattern=NO_NUL, description="Search in name and email (case-insensitive)."
            ),
        ] = None,
        sort: Annotated[UserSort, Parameter(description="Sort field.")] = "id",
        order: Annotated[SortOrder, Parameter(description="Sort direction.")] = "asc",
    ) -> Response[list[UserRead]]:
        filters: list[StatementFilter] = [page, *order_filters(sort, order)]
        if q:
            filters.append(
                SearchFilter(field_name={"name", "email"}, value=q, ignore_case=True, escape_wildcards=True)
            )
        items, total, change_seq = await users.list_page([*filters, *any_of("rol", rol)])
        return page_response(items, total, change_seq)

    @get("/me", guards=[requires_user], summary="The caller's own account", responses=responses_for(401))
    async def me(self, request: Request[User, Any, Any]) -> UserRead:
        return to_read(request.user)

    @get(
        "/{user_id:int}",
        guards=[requires_user],
        summary="Get a user (administrador, or the user itself)",
        responses=responses_for(400, 401, 403, 404),
    )
    async def get_user(
        self, request: Request[User, Any, Any], users: NamedDependency[UserService], user_id: ResourceId
    ) -> UserRead:
        _ensure_self_or_admin(request.user, user_id)
        user = await users.get_one_or_none(id=user_id)
        if user is None:
            raise NotFoundException(f"User {user_id} not found")
        return to_read(user)

    @post(
        ["/", ""],
        opt={AUTH_OPTIONAL: True},
        before_request=strict_json_body(UserCreate),
        summary="Create a user (administrador: any role; anyone: sign up as cliente)",
        responses=responses_for(400, 401, 403, 409),
    )
    async def create_user(
        self,
        request: Request[User | None, Any, Any],
        users: NamedDependency[UserService],
        state: State,
        data: JSONBody[UserCreate],
    ) -> UserRead:
        caller = request.user
        is_admin = caller is not None and caller.is_admin
        if not is_admin:
            if data.rol == ROLE_ADMIN:
                raise PermissionDeniedException("Only an administrador can create an administrador")
            if not collaborator(state, Settings).allow_signup:
                raise PermissionDeniedException("Sign-up is disabled; ask an administrador")
        return to_read(await users.create_user(data, actor=caller))

    @route(
        "/{user_id:int}",
        http_method=[HttpMethod.PUT, HttpMethod.PATCH],
        guards=[requires_user],
        before_request=strict_json_body(UserUpdate),
        summary="Update a user (partial; administrador: any field; the user itself: name, email, password)",
        description="Changing your own password requires `current_password`. A new password ends the user's "
        "other sessions (all of them when an administrador sets another user's); a new role ends all of "
        "the user's sessions.",
        responses=responses_for(400, 401, 403, 404, 409),
    )
    async def update_user(
        self,
        request: Request[User, Token, Any],
        users: NamedDependency[UserService],
        user_id: ResourceId,
        data: JSONBody[UserUpdate],
    ) -> UserRead:
        _ensure_self_or_admin(request.user, user_id)
        # Your own new password keeps the session you set it from; an administrador's ends them all.
        keep = session_id_of(request.auth) if request.user.id == user_id else None
        return to_read(await users.update_user(user_id, data, actor=request.user, keep_session=keep))

    @delete(
        "/{user_id:int}",
        guards=[requires_admin],
        summary="Delete a user (administrador)",
        responses=responses_for(400, 401, 403, 404, 409),
    )
    async def delete_user(
        self, request: Request[User, Any, Any], users: NamedDependency[UserService], user_id: ResourceId
    ) -> None:
        await users.delete_user(user_id, actor=request.user)
