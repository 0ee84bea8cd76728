"""User accounts: the rules about who may become what, on top of Advanced Alchemy's repository service.

Each write reports its change to its transaction (app/db/transactions.py); what follows from it (the
principal cache, the events, the sockets of a changed user) is subscribed to that seam by the composition
root."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from advanced_alchemy.exceptions import DuplicateKeyError, IntegrityError
from advanced_alchemy.extensions.litestar.exception_handler import ConflictError
from advanced_alchemy.filters import CollectionFilter, OrderBy, StatementFilter
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from litestar.exceptions import NotFoundException, PermissionDeniedException
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.pages import read_page
from app.db.transactions import Change, WriteGate
from app.domain.auth.models import AuthSession
from app.domain.auth.services import end_sessions
from app.domain.changes.services import LAST_SEQ
from app.domain.users.models import ROLE_ADMIN, ROLE_CLIENT, USER_ENTITY, Role, User
from app.domain.users.schemas import UserCreate, UserRead, UserUpdate
from app.security.passwords import PasswordHasher

EMAIL_TAKEN = "A user with this email already exists"
LAST_ADMIN = "The last administrador cannot be demoted or deleted"


def _id(actor: User | None) -> int | None:
    return actor.id if actor is not None else None


def to_read(user: User) -> UserRead:
    return msgspec.convert(user, UserRead, from_attributes=True)


class UserRepository(SQLAlchemyAsyncRepository[User]):
    model_type = User


class UserService(SQLAlchemyAsyncRepositoryService[User, UserRepository]):
    repository_type = UserRepository

    def __init__(
        self, session: AsyncSession, *, write_gate: WriteGate, hasher: PasswordHasher, **kwargs: Any
    ) -> None:
        super().__init__(session=session, **kwargs)
        self.write_gate = write_gate
        self.hasher = hasher

    async def list_page(self, filters: Sequence[StatementFilter]) -> tuple[list[UserRead], int, int]:
        """One page of accounts, the number matching ignoring pagination (see app/db/pages.py), and the
        seq of the last change the page reflects."""
        return await read_page(self.repository.session, User, UserRead, filters, also=LAST_SEQ)

    async def get_by_email(self, email: str) -> User | None:
        return await self.repository.get_one_or_none(email=email.lower())

    async def authenticate(self, email: str, password: str) -> tuple[User | None, int | None]:
        """The user for these credentials (or None), and the id of the account the email names (or None,
        for the security log); the same bcrypt work either way."""
        user = await self.get_by_email(email)
        ok = await self.hasher.verify(password, user.password_hash if user else None)
        return (user if ok else None), (user.id if user else None)

    async def create_user(self, data: UserCreate, actor: User | None) -> User:
        password_hash = await self.hasher.hash(data.password)
        async with self.write_gate.transaction(self.repository.session) as transaction:
            try:
                # Every column is known after the INSERT (ids come back with it): no refresh round trip.
                user = await self.repository.add(
                    User(name=data.name, email=data.email, rol=data.rol, password_hash=password_hash),
                    auto_refresh=False,
                )
            except (DuplicateKeyError, IntegrityError) as exc:
                raise ConflictError(EMAIL_TAKEN) from exc
            transaction.record(
                Change(USER_ENTITY, "created", user.id, after=to_read(user), actor_id=_id(actor))
            )
        return user

    async def update_user(
        self, user_id: int, data: UserUpdate, actor: User | None, *, keep_session: int | None = None
    ) -> User:
        """``actor`` None is the operator (the command line): an administrador's rights, and no
        current password to give.

        A new password ends every session of the user but ``keep_session`` (the caller's own, when users
        change their password); a new role ends all of them, so the next token shows the new rights.
        """
        changes = data.changes()
        if "rol" in changes and actor is not None and not actor.is_admin:
            raise PermissionDeniedException("Only an administrador can change a role")
        new_hash: str | None = None
        if isinstance(data.password, str):
            if actor is not None and actor.id == user_id:
                # Someone holding a stolen token must not be able to lock the owner out.
                current = data.current_password if isinstance(data.current_password, str) else ""
                if not await self.hasher.verify(current, actor.password_hash):
                    raise PermissionDeniedException("`current_password` is missing or wrong")
            new_hash = await self.hasher.hash(data.password)
        async with self.write_gate.transaction(self.repository.session) as transaction:
            user = await self._get_for_update(user_id)
            before = to_read(user)
            demoting = changes.get("rol") == ROLE_CLIENT and user.rol == ROLE_ADMIN
            if demoting:
                await self._ensure_another_admin(user.id)
            role_changed = "rol" in changes and changes["rol"] != user.rol
            for field, value in changes.items():
                setattr(user, field, value)
            if new_hash is not None:
                user.password_hash = new_hash
            if role_changed:
                # Tokens carry the version they were issued under; bumping it retires them all (and the
                # sessions end below, so their refresh tokens stop too).
                user.token_version += 1
            if role_changed or new_hash is not None:
                which = [AuthSession.user_id == user_id]
                if keep_session is not None and not role_changed:
                    which.append(AuthSession.id != keep_session)
                await end_sessions(self.repository.session, transaction, *which, actor_id=_id(actor))
            try:
                await self.repository.session.flush()
            except SAIntegrityError as exc:
                raise ConflictError(EMAIL_TAKEN) from exc
            after = to_read(user)
            if after != before:  # nothing changed, nothing to record (a new password moves updated_at)
                transaction.record(
                    Change(USER_ENTITY, "updated", user_id, before=before, after=after, actor_id=_id(actor))
                )
        return user

    async def delete_user(self, user_id: int, actor: User | None) -> None:
        async with self.write_gate.transaction(self.repository.session) as transaction:
            user = await self._get_for_update(user_id)
            if user.rol == ROLE_ADMIN:
                await self._ensure_another_admin(user.id)
            before = to_read(user)
            await self.repository.session.delete(user)
            await self.repository.session.flush()
            transaction.record(Change(USER_ENTITY, "deleted", user_id, before=before, actor_id=_id(actor)))

    async def list_all(self, rol: Role | None = None) -> list[User]:
        """Every account in id order, of one role when given (the command line's listing)."""
        filters: list[StatementFilter] = [OrderBy("id", "asc")]
        if rol is not None:
            filters.append(CollectionFilter("rol", [rol]))
        return list(await self.get_many(*filters))

    async def has_admin(self) -> bool:
        return await self.repository.exists(rol=ROLE_ADMIN)

    async def ensure_admin(self, *, email: str, password: str, name: str) -> User | None:
        """Create this administrador unless one already exists (start-up bootstrap)."""
        if await self.has_admin():
            return None
        data = UserCreate(name=name, email=email, password=password, rol=ROLE_ADMIN)
        return await self.create_user(data, actor=None)

    async def _get_for_update(self, user_id: int) -> User:
        # get_one_or_none, not get: a missing user is our 404 with our wording, not the repository's.
        user = await self.repository.get_one_or_none(id=user_id, with_for_update=True)
        if user is None:
            raise NotFoundException(f"User {user_id} not found")
        return user

    async def _ensure_another_admin(self, user_id: int) -> None:
        # FOR UPDATE on every admin row serialises concurrent demotions on PostgreSQL; on SQLite the write
        # gate already runs one write transaction at a time.
        # A raw select: the repository's list() takes no with_for_update (get/get_one do, for one row).
        others = await self.repository.session.scalars(
            select(User.id).where(User.rol == ROLE_ADMIN, User.id != user_id).with_for_update()
        )
        if not others.first():
            raise ConflictError(LAST_ADMIN)
