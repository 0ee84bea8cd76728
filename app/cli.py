"""``litestar users ...``: manage accounts from the command line, in a terminal or in a script.

Every command runs without a prompt when given its values. A missing value is asked for only when stdin is
a terminal; otherwise the command exits non-zero with one line, so a script never hangs. Every change goes
through the domain services inside :func:`app.wiring.open_wiring`, so the change log records it with source
``cli`` and the listeners of running servers get its event.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import click
import msgspec
from litestar.exceptions import HTTPException, NotFoundException
from litestar.plugins import CLIPluginProtocol

from app.config import get_settings
from app.domain.auth.models import AuthSession
from app.domain.auth.schemas import SessionRead, to_session_read
from app.domain.auth.services import AuthSessionService
from app.domain.users.models import ROLE_ADMIN, ROLES, Role, User
from app.domain.users.schemas import UserCreate, UserUpdate
from app.domain.users.services import UserService, to_read
from app.http.validation_words import humanise
from app.security.credentials import email_problem, password_problem
from app.wiring import open_wiring, user_service

T = TypeVar("T")
ROLE_WORDS = " or ".join(ROLES)


@dataclass(frozen=True)
class Services:
    users: UserService
    sessions: AuthSessionService


async def _with_services(action: Callable[[Services], Awaitable[T]]) -> T:
    async with open_wiring(get_settings()) as wiring, wiring.alchemy.get_session() as session:
        services = Services(user_service(wiring, session), AuthSessionService(session, wiring.write_gate))
        return await action(services)


def _run(action: Callable[[Services], Awaitable[T]]) -> T:
    """Run ``action`` against the configured database; a refusal (404, 409, ...) is one line, exit 1."""
    try:
        return asyncio.run(_with_services(action))
    except HTTPException as exc:
        _fail(exc.detail)


def _fail(message: str) -> NoReturn:
    # Not click.ClickException: the Litestar CLI (rich-click) draws that as a box over several lines.
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(1)


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _ask(value: str | None, option: str, *, secret: bool = False, choices: Sequence[str] = ()) -> str:
    """``value`` when given; otherwise a prompt in a terminal, and one line (exit 1) anywhere else."""
    if value is not None:
        return value
    if not _interactive():
        _fail(f"{option} is required (stdin is not a terminal, so nothing is asked)")
    label = option.removeprefix("--").capitalize()
    kind = click.Choice(list(choices)) if choices else None
    answer: str = click.prompt(label, hide_input=secret, confirmation_prompt=secret, type=kind)
    return answer


def _password(password: str | None, from_stdin: bool) -> str:
    if password is not None and from_stdin:
        _fail("give --password or --password-stdin, not both")
    # In a terminal the line would be typed where anyone looking sees it: it is asked for hidden instead.
    if from_stdin and not _interactive():
        line = sys.stdin.readline() if sys.stdin is not None else ""
        if not line:
            _fail("--password-stdin: nothing to read on stdin")
        password = line.rstrip("\r\n")
    password = _ask(password, "--password", secret=True)
    if problem := password_problem(password):
        _fail(f"--password {problem}")
    return password


def _role(value: str) -> Role:
    for role in ROLES:
        if value == role:
            return role
    _fail(f"unknown role {value!r}: the role is {ROLE_WORDS}")


def _convert(values: dict[str, object], into: type[T]) -> T:
    try:
        return msgspec.convert(values, into)
    except (msgspec.ValidationError, ValueError) as exc:
        message, _, where = str(exc).partition(" - at `$.")
        field = where.rstrip("`")
        _fail(f"--{field} {humanise(message)}" if field else humanise(message))


async def _user(users: UserService, email: str) -> User:
    user = await users.get_by_email(email)
    if user is None:
        raise NotFoundException(f"no user with the email {email!r}")
    return user


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(header), *[["" if value is None else str(value) for value in row] for row in rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def _echo_json(value: object) -> None:
    click.echo(msgspec.json.encode(value).decode())


json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
password_options = [
    click.option("--password", help="8 to 72 UTF-8 bytes (visible to other local users: prefer stdin)."),
    click.option(
        "--password-stdin",
        is_flag=True,
        help="Read the password from the first line of stdin (asked hidden when stdin is a terminal).",
    ),
]


def with_password(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(password_options):
        command = option(command)
    return command


@click.group(name="users", help="Manage VMS user accounts.")
@click.option("--verbose", "-v", is_flag=True, help="Also print the database migrations' log lines.")
def users_group(verbose: bool) -> None:
    # Each command first brings the schema to head: Alembic's INFO lines say nothing when there was nothing
    # to do, and they were mixed into the output a script reads.
    logging.getLogger("alembic").setLevel(logging.NOTSET if verbose else logging.WARNING)


@users_group.command(name="list", help="List user accounts: a table, or --json.")
@click.option("--rol", "--role", "rol", help=f"Only users with this role ({ROLE_WORDS}).")
@json_option
def list_users(rol: str | None, as_json: bool) -> None:
    role = _role(rol) if rol is not None else None

    async def action(services: Services) -> list[User]:
        return await services.users.list_all(role)

    users = [to_read(user) for user in _run(action)]
    if as_json:
        _echo_json(users)
        return
    header = ("id", "name", "email", "rol", "created_at")
    click.echo(_table(header, [(u.id, u.name, u.email, u.rol, u.created_at.isoformat()) for u in users]))


def _create(email: str | None, name: str | None, role: Role, password: str | None, from_stdin: bool) -> None:
    email = _ask(email, "--email")
    if problem := email_problem(email):
        _fail(f"--email {problem}")
    name = _ask(name, "--name")
    secret = _password(password, from_stdin)
    data = _convert({"email": email, "name": name, "password": secret, "rol": role}, UserCreate)

    async def action(services: Services) -> User:
        return await services.users.create_user(data, actor=None)

    user = _run(action)
    click.echo(f"Created {user.rol} {user.email} (id {user.id}).")


@users_group.command(name="create", help="Create a user account.")
@click.option("--email", help="Email of the new user.")
@click.option("--name", help="Display name.")
@click.option("--role", "--rol", "role", help=f"{ROLE_WORDS}.")
@with_password
def create(
    email: str | None, name: str | None, role: str | None, password: str | None, password_stdin: bool
) -> None:
    # Asked in the order of the options: the role before the password, which may come from stdin.
    chosen = _role(_ask(role, "--role", choices=ROLES))
    _create(email, name, chosen, password, password_stdin)


@users_group.command(name="create-admin", help="Create an administrador (create --role administrador).")
@click.option("--email", help="Email of the new administrador.")
@click.option("--name", default="Administrator", show_default=True, help="Display name.")
@with_password
def create_admin(email: str | None, name: str, password: str | None, password_stdin: bool) -> None:
    _create(email, name, ROLE_ADMIN, password, password_stdin)


@users_group.command(name="set-role", help=f"Change a user's role ({ROLE_WORDS}); ends their tokens.")
@click.argument("email")
@click.argument("role")
def set_role(email: str, role: str) -> None:
    data = UserUpdate(rol=_role(role))

    async def action(services: Services) -> User:
        user = await _user(services.users, email)
        return await services.users.update_user(user.id, data, actor=None)

    user = _run(action)
    click.echo(f"{user.email} is {user.rol}.")


@users_group.command(name="reset-password", help="Set a new password and end every session of the user.")
@click.argument("email")
@with_password
def reset_password(email: str, password: str | None, password_stdin: bool) -> None:
    data = _convert({"password": _password(password, password_stdin)}, UserUpdate)

    async def action(services: Services) -> list[AuthSession]:
        user = await _user(services.users, email)
        open_before = await services.sessions.open_sessions(user.id)
        await services.users.update_user(user.id, data, actor=None)  # ends every session it had
        return open_before

    ended = _run(action)
    click.echo(f"Password of {email.lower()} reset; {len(ended)} session(s) ended.")


@users_group.command(name="delete", help="Delete a user account (and its sessions).")
@click.argument("email")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def delete(email: str, yes: bool) -> None:
    if not yes:
        if not _interactive():
            _fail("refusing to delete without --yes (stdin is not a terminal, so nothing is asked)")
        click.confirm(f"Delete {email}?", abort=True)

    async def action(services: Services) -> User:
        user = await _user(services.users, email)
        await services.users.delete_user(user.id, actor=None)
        return user

    user = _run(action)
    click.echo(f"Deleted {user.email} (id {user.id}).")


@users_group.command(name="sessions", help="List a user's open sign-in sessions: a table, or --json.")
@click.argument("email")
@json_option
def sessions(email: str, as_json: bool) -> None:
    async def action(services: Services) -> list[SessionRead]:
        user = await _user(services.users, email)
        return [to_session_read(s) for s in await services.sessions.open_sessions(user.id)]

    found = _run(action)
    if as_json:
        _echo_json(found)
        return
    header = ("id", "created_at", "last_used_at", "ip", "user_agent")
    rows = [
        (s.id, s.created_at.isoformat(), s.last_used_at and s.last_used_at.isoformat(), s.ip, s.user_agent)
        for s in found
    ]
    click.echo(_table(header, rows))


class UsersCLIPlugin(CLIPluginProtocol):
    def on_cli_init(self, cli: click.Group) -> None:
        cli.add_command(users_group)


__all__ = ["UsersCLIPlugin", "users_group"]
