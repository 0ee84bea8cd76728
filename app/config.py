"""Settings: documented defaults in ``litestar.toml`` ([vms] table), overridden by ``VMS_<KEY>`` variables.

Everything is validated once, at start: a bad value stops the service with a message naming the key
instead of failing later on a request.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, cast

import msgspec
import msgspec.inspect
from sqlalchemy.engine import make_url

from app.logs import LogFormat
from app.security.credentials import email_problem, password_problem

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE_ENV = "VMS_CONFIG_FILE"
ENV_PREFIX = "VMS_"
MIN_SECRET_BYTES = 32


class ConfigError(RuntimeError):
    """The configuration cannot be used; the message says which key and why."""


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    database_url: str = "sqlite+aiosqlite:///vms.sqlite3"
    jwt_secret: str | None = None
    jwt_secret_file: str | None = None
    jwt_issuer: str = "vms"
    jwt_audience: str = "vms-api"
    token_ttl_minutes: Annotated[int, msgspec.Meta(ge=1, le=60 * 24 * 30)] = 15
    # How long a refresh token (and so a session nobody uses) lives; every refresh starts it again.
    refresh_ttl_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 30
    admin_email: str | None = None
    admin_password: str | None = None
    admin_name: str = "Administrator"
    bcrypt_rounds: Annotated[int, msgspec.Meta(ge=4, le=16)] = 12
    bcrypt_threads: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    login_rate_limit: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 10
    # Failed logins for one email (from any address) within 15 minutes before its logins get 429.
    login_account_failures: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 10
    allow_signup: bool = True
    redis_url: str | None = None
    # Prefix ("<namespace>:") of every Redis key and pub/sub channel VMS uses; lets several deployments or
    # test runs share a server without seeing each other's events, revocations or counters.
    redis_namespace: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "vms"
    cors_origins: list[str] = msgspec.field(default_factory=list)
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    ws_backlog: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    # At least 2: a request that writes holds its session's connection while its write takes another
    # (app/domain/vms/services.py), and /health's write probe does the same; with one, they wait on
    # each other until the timeout.
    db_pool_size: Annotated[int, msgspec.Meta(ge=2, le=200)] = 10
    # How long a request waits for the database (connect, pool checkout, a statement, SQLite's write lock)
    # before it answers 503 with Retry-After.
    db_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    # How long a request's headers and body may take to arrive (app/http/slow_clients.py, for uvicorn).
    client_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    vm_cache_entries: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 20_000
    # The change log keeps entries this many days, and at most this many entries (0: no cap).
    change_log_retention_days: Annotated[int, msgspec.Meta(ge=1, le=36_500)] = 90
    change_log_max_entries: Annotated[int, msgspec.Meta(ge=0, le=2**62)] = 0
    # Seconds between two background prunings of the change log.
    change_log_prune_seconds: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 60
    # Seconds between two background prunings of the sign-in sessions no token can use any more.
    session_prune_seconds: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 3600
    docs_cdn: bool = False
    log_level: str = "INFO"
    # JSON lines, or plain text (console); auto: plain text when standard error is a terminal.
    log_format: LogFormat = "auto"
    # VMS's own access line per request (app/http/access_log.py) instead of uvicorn's.
    access_log: bool = True
    # A static bearer token GET /metrics also accepts (a Prometheus scraper's); unset: administradores only.
    metrics_token: Annotated[str, msgspec.Meta(min_length=16, max_length=256)] | None = None
    debug: bool = False

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        """The database file, or None for an in-memory or non-SQLite database."""
        if not self.is_sqlite:
            return None
        database = make_url(self.database_url).database
        if not database or database == ":memory:":
            return None
        return Path(database)

    def resolved_secret_file(self) -> Path:
        if self.jwt_secret_file:
            return Path(self.jwt_secret_file)
        db_path = self.sqlite_path
        directory = db_path.resolve().parent if db_path else Path.cwd()
        return directory / "vms.jwt-secret"


_LIST_KEYS = {"cors_origins", "trusted_proxies"}
# Optional keys an empty variable leaves unset (VMS_REDIS_URL= turns Redis off).
_EMPTY_MEANS_UNSET = {"jwt_secret", "redis_url", "admin_email", "admin_password", "metrics_token"}


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    fields = set(Settings.__struct_fields__)
    overrides: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_FILE_ENV:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in fields:
            continue
        if key in _LIST_KEYS:
            overrides[key] = [item.strip() for item in value.split(",") if item.strip()]
        elif value == "" and key in _EMPTY_MEANS_UNSET:
            overrides[key] = None
        else:
            overrides[key] = value
    return overrides


def _describe(info: msgspec.inspect.Type) -> str:
    """What a setting accepts, in words, from the type and bounds declared on ``Settings``."""
    if isinstance(info, msgspec.inspect.UnionType):  # "X | None": None is what leaving it unset means
        return " or ".join(_describe(t) for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
    if isinstance(info, msgspec.inspect.IntType):
        if info.ge is not None and info.le is not None:
            return f"an integer from {info.ge} to {info.le}"
        return "an integer"
    if isinstance(info, msgspec.inspect.LiteralType):
        return "one of " + ", ".join(str(value) for value in info.values)
    if isinstance(info, msgspec.inspect.BoolType):
        return "true or false"
    if isinstance(info, msgspec.inspect.StrType) and info.max_length is not None:
        return f"text of {info.min_length or 0} to {info.max_length} characters"
    if isinstance(info, msgspec.inspect.ListType):
        return "a comma-separated list"
    return "text"


_FIELD_TYPES = {
    field.name: field.type
    for field in cast("msgspec.inspect.StructType", msgspec.inspect.type_info(Settings)).fields
}
_FIELD_HINTS = {field.name: field.type for field in msgspec.structs.fields(Settings)}
# Never echoed back in an error message.
_SECRET_KEYS = {"jwt_secret", "admin_password", "metrics_token"}


def _field_problems(raw: dict[str, Any], origin: dict[str, str]) -> list[str]:
    """One "NAME: must be ... (got ...)" per value that does not fit its field, or per unknown key."""
    problems = []
    for key, value in raw.items():
        if key not in _FIELD_TYPES:
            problems.append(f"{origin[key]}: unknown setting")
            continue
        try:
            # One field at a time, so every bad one is named; strict=False lets "12" and "true" from the
            # environment become int and bool.
            msgspec.convert(value, _FIELD_HINTS[key], strict=False)
        except msgspec.ValidationError:
            got = "" if key in _SECRET_KEYS else f" (got {value!r})"
            problems.append(f"{origin[key]}: must be {_describe(_FIELD_TYPES[key])}{got}")
    return problems


def _consistency_problems(settings: Settings, origin: dict[str, str]) -> list[str]:
    """Values that are each well-formed but cannot work, alone or together."""

    def name(key: str) -> str:
        return origin.get(key, f"{ENV_PREFIX}{key.upper()}")

    problems = []
    if settings.jwt_secret is not None and len(settings.jwt_secret.encode()) < MIN_SECRET_BYTES:
        problems.append(
            f"{name('jwt_secret')}: must be at least {MIN_SECRET_BYTES} bytes "
            f"(got {len(settings.jwt_secret.encode())})"
        )
    scheme = settings.database_url.partition("://")[0] if "://" in settings.database_url else ""
    if not (scheme.startswith("sqlite") or scheme.startswith("postgresql")):
        got = f"scheme {scheme!r}" if scheme else "no scheme"
        problems.append(
            f"{name('database_url')}: must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL (got {got})"
        )
    # The start-up bootstrap creates an administrador only with both; one alone used to do nothing silently.
    email, password = settings.admin_email, settings.admin_password
    if email is not None and password is None:
        problems.append(f"{name('admin_password')}: must be set when {name('admin_email')} is")
    if password is not None and email is None:
        problems.append(f"{name('admin_email')}: must be set when {name('admin_password')} is")
    if email is not None and (problem := email_problem(email)):
        problems.append(f"{name('admin_email')}: {problem}")
    if password is not None and (problem := password_problem(password)):
        problems.append(f"{name('admin_password')}: {problem}")
    return problems


def load_settings(environ: dict[str, str] | None = None, config_file: Path | None = None) -> Settings:
    """Read the TOML defaults, apply ``VMS_*`` overrides and validate the result.

    Raises ConfigError with one line naming every offending variable (or file key) and why.
    """
    environ = dict(os.environ if environ is None else environ)
    path = config_file or Path(environ.get(CONFIG_FILE_ENV, PROJECT_ROOT / "litestar.toml"))
    raw: dict[str, Any] = {}
    if path.is_file():
        try:
            with path.open("rb") as handle:
                raw = dict(tomllib.load(handle).get("vms", {}))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    # Where each value came from, so a message names what the operator has to change.
    origin = {key: f"{key} (in {path})" for key in raw}
    overrides = _env_overrides(environ)
    origin |= {key: f"{ENV_PREFIX}{key.upper()}" for key in overrides}
    raw.update(overrides)
    if problems := _field_problems(raw, origin):
        raise ConfigError("; ".join(problems))
    settings = msgspec.convert(raw, Settings, strict=False)
    if problems := _consistency_problems(settings, origin):
        raise ConfigError("; ".join(problems))
    return settings


def jwt_secret(settings: Settings) -> str:
    """The configured secret, or one generated on first start and kept in a 0600 file.

    Keeping it on disk means tokens survive a restart without anyone having to pick a secret.
    """
    if settings.jwt_secret:
        return settings.jwt_secret
    path = settings.resolved_secret_file()
    if path.exists():
        secret = path.read_text().strip()
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"{path} holds a JWT secret shorter than {MIN_SECRET_BYTES} bytes")
        return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # Write a private temporary file, then link it into place: the link is atomic and fails when
    # another worker starting at the same moment won the race, in which case its secret is used.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    try:
        os.link(temporary, path)
    except FileExistsError:
        return jwt_secret(settings)
    finally:
        temporary.unlink()
    return secret


def check_deployment(settings: Settings, workers: int) -> list[str]:
    """Refuse what cannot work across processes; return warnings for what works but is unwise."""
    if workers <= 1:
        return []
    if not settings.redis_url:
        raise ConfigError(
            f"{workers} workers were requested but VMS_REDIS_URL is not set: with the in-memory channels "
            "backend each worker would only see its own events, rate limits and logouts would not be "
            "shared, and each worker's caches of accounts and VMs would miss the others' changes. "
            "Set VMS_REDIS_URL (see README, 'Scaling out') or run one worker."
        )
    if settings.is_sqlite:
        return [
            f"{workers} workers share one SQLite file: writes are serialised per process only. "
            "Use PostgreSQL (VMS_DATABASE_URL=postgresql+asyncpg://...) for several workers."
        ]
    return []


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
