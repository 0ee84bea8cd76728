"""``litestar users ...``: manage accounts from the command line (first administrador, listings)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
import msgspec
from litestar.exceptions import HTTPException
from litestar.plugins import CLIPluginProtocol
from sqlalchemy import select

from app.config import get_settings
from app.domain.users.models import ROLE_ADMIN, User
from app.domain.users.schemas import UserCreate
from app.domain.users.services import UserService
from app.wiring import open_wiring, user_service

T = TypeVar("T")


async def _with_users(action: Callable[[UserService], Awaitable[T]]) -> T:
    async with open_wiring(get_settings()) as wiring, wiring.alchemy.get_session() as session:
        return await action(user_service(wiring, session))


@click.group(name="users", help="Manage VMS user accounts.")
def users_group() -> None:
    pass


@users_group.command(name="create-admin", help="Create an administrador (prompts for the password).")
@click.option("--email", prompt=True, help="Email of the new administrador.")
@click.option("--name", default="Administrator", show_default=True, help="Display name.")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="8 to 72 bytes.")
def create_admin(email: str, name: str, password: str) -> None:
    try:
        data = msgspec.convert(
            {"email": email, "name": name, "password": password, "rol": ROLE_ADMIN}, UserCreate
        )
    except msgspec.ValidationError as exc:
        raise click.ClickException(str(exc)) from exc

    async def action(users: UserService) -> User:
        return await users.create_user(data, actor=None)

    try:
        user = asyncio.run(_with_users(action))
    except HTTPException as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(f"Created administrador {user.email} (id {user.id}).")


@users_group.command(name="list", help="List user accounts.")
def list_users() -> None:
    async def action(users: UserService) -> list[User]:
        result = await users.repository.session.scalars(select(User).order_by(User.id))
        return list(result)

    for user in asyncio.run(_with_users(action)):
        click.echo(f"{user.id}\t{user.rol}\t{user.email}\t{user.name}")


class UsersCLIPlugin(CLIPluginProtocol):
    def on_cli_init(self, cli: click.Group) -> None:
        cli.add_command(users_group)
