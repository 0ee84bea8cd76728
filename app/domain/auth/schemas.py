from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from app.domain.auth.models import AuthSession
from app.http.validation import NO_NUL


class LoginRequest(Struct, kw_only=True):
    email: Annotated[str, Meta(min_length=1, max_length=254, pattern=NO_NUL, examples=["admin@example.com"])]
    password: Annotated[str, Meta(min_length=1, max_length=1024, examples=["correct horse battery"])]


class OAuth2PasswordForm(Struct, kw_only=True):
    """The OAuth2 password grant form (``username`` is the email)."""

    username: Annotated[str, Meta(min_length=1, max_length=254, pattern=NO_NUL)]
    password: Annotated[str, Meta(min_length=1, max_length=1024)]
    grant_type: Literal["password"] | None = None
    scope: Annotated[str, Meta(max_length=1024)] | None = None
    client_id: Annotated[str, Meta(max_length=1024)] | None = None
    client_secret: Annotated[str, Meta(max_length=1024)] | None = None


class TokenResponse(Struct, kw_only=True):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: Annotated[int, Meta(description="Seconds until the access token expires.")]
    refresh_token: (
        Annotated[
            str,
            Meta(
                description="Spend it at POST /login/refresh for a new pair before the access token expires. "
                "It works once: presenting it again ends the session. Absent when it was set in the refresh "
                "cookie instead (refresh_cookie=true)."
            ),
        ]
        | UnsetType
    ) = UNSET
    refresh_expires_in: Annotated[int, Meta(description="Seconds until the refresh token expires.")]


REFRESH_TOKEN_MAX_LENGTH = 1024
"""Longest ``refresh_token`` a body may carry (a 400 beyond); tokens this service issues have 43."""


class RefreshRequest(Struct, kw_only=True):
    """Other keys are ignored, as on ``/login``."""

    refresh_token: Annotated[
        str, Meta(min_length=1, max_length=REFRESH_TOKEN_MAX_LENGTH, examples=["kP9x...the refresh_token"])
    ]


class SessionRead(Struct, kw_only=True):
    """An open sign-in session (no token, nothing secret)."""

    id: int
    created_at: datetime
    last_used_at: Annotated[
        datetime | None, Meta(description="The last sign-in or refresh (not every request).")
    ]
    ip: str | None
    user_agent: str | None
    current: Annotated[bool, Meta(description="The session of the token that asked.")] = False


def to_session_read(session: AuthSession, current_id: int | None = None) -> SessionRead:
    return SessionRead(
        id=session.id,
        created_at=session.created_at,
        last_used_at=session.last_used_at,
        ip=session.client_ip,
        user_agent=session.user_agent,
        current=session.id == current_id,
    )
