"""Settings (litestar.toml + VMS_* overrides, validated at start), the JWT secret file, `litestar users`.

The CLI commands run their own event loop (``asyncio.run``), so those tests are plain ``def`` tests and
talk to the app through Litestar's synchronous test client.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from litestar.testing import TestClient

from app import create_app
from app.cli import users_group
from app.command_line import requested_workers, serving_url
from app.config import (
    ConfigError,
    Settings,
    check_deployment,
    get_settings,
    jwt_secret,
    load_settings,
)
from tests.helpers import bearer, free_port

ABSENT = Path("/nonexistent/litestar.toml")


def settings_from(tmp_path: Path, **env: str) -> Settings:
    base = {"VMS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'vms.sqlite3'}"}
    return load_settings({**base, **env}, config_file=ABSENT)


# ---------------------------------------------------------------- workers


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["litestar", "run"], {}, 1),
        (["litestar", "run", "-W", "4"], {}, 4),
        (["litestar", "run", "--wc=3"], {}, 3),
        (["uvicorn", "--factory", "app:create_app", "--workers", "2"], {}, 2),
        (["gunicorn", "-w", "5", "app:create_app()"], {}, 5),
        (["uvicorn", "app:app"], {"WEB_CONCURRENCY": "6"}, 6),
    ],
)
def test_requested_workers(argv: list[str], environ: dict[str, str], expected: int) -> None:
    assert requested_workers(argv, environ) == expected


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["litestar", "run"], {}, "http://127.0.0.1:8000"),
        (["litestar", "run", "-H", "10.0.0.5", "-p", "9000"], {}, "http://10.0.0.5:9000"),
        (
            ["uvicorn", "--factory", "app:create_app", "--port=8443", "--ssl-certfile", "c.pem"],
            {},
            "https://127.0.0.1:8443",
        ),
        (["litestar", "run"], {"LITESTAR_HOST": "::1", "LITESTAR_PORT": "81"}, "http://[::1]:81"),
        (
            ["uvicorn", "--factory", "app:create_app", "--uds", "/run/vms.sock"],
            {},
            "http://unix:/run/vms.sock",
        ),
        # Another program's -p is no port (the app made in a pytest process).
        (["pytest", "-p", "no:randomly"], {}, "http://127.0.0.1:8000"),
        (["pytest", "-p", "no:randomly"], {"UVICORN_PORT": "9001"}, "http://127.0.0.1:9001"),
    ],
)
def test_the_start_up_line_names_where_the_server_listens(
    argv: list[str], environ: dict[str, str], expected: str
) -> None:
    assert serving_url(argv, environ) == expected


def test_several_workers_without_redis_are_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(tmp_path, VMS_JWT_SECRET="x" * 32)
    monkeypatch.setattr("sys.argv", ["gunicorn", "-w", "2", "app:create_app()"])
    with pytest.raises(ConfigError, match="VMS_REDIS_URL"):
        create_app(settings)
    with_redis = settings_from(tmp_path, VMS_JWT_SECRET="x" * 32, VMS_REDIS_URL="redis://127.0.0.1:6379/0")
    assert "SQLite" in check_deployment(with_redis, 2)[0]  # allowed, with a warning
    assert check_deployment(settings, 1) == []


# ---------------------------------------------------------------- load_settings


def test_documented_defaults_from_litestar_toml() -> None:
    settings = load_settings({})
    assert settings.database_url == "sqlite+aiosqlite:///vms.sqlite3"
    assert settings.token_ttl_minutes == 15
    assert settings.refresh_ttl_days == 30
    assert settings.bcrypt_rounds == 12
    assert settings.allow_signup is True
    assert settings.jwt_secret is None
    assert settings.redis_url is None
    assert settings.cors_origins == []
    assert 1 <= settings.login_rate_limit <= 20
    # the code's own defaults agree with the documented ones when there is no file at all
    bare = load_settings({}, config_file=ABSENT)
    assert (bare.database_url, bare.token_ttl_minutes, bare.bcrypt_rounds, bare.allow_signup) == (
        settings.database_url, 15, 12, True,
    )  # fmt: skip


def test_environment_overrides_with_the_vms_prefix(tmp_path: Path) -> None:
    env = {
        "VMS_DATABASE_URL": "postgresql+asyncpg://vms@db:5432/vms",
        "VMS_TOKEN_TTL_MINUTES": "5",
        "VMS_BCRYPT_ROUNDS": "4",
        "VMS_ALLOW_SIGNUP": "false",
        "VMS_LOGIN_RATE_LIMIT": "3",
        "VMS_ADMIN_EMAIL": "root@example.com",
        "VMS_ADMIN_PASSWORD": "root-password",
        "VMS_REDIS_URL": "redis://cache:6379/0",
        "VMS_CORS_ORIGINS": "https://a.example, https://b.example,",
        "VMS_JWT_SECRET": "s" * 32,
        "BCRYPT_ROUNDS": "16",  # no prefix: ignored
        "vms_token_ttl_minutes": "99",  # lower case: ignored
    }
    settings = load_settings(env, config_file=ABSENT)
    assert settings.database_url == "postgresql+asyncpg://vms@db:5432/vms"
    assert settings.token_ttl_minutes == 5
    assert settings.bcrypt_rounds == 4
    assert settings.allow_signup is False
    assert settings.login_rate_limit == 3
    assert (settings.admin_email, settings.admin_password) == ("root@example.com", "root-password")
    assert settings.redis_url == "redis://cache:6379/0"
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.jwt_secret == "s" * 32
    assert load_settings({"VMS_REDIS_URL": "", "VMS_JWT_SECRET": ""}, config_file=ABSENT).redis_url is None


def test_environment_beats_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "vms.toml"
    config.write_text("[vms]\ntoken_ttl_minutes = 20\nbcrypt_rounds = 6\nallow_signup = false\n")
    settings = load_settings({"VMS_CONFIG_FILE": str(config), "VMS_BCRYPT_ROUNDS": "5"})
    assert (settings.token_ttl_minutes, settings.bcrypt_rounds, settings.allow_signup) == (20, 5, False)
    assert load_settings({}, config_file=config).bcrypt_rounds == 6


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("BCRYPT_ROUNDS", "abc"),
        ("BCRYPT_ROUNDS", "3"),
        ("BCRYPT_ROUNDS", "17"),
        ("TOKEN_TTL_MINUTES", "0"),
        ("TOKEN_TTL_MINUTES", "-5"),
        ("LOGIN_RATE_LIMIT", "0"),
        ("ALLOW_SIGNUP", "maybe"),
        ("MAX_BODY_BYTES", "10"),
        ("DATABASE_URL", "mysql://vms@db/vms"),
        ("DATABASE_URL", "not a url"),
    ],
)
def test_bad_values_raise_config_error(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({f"VMS_{key}": value}, config_file=ABSENT)
    assert key.lower() in str(raised.value).lower()


def test_unknown_keys_in_the_config_file_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "vms.toml"
    config.write_text("[vms]\nbcrypt_round = 4\n")
    with pytest.raises(ConfigError):
        load_settings({}, config_file=config)


def test_short_jwt_secret_is_refused() -> None:
    for short in ("secret", "x" * 31, "é" * 15):  # the last is 30 bytes
        with pytest.raises(ConfigError, match="JWT_SECRET"):
            load_settings({"VMS_JWT_SECRET": short}, config_file=ABSENT)
    for enough in ("x" * 32, "é" * 16):  # 32 bytes
        assert load_settings({"VMS_JWT_SECRET": enough}, config_file=ABSENT).jwt_secret == enough


# ---------------------------------------------------------------- the JWT secret file


def test_configured_secret_is_used_as_is(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, VMS_JWT_SECRET="k" * 40)
    assert jwt_secret(settings) == "k" * 40
    assert not (tmp_path / "vms.jwt-secret").exists()


def test_generated_secret_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "jwt"
    settings = settings_from(tmp_path, VMS_JWT_SECRET_FILE=str(path))
    first = jwt_secret(settings)
    assert len(first.encode()) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == first
    assert jwt_secret(settings) == first
    assert jwt_secret(settings_from(tmp_path, VMS_JWT_SECRET_FILE=str(path))) == first
    assert [p.name for p in path.parent.iterdir()] == ["jwt"]  # no temporary files left behind
    # never a constant: another deployment gets another secret
    assert jwt_secret(settings_from(tmp_path, VMS_JWT_SECRET_FILE=str(tmp_path / "other"))) != first


def test_secret_file_defaults_to_beside_the_database(tmp_path: Path) -> None:
    settings = settings_from(tmp_path)
    secret = jwt_secret(settings)
    path = tmp_path / "vms.jwt-secret"
    assert path.read_text().strip() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_short_secret_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jwt"
    path.write_text("too-short\n")
    with pytest.raises(ConfigError):
        jwt_secret(settings_from(tmp_path, VMS_JWT_SECRET_FILE=str(path)))


# ---------------------------------------------------------------- litestar users ...


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """VMS_* for the CLI (which reads the process environment through the cached get_settings)."""
    for name in list(os.environ):
        if name.startswith("VMS_"):
            monkeypatch.delenv(name)
    env = {
        "VMS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.sqlite3'}",
        "VMS_BCRYPT_ROUNDS": "4",
        "VMS_JWT_SECRET_FILE": str(tmp_path / "jwt-secret"),
        "VMS_LOGIN_RATE_LIMIT": "1000",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(users_group, list(args), input=input, catch_exceptions=False)


def listed(result: Result) -> list[list[str]]:
    """``users list --json`` as rows of id, rol, email, name."""
    assert result.exit_code == 0, result.output
    return [[str(u["id"]), u["rol"], u["email"], u["name"]] for u in json.loads(result.output)]


def test_create_admin_then_sign_in(cli_env: dict[str, str]) -> None:
    result = run(
        "create-admin", "--email", "Root@Example.com", "--name", "Root", "--password", "cli-password-1"
    )
    assert result.exit_code == 0, result.output
    assert "root@example.com" in result.output
    assert "cli-password-1" not in result.output

    rows = listed(run("list", "--json"))
    assert [row[1:] for row in rows] == [["administrador", "root@example.com", "Root"]]

    app = create_app(load_settings(dict(os.environ)))
    with TestClient(app=app) as client:
        response = client.post("/login", json={"email": "root@example.com", "password": "cli-password-1"})
        assert response.status_code == 200, response.text
        headers = bearer(response.json()["access_token"])
        me = client.get("/users/me", headers=headers).json()
        assert (me["email"], me["rol"], me["name"], str(me["id"])) == (
            "root@example.com",
            "administrador",
            "Root",
            rows[0][0],
        )
        assert client.get("/users", headers=headers).status_code == 200


def test_create_admin_reads_the_password_from_stdin(cli_env: dict[str, str]) -> None:
    result = run("create-admin", "--email", "ops@example.com", "--password-stdin", input="piped-password\n")
    assert result.exit_code == 0, result.output
    assert "piped-password" not in result.output
    assert [row[2] for row in listed(run("list", "--json"))] == ["ops@example.com"]


def test_create_admin_refuses_bad_input_and_duplicates(cli_env: dict[str, str]) -> None:
    assert run("create-admin", "--email", "a@example.com", "--password", "first-password").exit_code == 0
    for args in (
        ["--email", "A@example.com", "--password", "second-password"],  # duplicate, case-insensitively
        ["--email", "b@example.com", "--password", "short"],
        ["--email", "b@example.com", "--password", "é" * 37],  # 74 bytes
        ["--email", "not-an-email", "--password", "long-enough-1"],
    ):
        result = run("create-admin", *args)
        assert result.exit_code != 0, (args, result.output)
        assert "Traceback" not in result.output
    assert [row[2] for row in listed(run("list", "--json"))] == ["a@example.com"]


def test_users_commands_are_registered_with_the_litestar_cli(cli_env: dict[str, Any]) -> None:
    from litestar.cli.main import litestar_group

    result = CliRunner().invoke(litestar_group, ["--app", "app:create_app", "users", "--help"])
    assert result.exit_code == 0, result.output
    assert "create-admin" in result.output
    assert "list" in result.output


# ---------------------------------------------------------------- a bad setting stops the server


PROJECT_ROOT = Path(__file__).resolve().parent.parent
ADMIN_OK = {"VMS_ADMIN_EMAIL": "root@example.com", "VMS_ADMIN_PASSWORD": "root-password"}


def start_server(command: str, tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run the real server command; return its exit code and everything it printed.

    A server that starts despite the bad setting is killed (its whole process group: ``uv run`` has a
    child) after a few seconds and reported as exit code 0, which the callers refuse.
    """
    port = str(free_port())
    argv = {
        "litestar": ["uv", "run", "--locked", "litestar", "run", "--port", port],
        "uvicorn": [sys.executable, "-m", "uvicorn", "--factory", "app:create_app", "--port", port],
    }[command]
    environ = {name: value for name, value in os.environ.items() if not name.startswith("VMS_")}
    environ |= {
        "VMS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}",
        "VMS_JWT_SECRET_FILE": str(tmp_path / "secret"),
        "VMS_BCRYPT_ROUNDS": "4",
        **env,
    }
    process = subprocess.Popen(
        argv,
        cwd=PROJECT_ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=8)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return 0, output
    return process.returncode, output


