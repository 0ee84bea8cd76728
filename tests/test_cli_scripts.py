"""``litestar users ...`` as a script runs it: each command in a process of its own (``python -m
litestar``), stdin closed, on SQLite and on PostgreSQL, beside the app that serves the same database.

A script reads standard output (a table, or JSON it pipes on: the README's ``users list --json | python3
-m json.tool``), so log lines must stay on standard error; a command given its values must never wait for
an answer. Every process here runs under a timeout (``run_cli``), so a prompt that hangs fails the test.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.config import Settings
from tests.helpers import (
    Account,
    assert_no_internals,
    assert_no_secrets,
    create_account,
    expect,
    make_settings,
)
from tests.helpers.processes import Finished, run_cli
from tests.helpers.terminals import in_terminal

COMMAND_SECONDS = 120.0
"""A command given its values takes seconds (mostly imports); this bound only catches one that waits for an
answer, with room for a shared machine running several at once."""


def env_of(settings: Settings) -> dict[str, str]:
    """The VMS_* a command needs to act on the database of the app under test."""
    return {
        "VMS_DATABASE_URL": settings.database_url,
        "VMS_JWT_SECRET_FILE": str(settings.jwt_secret_file),
        "VMS_BCRYPT_ROUNDS": "4",
    }


def succeeded(run: Finished) -> str:
    assert run.code == 0, run.output
    assert_no_internals(run.output)
    return run.stdout


def refused(run: Finished) -> str:
    """A refusal: exit status 1, nothing on stdout, exactly one ``Error: ...`` line on stderr."""
    assert run.code == 1, run.output
    assert run.stdout == "", run.stdout
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("Error: "), run.stderr
    assert_no_internals(run.stderr)
    return lines[0]


def table(stdout: str) -> tuple[list[str], list[list[str]]]:
    header, *rows = stdout.splitlines()
    return header.split(), [row.split() for row in rows]


async def test_every_command_runs_in_a_script_with_stdin_closed(
    client: AsyncTestClient[Litestar], settings: Settings, admin: Account
) -> None:
    promoted = await create_account(client, admin)
    deleted = await create_account(client, admin)  # signed in: it has one open session
    env = env_of(settings)

    def cli(*args: str) -> Any:
        return run_cli(env, *args, close_stdin=True, seconds=COMMAND_SECONDS)

    listed, as_json, sessions, unconfirmed = await asyncio.gather(
        cli("users", "list"),
        cli("users", "list", "--json"),
        cli("users", "sessions", deleted.email),
        cli("users", "delete", deleted.email),
    )

    # The JSON on stdout parses as it is (a pipe into json.tool), and is the API's own representation.
    api_users = expect(await client.get("/users", headers=admin.headers), 200)
    assert json.loads(succeeded(as_json)) == api_users
    assert_no_secrets(as_json.output, admin.password, promoted.password, deleted.password)

    header, rows = table(succeeded(listed))
    assert header == ["id", "name", "email", "rol", "created_at"]
    assert [(int(row[0]), row[2], row[3]) for row in rows] == [
        (user["id"], user["email"], user["rol"]) for user in api_users
    ]

    header, rows = table(succeeded(sessions))
    assert header == ["id", "created_at", "last_used_at", "ip", "user_agent"]
    (session,) = expect(await client.get("/users/me/sessions", headers=deleted.headers), 200)
    assert [int(row[0]) for row in rows] == [session["id"]]

    assert "refusing to delete without --yes" in refused(unconfirmed)
    expect(await client.get(f"/users/{deleted.id}", headers=admin.headers), 200)  # still there

    role_set, removed = await asyncio.gather(
        cli("users", "set-role", promoted.email, "administrador"),
        cli("users", "delete", deleted.email, "--yes"),
    )
    assert succeeded(role_set).strip() == f"{promoted.email} is administrador."
    assert succeeded(removed).strip() == f"Deleted {deleted.email} (id {deleted.id})."
    after = {
        user["id"]: user["rol"] for user in expect(await client.get("/users", headers=admin.headers), 200)
    }
    assert after == {admin.id: "administrador", promoted.id: "administrador"}


async def test_password_stdin_in_a_terminal_is_asked_for_hidden(tmp_path: Path) -> None:
    """The printed start-up command, typed by an operator in a terminal: ``--password-stdin`` there asks
    for the password without echoing it (twice, as a prompt for a new password does), instead of reading
    a line typed in view."""
    email, password = "typed@example.com", "typed-password-1"
    command = [sys.executable, "-m", "litestar", "users", "create", "--role", "administrador"]
    command += ["--email", email, "--name", "Typed", "--password-stdin"]
    env = env_of(make_settings(tmp_path))
    async with in_terminal(command, env, tmp_path / "terminal.log") as (process, terminal):
        await terminal.wait_for("Password: ")
        terminal.type(f"{password}\n")
        await terminal.wait_for("Repeat for confirmation: ")
        terminal.type(f"{password}\n")
        await terminal.wait_for(f"Created administrador {email}")
        assert await asyncio.to_thread(process.wait, COMMAND_SECONDS) == 0, terminal.text()
    assert password not in terminal.text()
