"""Wire shapes for users. Read structs have no password field, so a hash cannot leak through them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from app.domain.users.models import ROLE_CLIENT, Role
from app.http.validation import MAX_UTF8_BYTES, MESSAGE, visible_text
from app.security.credentials import (
    EMAIL_PATTERN,
    MAX_EMAIL_CHARS,
    MAX_PASSWORD_BYTES,
    MIN_EMAIL_CHARS,
    MIN_PASSWORD_CHARS,
    PASSWORD_POLICY,
)

Name = Annotated[str, visible_text("Ada Lovelace")]
# Deliberately simple: one @, no spaces, a dot in the domain. Deliverability is not our business.
Email = Annotated[
    str,
    Meta(
        min_length=MIN_EMAIL_CHARS,
        max_length=MAX_EMAIL_CHARS,
        pattern=EMAIL_PATTERN,
        examples=["ada@example.com"],
        description="Unique, compared case-insensitively; stored lower-cased.",
        extra={
            MESSAGE: "must be a valid email address (one @, no spaces, a dot in the domain) "
            "of at most {max_length} characters"
        },
    ),
]
Password = Annotated[
    str,
    Meta(
        min_length=MIN_PASSWORD_CHARS,
        max_length=MAX_PASSWORD_BYTES,
        examples=["correct horse battery"],
        description=f"{PASSWORD_POLICY}.",
        extra={
            MAX_UTF8_BYTES: MAX_PASSWORD_BYTES,
            MESSAGE: "must be at least {min_length} characters and at most {max_utf8_bytes} UTF-8 bytes",
        },
    ),
]


def check_password_bytes(field: str, password: str | UnsetType | None) -> None:
    # max_length above counts characters; bcrypt's limit is in bytes (see app/security/credentials.py).
    if isinstance(password, str) and len(password.encode()) > MAX_PASSWORD_BYTES:
        raise ValueError(f"`{field}`: must be at most {MAX_PASSWORD_BYTES} UTF-8 bytes")


class UserRead(Struct, kw_only=True):
    id: int
    name: str
    email: str
    rol: Role
    created_at: datetime
    updated_at: datetime


class UserCreate(Struct, kw_only=True):
    # Clients PUT back what they GET: its other fields are accepted and ignored (app/http/validation.py).
    representation: ClassVar[type[Struct]] = UserRead

    name: Name
    email: Email
    password: Password
    rol: Role = ROLE_CLIENT

    def __post_init__(self) -> None:
        check_password_bytes("password", self.password)
        self.email = self.email.lower()


class UserUpdate(Struct, kw_only=True, omit_defaults=True):
    representation: ClassVar[type[Struct]] = UserRead

    name: Name | UnsetType = UNSET
    email: Email | UnsetType = UNSET
    password: Password | UnsetType = UNSET
    current_password: Annotated[str, Meta(max_length=72)] | UnsetType = msgspec.field(default=UNSET)
    rol: Role | UnsetType = UNSET

    def __post_init__(self) -> None:
        check_password_bytes("password", self.password)
        if isinstance(self.email, str):
            self.email = self.email.lower()

    def changes(self) -> dict[str, object]:
        """The fields the client sent, minus the ones that are not columns."""
        return {
            name: value
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not UNSET and name not in {"password", "current_password"}
        }