BAD_SETTINGS = [
    pytest.param(
        {"VMS_TOKEN_TTL_MINUTES": "abc"},
        "VMS_TOKEN_TTL_MINUTES: must be an integer from 1 to 43200 (got 'abc')",
        id="wrong-type",
    ),
    pytest.param(
        {"VMS_BCRYPT_ROUNDS": "99"},
        "VMS_BCRYPT_ROUNDS: must be an integer from 4 to 16 (got '99')",
        id="range",
    ),
    pytest.param(
        {"VMS_DB_POOL_SIZE": "1"},
        "VMS_DB_POOL_SIZE: must be an integer from 2 to 200 (got '1')",
        id="pool-of-one",
    ),
    pytest.param(
        {"VMS_DATABASE_URL": "mysql://vms@db/vms"},
        "VMS_DATABASE_URL: must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL (got scheme 'mysql')",
        id="database-scheme",
    ),
    pytest.param(
        {"VMS_JWT_SECRET": "too-short"},
        "VMS_JWT_SECRET: must be at least 32 bytes (got 9)",
        id="short-secret",
    ),
]

CONTRADICTIONS = [
    pytest.param(
        {**ADMIN_OK, "VMS_ADMIN_PASSWORD": "short"},
        "VMS_ADMIN_PASSWORD: must be 8 to 72 UTF-8 bytes (got 5 characters)",
        id="short-admin-password",
    ),
    pytest.param(
        {**ADMIN_OK, "VMS_ADMIN_PASSWORD": "é" * 37},
        "VMS_ADMIN_PASSWORD: must be 8 to 72 UTF-8 bytes (got 74 bytes)",
        id="long-admin-password",
    ),
    pytest.param(
        {"VMS_ADMIN_EMAIL": "root@example.com"},
        "VMS_ADMIN_PASSWORD: must be set when VMS_ADMIN_EMAIL is",
        id="email-without-password",
    ),
    pytest.param(
        {"VMS_ADMIN_PASSWORD": "root-password"},
        "VMS_ADMIN_EMAIL: must be set when VMS_ADMIN_PASSWORD is",
        id="password-without-email",
    ),
    pytest.param(
        {**ADMIN_OK, "VMS_ADMIN_EMAIL": "root-at-example"},
        "VMS_ADMIN_EMAIL: must be an email address",
        id="invalid-admin-email",
    ),
]


