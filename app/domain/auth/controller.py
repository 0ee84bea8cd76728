"""Sign in and out. ``/login`` takes JSON or the OAuth2 password form (the docs page's Authorize button)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
from advanced_alchemy.filters import LimitOffset
from litestar import Controller, Request, Response
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import (
    NotAuthorizedException,
    NotFoundException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.openapi.spec import Example, OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.params import JSONBody
from litestar.security.jwt import Token
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.transactions import WriteGate
from app.domain.auth.guards import requires_admin, requires_user
from app.domain.auth.schemas import (
    LoginRequest,
    OAuth2PasswordForm,
    RefreshRequest,
    SessionRead,
    TokenResponse,
    to_session_read,
)
from app.domain.auth.services import AuthSessionService, Opened, RefreshRefused
from app.domain.users.models import User
from app.domain.users.services import UserService
from app.http.openapi import responses_for
from app.http.pagination import ResourceId, list_route, page_response
from app.http.routes import delete, post
from app.security import events
from app.security.client_address import ClientAddress
from app.security.jwt import TokenService, session_id_of
from app.security.passwords import PasswordHasher
from app.security.throttle import FailureCounters
from app.state import collaborator

INVALID_CREDENTIALS = "Incorrect email or password"
ACCOUNT_THROTTLED = "Too many failed logins for this account; try again later"
ACCOUNT_WINDOW_SECONDS = 15 * 60
FORM_TYPES = (RequestEncodingType.URL_ENCODED.value, RequestEncodingType.MULTI_PART.value)


# @dataclass is needed: Operation's generated __init__ calls no __post_init__ (it has none), so without
# it the request body below was never set and POST /login had no body at all in the OpenAPI schema.
@dataclass
class LoginOperation(Operation):
    """Documents the two body encodings ``/login`` accepts (Litestar infers only one from a signature)."""

    def __post_init__(self) -> None:
        json_schema = Schema(
            type="object",  # type: ignore[arg-type]
            required=["email", "password"],
            properties={"email": Schema(type="string", max_length=254), "password": Schema(type="string")},  # type: ignore[arg-type]
        )
        form_schema = Schema(
            type="object",  # type: ignore[arg-type]
            required=["username", "password"],
            properties={
                "username": Schema(type="string", max_length=254, description="The email."),  # type: ignore[arg-type]
                "password": Schema(type="string"),  # type: ignore[arg-type]
                "grant_type": Schema(type="string", const="password"),  # type: ignore[arg-type]
            },
        )
        example = {"email": "admin@example.com", "password": "correct horse battery"}
        self.request_body = RequestBody(
            required=True,
            content={
                "application/json": OpenAPIMediaType(
                    schema=json_schema, examples={"login": Example(value=example)}
                ),
                RequestEncodingType.URL_ENCODED.value: OpenAPIMediaType(schema=form_schema),
            },
        )


async def _read_credentials(request: Request[Any, Any, Any]) -> tuple[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type in FORM_TYPES:
            form = await request.form()
            data = msgspec.convert(dict(form.items()), OAuth2PasswordForm, strict=False)
            return data.username, data.password
        login = msgspec.json.decode(await request.body(), type=LoginRequest)
        return login.email, login.password
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValidationException(f"Invalid login body: {exc}") from exc


def _account_key(tokens: TokenService, email: str) -> str:
    """The counter key of an email: an HMAC under the JWT secret (shared by every worker), so what sits in
    Redis names no account, and cannot be matched against a list of known addresses either."""
    secret = tokens.auth.token_secret.encode()
    return hmac.new(secret, b"login-account:" + email.lower().encode(), hashlib.sha256).hexdigest()


async def _count_attempt(failures: FailureCounters, limit: int, account: str) -> None:
    """Count this attempt as a failure before checking the password (a success clears it), and refuse it
    once the account has had its allowance in the window.

    Counting first, not after the check, is what bounds concurrency: a burst of guesses sent at once all
    pass a read-only check before any of them has failed. A refused attempt runs no bcrypt, and unknown
    emails count exactly like existing ones, so the answers do not tell which accounts exist.
    """
    attempts, retry_after = await failures.hit(account, ACCOUNT_WINDOW_SECONDS)
    if attempts <= limit:
        return
    if attempts == limit + 1:  # once per window, so a flood of refused attempts does not flood the log
        events.login_throttled(limit="account", retry_after=retry_after)
    raise TooManyRequestsException(ACCOUNT_THROTTLED, headers={"Retry-After": str(retry_after)})


def _sessions(db_session: AsyncSession, state: State) -> AuthSessionService:
    refresh_ttl = timedelta(days=collaborator(state, Settings).refresh_ttl_days)
    return AuthSessionService(
        session=db_session, write_gate=collaborator(state, WriteGate), refresh_ttl=refresh_ttl
    )


def _token_pair(tokens: TokenService, state: State, opened: Opened) -> TokenResponse:
    user = opened.user
    return TokenResponse(
        access_token=tokens.issue(user.id, user.token_version, opened.session.id),
        token_type="bearer",  # noqa: S106  (the OAuth2 token type, not a secret)
        expires_in=int(tokens.ttl.total_seconds()),
        refresh_token=opened.refresh_token,
        refresh_expires_in=collaborator(state, Settings).refresh_ttl_days * 86_400,
    )


class AuthController(Controller):
    tags = ["auth"]  # noqa: RUF012

    @post(
        "/login",
        exclude_from_auth=True,
        security=[{}],
        summary="Sign in: get a bearer token",
        operation_class=LoginOperation,
        status_code=200,
        responses=responses_for(400, 401, 429),
    )
    async def login(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        state: State,
    ) -> TokenResponse:
        email, password = await _read_credentials(request)
        tokens, failures = collaborator(state, TokenService), collaborator(state, FailureCounters)
        account = _account_key(tokens, email)
        await _count_attempt(failures, collaborator(state, Settings).login_account_failures, account)
        write_gate = collaborator(state, WriteGate)
        users = UserService(
            session=db_session, write_gate=write_gate, hasher=collaborator(state, PasswordHasher)
        )
        user, known = await users.authenticate(email, password)
        if user is None:
            events.login_failed(user_id=known, client=collaborator(state, ClientAddress)(request))
            raise NotAuthorizedException(INVALID_CREDENTIALS, headers={"WWW-Authenticate": "Bearer"})
        await failures.clear(account)
        opened = await _sessions(db_session, state).open(
            user,
            client_ip=collaborator(state, ClientAddress)(request),
            user_agent=request.headers.get("user-agent"),
        )
        return _token_pair(tokens, state, opened)

    @post(
        "/login/refresh",
        exclude_from_auth=True,
        security=[{}],
        summary="Spend a refresh token for a new pair of tokens",
        description="The refresh token given is spent: the answer carries the next one. Presenting a spent "
        "refresh token again ends its whole session (someone else may hold a copy) and answers 401. Send one "
        "refresh at a time per session: of two sent at once with the same token, one gets the pair and the "
        "other ends the session.",
        status_code=200,
        responses=responses_for(400, 401),
    )
    async def refresh(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[RefreshRequest],
        db_session: NamedDependency[AsyncSession],
        state: State,
    ) -> TokenResponse:
        try:
            opened = await _sessions(db_session, state).refresh(data.refresh_token)
        except RefreshRefused as refused:
            events.token_refused(request, reason=f"refresh_{refused.code}")
            raise NotAuthorizedException(refused.detail) from None
        return _token_pair(collaborator(state, TokenService), state, opened)

    @post(
        "/logout",
        guards=[requires_user],
        status_code=204,
        summary="End the session of the token used for this request",
        description="Every token of this session is refused from now on, by every worker and after restarts; "
        "its WebSockets are closed.",
        responses=responses_for(401),
    )
    async def logout(
        self,
        request: Request[User, Token, Any],
        db_session: NamedDependency[AsyncSession],
        state: State,
    ) -> None:
        session_id = session_id_of(request.auth)
        if session_id is not None:  # always set: the middleware accepts no token without a session
            # Every worker closes the WebSockets of this session (app/domain/realtime/connections.py).
            await _sessions(db_session, state).end(session_id, actor=request.user)


class SessionController(Controller):
    """Seeing and ending sign-in sessions (their own tag on the docs page)."""

    tags = ["sessions"]  # noqa: RUF012

    @list_route(
        path="/users/me/sessions",
        guards=[requires_user],
        summary="Your open sessions",
        responses=responses_for(400, 401),
    )
    async def my_sessions(
        self,
        request: Request[User, Token, Any],
        db_session: NamedDependency[AsyncSession],
        state: State,
        page: NamedDependency[LimitOffset],
    ) -> Response[list[SessionRead]]:
        """Every sign-in of yours that has not ended, oldest first, a page at a time (`limit`, `offset`;
        the number in all in `X-Total-Count`); `current` marks the one whose token asked. No token or
        secret is shown."""
        current = session_id_of(request.auth)
        found, total = await _sessions(db_session, state).open_sessions_page(request.user.id, page)
        return page_response([to_session_read(session, current) for session in found], total)

    @delete(
        "/users/me/sessions/{session_id:int}",
        guards=[requires_user],
        summary="End one of your sessions",
        description="Its refresh token and access tokens stop working at once, on every worker; its "
        "WebSockets are closed. 404 when you have no open session with this id.",
        responses=responses_for(400, 401, 404),
    )
    async def end_my_session(
        self,
        request: Request[User, Token, Any],
        db_session: NamedDependency[AsyncSession],
        state: State,
        session_id: ResourceId,
    ) -> None:
        ended = await _sessions(db_session, state).end(
            session_id, actor=request.user, owner_id=request.user.id
        )
        if not ended:
            raise NotFoundException(f"You have no open session {session_id}")

    @delete(
        "/users/{user_id:int}/sessions",
        guards=[requires_admin],
        summary="End every session of a user (administrador)",
        description="The user's refresh and access tokens stop working at once; their WebSockets are closed. "
        "204 also when the user had no open session.",
        responses=responses_for(400, 401, 403, 404),
    )
    async def end_user_sessions(
        self,
        request: Request[User, Token, Any],
        db_session: NamedDependency[AsyncSession],
        state: State,
        user_id: ResourceId,
    ) -> None:
        if await db_session.get(User, user_id) is None:
            raise NotFoundException(f"User {user_id} not found")
        await _sessions(db_session, state).end_all(user_id, actor=request.user)
