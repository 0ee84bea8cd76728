"""``litestar users ...`` and ``litestar database upgrade``: real commands on a real database.

The first tests run ``python -m litestar`` in processes of their own, with stdin closed or piped (never a
terminal), beside a server process on the same SQLite file. The others call the same command group in
this process (each ``litestar`` process costs seconds of imports), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import shlex
import shutil
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from litestar.testing import TestClient
from websockets.asyncio.client import connect

from app import __version__, create_app
from app.cli import users_group
from app.config import get_settings, load_settings
from tests.helpers import bearer, decode, login
from tests.helpers.assertions import assert_no_internals, assert_no_secrets, assert_user
from tests.helpers.processes import ServerProcess, run_cli, run_command, server_process

ADMIN = "root@example.com"
ADMIN_PASSWORD = "root-password-1"
CLIENT = "client@example.com"
CLIENT_PASSWORD = "client-password-1"
NEW_PASSWORD = "client-password-2"
ALEMBIC_LINE = "Context impl"
REFUSAL_SECONDS = 10.0


def sqlite_env(tmp_path: Path, name: str = "vms.sqlite3") -> dict[str, str]:
    return {
        "VMS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / name}",
        "VMS_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "VMS_BCRYPT_ROUNDS": "4",
        "VMS_LOGIN_RATE_LIMIT": "1000",
    }


def one_error_line(output: str) -> str:
    """The refusal of a command: exactly one line, no traceback, no internals."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("Error: "), output
    assert_no_internals(output)
    return lines[0]


async def wait_refused(http: httpx.AsyncClient, url: str, token: str) -> None:
    """Other processes' changes reach a server through the change log within a second (its poll)."""
    deadline = time.monotonic() + REFUSAL_SECONDS
    while True:
        status = (await http.get(f"{url}/users/me", headers=bearer(token))).status_code
        if status == 401:
            return
        assert status == 200, status
        assert time.monotonic() < deadline, "the token was still accepted"
        await asyncio.sleep(0.2)


def startup_lines(server: ServerProcess) -> list[str]:
    """The ``event`` of each JSON line the server wrote (its standard error is not a terminal: JSON)."""
    lines = [line for line in server.log.read_text(errors="replace").splitlines() if line.startswith("{")]
    return [str(json.loads(line)["event"]) for line in lines]