@pytest.mark.parametrize(("env", "message"), [*BAD_SETTINGS, *CONTRADICTIONS])
def test_load_settings_names_the_variable_and_the_reason(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(env, config_file=ABSENT)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_secrets_are_not_repeated_in_the_message() -> None:
    for env in ({"VMS_JWT_SECRET": "hunter2-secret"}, {**ADMIN_OK, "VMS_ADMIN_PASSWORD": "hunter2"}):
        with pytest.raises(ConfigError) as raised:
            load_settings(env, config_file=ABSENT)
        assert "hunter2" not in str(raised.value)


def test_a_bad_value_in_the_config_file_names_the_file_key(tmp_path: Path) -> None:
    config = tmp_path / "vms.toml"
    config.write_text('[vms]\ntoken_ttl_minutes = "soon"\n')
    with pytest.raises(ConfigError, match=r"token_ttl_minutes \(in .*vms.toml\): must be an integer"):
        load_settings({}, config_file=config)


@pytest.mark.parametrize("command", ["litestar", "uvicorn"])
@pytest.mark.parametrize(("env", "message"), BAD_SETTINGS)
def test_a_bad_setting_stops_the_server_with_one_line(
    command: str, env: dict[str, str], message: str, tmp_path: Path
) -> None:
    code, output = start_server(command, tmp_path, env)
    assert code != 0, output
    assert f"vms: configuration error: {message}" in output
    assert "Traceback" not in output
    # the line itself, plus at most the server's own notice (uvicorn: "Error loading ASGI app ...")
    assert len(output.strip().splitlines()) <= 2, output


@pytest.mark.parametrize(("env", "message"), CONTRADICTIONS)
def test_a_contradiction_stops_the_server_with_one_line(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    code, output = start_server("uvicorn", tmp_path, env)
    assert code != 0, output
    assert f"vms: configuration error: {message}" in output
    assert "Traceback" not in output
    assert not (tmp_path / "x.sqlite3").exists()  # refused before anything was created
