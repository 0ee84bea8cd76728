"""Sign in and out. ``/login`` takes JSON or the OAuth2 password form (the docs page's Authorize button)."""

from __future__ import annotations

import hashlib
import hmac
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
from litestar.security.jwt import Token
from msgspec import UNSET
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.transactions import WriteGate
from app.domain.auth.guards import requires_admin, requires_user
from app.domain.auth.operations import LoginOperation, RefreshOperation
from app.domain.auth.refresh_transport import (
    CLEARED_COOKIE,
    SET_COOKIE_DOCUMENTED,
    CookieToken,
    RefreshInCookie,
    check_cookie_request,
    cleared_cookie_header,
    presented_refresh_token,
    refresh_token_cookie,
)
from app.domain.auth.schemas import (
    LoginRequest,
    OAuth2PasswordForm,
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


async def _read_credentials(request: Request[Any, Any, Any]) -> tuple[str, str]:
    try:
        if request.content_type[0] in FORM_TYPES:
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


def _token_pair(state: State, opened: Opened, *, in_cookie: bool) -> Response[TokenResponse]:
    """The new access token, and the refresh token in the body or (``in_cookie``) in the cookie only."""
    user, tokens = opened.user, collaborator(state, TokenService)
    refresh_expires_in = collaborator(state, Settings).refresh_ttl_days * 86_400
    pair = TokenResponse(
        access_token=tokens.issue(user.id, user.token_version, opened.session.id),
        token_type="bearer",  # noqa: S106  (the OAuth2 token type, not a secret)
        expires_in=int(tokens.ttl.total_seconds()),
        refresh_token=UNSET if in_cookie else opened.refresh_token,
        refresh_expires_in=refresh_expires_in,
    )
    if not in_cookie:
        return Response(pair)
    return Response(pair, cookies=[refresh_token_cookie(opened.refresh_token, refresh_expires_in)])


class AuthController(Controller):
    tags = ["auth"]  # noqa: RUF012

    @post(
        "/login",
        exclude_from_auth=True,
        security=[{}],
        summary="Sign in: get a bearer token",
        operation_class=LoginOperation,
        status_code=200,
        response_cookies=[SET_COOKIE_DOCUMENTED],
        responses=responses_for(400, 401, 429),
    )
    async def login(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        state: State,
        refresh_cookie: RefreshInCookie = False,
    ) -> Response[TokenResponse]:
        if refresh_cookie:
            check_cookie_request(request)
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
        return _token_pair(state, opened, in_cookie=refresh_cookie)

    @post(
        "/login/refresh",
        exclude_from_auth=True,
        security=[{}],
        summary="Spend a refresh token for a new pair of tokens",
        description="The refresh token given (in the body, or else in the refresh cookie) is spent: the "
        "answer carries the next one, the way it came, or in the cookie with refresh_cookie=true. "
        "Presenting a spent refresh token again ends its whole session (someone else may hold a copy) and "
        "answers 401. Send one refresh at a time per session: of two sent at once with the same token, one "
        "gets the pair and the other ends the session.",
        operation_class=RefreshOperation,
        status_code=200,
        response_cookies=[SET_COOKIE_DOCUMENTED],
        responses=responses_for(400, 401),
    )
    async def refresh(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        state: State,
        refresh_cookie: RefreshInCookie = False,
        cookie_token: CookieToken = None,
    ) -> Response[TokenResponse]:
        token, from_cookie = await presented_refresh_token(request, cookie_token)
        if refresh_cookie and not from_cookie:
            check_cookie_request(request)
        try:
            opened = await _sessions(db_session, state).refresh(token)
        except RefreshRefused as refused:
            events.token_refused(request, reason=f"refresh_{refused.code}")
            # A cookie that holds a refused token is dropped, so the browser stops presenting it.
            headers = cleared_cookie_header() if from_cookie else None
            raise NotAuthorizedException(refused.detail, headers=headers) from None
        return _token_pair(state, opened, in_cookie=refresh_cookie or from_cookie)

    @post(
        "/logout",
        guards=[requires_user],
        status_code=204,
        summary="End the session of the token used for this request",
        description="Every token of this session is refused from now on, by every worker and after restarts; "
        "its WebSockets are closed. The refresh cookie, if the browser holds one, is cleared.",
        response_cookies=[CLEARED_COOKIE],
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
        found, total = await _sessions(db_session, state).open_sessions_page(request.user.id, page, current)
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
