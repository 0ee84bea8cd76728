from __future__ import annotations

import secrets
from typing import Final, Literal, get_args

from advanced_alchemy.base import BigIntAuditBase
from sqlalchemy import CheckConstraint, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

# The one definition of the roles: the wire schemas, the filters and the CHECK constraint all use it.
Role = Literal["administrador", "cliente"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
ROLE_ADMIN: Final[Role] = "administrador"
ROLE_CLIENT: Final[Role] = "cliente"


# The name of this entity in the changes its writes report (app/db/transactions.py).
USER_ENTITY: Final = "user"


class User(BigIntAuditBase):
    __tablename__ = "user_account"
    __table_args__ = (
        CheckConstraint("rol IN (" + ", ".join(f"'{r}'" for r in ROLES) + ")", name="rol"),
        # Ids are never reused: a token, a session or a change-log entry names one account for good.
        {"sqlite_autoincrement": True},
    )

    name: Mapped[str] = mapped_column(String(100))
    # Stored lower-cased; the unique constraint makes the case-insensitive rule race-safe.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(100))
    rol: Mapped[str] = mapped_column(String(20), index=True)
    # Bumped whenever earlier tokens must stop working (password or role change); tokens carry it.
    # It starts at a random value: SQLite reuses the highest deleted id, and a new account must not
    # accept the tokens of the deleted one that had its id.
    token_version: Mapped[int] = mapped_column(
        Integer, default=lambda: secrets.randbelow(2**31 - 1), server_default="0"
    )

    @property
    def is_admin(self) -> bool:
        return self.rol == ROLE_ADMIN