async def test_the_commands_beside_a_running_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = sqlite_env(tmp_path)
    async with server_process(env, tmp_path / "server.log") as server, httpx.AsyncClient(timeout=10) as http:
        # The start-up line names where the API and its docs are; with no administrador yet, another line
        # prints the command that creates one, and that command works as printed, in a script (sh, the
        # password on its stdin, no terminal), quietly. With stdin not a terminal and a value missing, a
        # command refuses at once instead of asking.
        events = startup_lines(server)
        assert (
            f"VMS {__version__} serving the API at {server.url} and its docs at {server.url}/docs" in events
        )
        (advice,) = [event for event in events if event.startswith("no administrador exists")]
        prefix = "no administrador exists; create one, its password on standard input, with: "
        assert advice.startswith(prefix), advice
        printed = advice.removeprefix(prefix)
        assert printed.startswith("uv run litestar users create "), printed
        words = shlex.split(printed)
        admin_email = words[words.index("--email") + 1]
        uv = shutil.which("uv")
        assert uv is not None, "uv runs the printed command (CI installs it: .ci/run)"
        created, asked = await asyncio.gather(
            run_command(env, ["sh", "-c", printed], input=f"{ADMIN_PASSWORD}\n"),
            run_cli(env, "users", "create", "--email", "third@example.com", "--role", "cliente"),
        )
        assert created.code == 0, created.output
        assert f"Created administrador {admin_email}" in created.stdout
        assert ALEMBIC_LINE not in created.output
        assert_no_secrets(created.output, ADMIN_PASSWORD)
        assert asked.code == 1, asked.output
        assert "--name is required" in one_error_line(asked.stderr)
        assert asked.stdout == ""

        admin_token = await login(http, admin_email, ADMIN_PASSWORD, base_url=server.url)
        admin = bearer(admin_token)
        created = await http.post(
            f"{server.url}/users",
            json={"name": "Client", "email": CLIENT, "password": CLIENT_PASSWORD, "rol": "cliente"},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        client_id = created.json()["id"]
        client_token = await login(http, CLIENT, CLIENT_PASSWORD, base_url=server.url)

        # The same commands in this process (a thread: they run their own event loop), same database.
        use_environment(monkeypatch, env)
        (session,) = json.loads(await asyncio.to_thread(ok, "sessions", CLIENT, "--json"))
        assert set(session) == {"id", "created_at", "last_used_at", "ip", "user_agent", "current"}
        assert session["ip"] == "127.0.0.1"
        assert session["user_agent"].startswith("python-httpx")

        # Resetting the password ends the sessions: the running server refuses the token it issued, and
        # its live listeners get the change.
        listener = await connect(
            f"{server.ws_url}/ws/users", additional_headers=admin, open_timeout=10, close_timeout=2
        )
        reset = await run_cli(
            env, "users", "--verbose", "reset-password", CLIENT, "--password-stdin", input=NEW_PASSWORD
        )
        async with listener:
            frame = await asyncio.wait_for(listener.recv(), REFUSAL_SECONDS)
        assert_no_secrets(str(frame), NEW_PASSWORD)
        event = decode(frame)
        assert (event["event"], event["user"]["id"], event["actor_id"]) == ("user_updated", client_id, None)
        assert reset.code == 0, reset.output
        assert ALEMBIC_LINE in reset.stderr  # --verbose shows the migrations' lines
        assert "1 session(s) ended" in reset.stdout
        assert "session_ended" in reset.stderr  # the security event, on the command's standard error
        assert_no_secrets(reset.output, NEW_PASSWORD)
        await wait_refused(http, server.url, client_token)
        assert json.loads(await asyncio.to_thread(ok, "sessions", CLIENT, "--json")) == []
        await login(http, CLIENT, NEW_PASSWORD, base_url=server.url)

        changes = await http.get(f"{server.url}/changes", params={"entity": "user"}, headers=admin)
        assert changes.status_code == 200, changes.text
        logged = [(c["entity_id"], c["action"], c["source"]) for c in changes.json()]
        admin_id = next(c["entity_id"] for c in changes.json() if c["action"] == "created")
        assert logged == [
            (admin_id, "created", "cli"),
            (client_id, "created", "api"),
            (client_id, "updated", "cli"),
        ]


async def test_database_upgrade_runs_without_a_prompt(tmp_path: Path) -> None:
    env = sqlite_env(tmp_path, "upgraded.sqlite3")
    upgraded = await run_cli(env, "database", "upgrade", "--no-prompt")
    assert upgraded.code == 0, upgraded.output
    with sqlite3.connect(tmp_path / "upgraded.sqlite3") as database:
        tables = {row[0] for row in database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"user_account", "auth_session", "change_log", "alembic_version"} <= tables


# ---------------------------------------------------------------- the same commands in this process


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """The commands read the environment through the cached get_settings: read it anew for each test."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def use_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """VMS_* for the commands run in this process: ``env`` and nothing else."""
    for name in list(os.environ):
        if name.startswith("VMS_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


@pytest.fixture
def cli_env(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = sqlite_env(tmp_path)
    if database_url != "sqlite":
        env["VMS_DATABASE_URL"] = database_url
    use_environment(monkeypatch, env)
    return env


def run(*args: str, input: str | None = None) -> Result:
    """The command group with stdin piped (CliRunner's stdin is never a terminal)."""
    return CliRunner().invoke(users_group, list(args), input=input, catch_exceptions=False)


def ok(*args: str, input: str | None = None) -> str:
    result = run(*args, input=input)
    assert result.exit_code == 0, result.output
    return result.output


def refused(*args: str, input: str | None = None) -> str:
    result = run(*args, input=input)
    assert result.exit_code == 1, result.output
    return one_error_line(result.output)


def listed(*args: str) -> list[dict[str, Any]]:
    users: list[dict[str, Any]] = json.loads(ok("list", "--json", *args))
    for user in users:
        assert_user(user)
    return users


def test_create_set_role_delete_and_their_refusals(cli_env: dict[str, str]) -> None:
    ok("create", "--email", ADMIN, "--name", "Root", "--role", "administrador", "--password", ADMIN_PASSWORD)
    ok("create-admin", "--email", "second@example.com", "--password-stdin", input="second-password\n")
    ok(
        "create",
        "--email",
        "C@Example.com",
        "--name",
        "C",
        "--role",
        "cliente",
        "--password-stdin",
        input="c" * 8,
    )

    assert "--email must be an email address" in refused(
        "create", "--email", "not-an-email", "--name", "X", "--role", "cliente", "--password", "long-enough"
    )
    for password in ("short", "é" * 37):  # 5 characters; 74 UTF-8 bytes
        line = refused(
            "create", "--email", "x@example.com", "--name", "X", "--role", "cliente", "--password", password
        )
        assert "8 to 72 UTF-8 bytes" in line
        assert password not in line
    assert "unknown role 'root'" in refused(
        "create", "--email", "x@example.com", "--name", "X", "--role", "root", "--password", "long-enough"
    )
    assert "already exists" in refused(
        "create", "--email", "c@example.com", "--name", "X", "--role", "cliente", "--password", "long-enough"
    )
    assert "--password is required" in refused(
        "create", "--email", "x@example.com", "--name", "X", "--role", "cliente"
    )
    assert "unknown role" in refused("list", "--rol", "root")
    for command in (
        ["set-role", "nobody@example.com", "cliente"],
        ["delete", "nobody@example.com", "--yes"],
        ["sessions", "nobody@example.com"],
        ["reset-password", "nobody@example.com", "--password", "long-enough"],
    ):
        assert "no user with the email 'nobody@example.com'" in refused(*command)
    assert "without --yes" in refused("delete", "c@example.com")

    assert [(u["email"], u["rol"]) for u in listed()] == [
        (ADMIN, "administrador"),
        ("second@example.com", "administrador"),
        ("c@example.com", "cliente"),
    ]
    assert [u["email"] for u in listed("--rol", "cliente")] == ["c@example.com"]
    output = ok("list", "--json")
    assert_no_secrets(output, ADMIN_PASSWORD, "second-password", "c" * 8)
    header, *rows = ok("list").splitlines()
    assert header.split() == ["id", "name", "email", "rol", "created_at"]
    assert [row.split()[2:4] for row in rows] == [
        [ADMIN, "administrador"],
        ["second@example.com", "administrador"],
        ["c@example.com", "cliente"],
    ]
    assert_no_secrets("\n".join(rows), ADMIN_PASSWORD, "second-password", "c" * 8)

    ok("set-role", "second@example.com", "cliente")
    assert "last administrador" in refused("set-role", ADMIN, "cliente")
    assert "last administrador" in refused("delete", ADMIN, "--yes")
    ok("delete", "second@example.com", "--yes")
    ok("set-role", "c@example.com", "administrador")
    assert [(u["email"], u["rol"]) for u in listed()] == [
        (ADMIN, "administrador"),
        ("c@example.com", "administrador"),
    ]

    # Every change is in the change log, from the command line.
    with TestClient(app=create_app(load_settings(dict(os.environ)))) as client:
        token = client.post("/login", json={"email": ADMIN, "password": ADMIN_PASSWORD}).json()[
            "access_token"
        ]
        changes = client.get("/changes", headers=bearer(token), params={"entity": "user"}).json()
    assert [(c["action"], c["source"], c["actor_id"]) for c in changes] == [
        ("created", "cli", None),
        ("created", "cli", None),
        ("created", "cli", None),
        ("updated", "cli", None),
        ("deleted", "cli", None),
        ("updated", "cli", None),
    ]
    assert changes[3]["after"]["rol"] == "cliente"
    assert changes[5]["after"]["rol"] == "administrador"


def test_in_a_terminal_the_missing_values_are_asked_for(
    cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """stdin a pseudo-terminal: the role, email and name are prompted for (the password is given, since a
    hidden prompt would read the controlling terminal of whoever runs the tests)."""
    controller, terminal = pty.openpty()
    with os.fdopen(terminal, "r", closefd=True) as stdin:
        os.write(controller, b"cliente\nasked@example.com\nAsked Name\n")
        monkeypatch.setattr(sys, "stdin", stdin)
        users_group.main(["create", "--password", "long-enough-1"], standalone_mode=False)
    os.close(controller)
    prompts = capsys.readouterr().out
    for label in ("Role (administrador, cliente):", "Email:", "Name:"):
        assert label in prompts, prompts
    assert [(u["email"], u["name"], u["rol"]) for u in listed()] == [
        ("asked@example.com", "Asked Name", "cliente")
    ]
