from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct

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
    expires_in: Annotated[int, Meta(description="Seconds until the token expires.")]


class SessionRead(Struct, kw_only=True):
    """An open sign-in session as an operator sees it (no token, nothing secret)."""

    id: int
    created_at: datetime
    ip: str | None
    user_agent: str | None
