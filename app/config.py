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
from typing import Annotated, Any

import msgspec
from sqlalchemy.engine import make_url

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
    token_ttl_minutes: Annotated[int, msgspec.Meta(ge=1, le=60 * 24 * 30)] = 60
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
    db_pool_size: Annotated[int, msgspec.Meta(ge=1, le=200)] = 10
    vm_cache_entries: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 20_000
    docs_cdn: bool = False
    log_level: str = "INFO"
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
        elif value == "" and key in {"jwt_secret", "redis_url", "admin_email", "admin_password"}:
            overrides[key] = None
        else:
            overrides[key] = value
    return overrides


def load_settings(environ: dict[str, str] | None = None, config_file: Path | None = None) -> Settings:
    """Read the TOML defaults, apply ``VMS_*`` overrides and validate the result."""
    environ = dict(os.environ if environ is None else environ)
    path = config_file or Path(environ.get(CONFIG_FILE_ENV, PROJECT_ROOT / "litestar.toml"))
    raw: dict[str, Any] = {}
    if path.is_file():
        with path.open("rb") as handle:
            raw = dict(tomllib.load(handle).get("vms", {}))
    raw.update(_env_overrides(environ))
    try:
        # strict=False lets "12" and "true" from the environment become int and bool.
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    if settings.jwt_secret is not None and len(settings.jwt_secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"VMS_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
    if not (settings.is_sqlite or settings.database_url.startswith("postgresql")):
        raise ConfigError("VMS_DATABASE_URL must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL")
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


_WORKER_FLAGS = ("-W", "-w", "--wc", "--web-concurrency", "--workers")  # -w: gunicorn, hypercorn


def requested_workers(argv: list[str], environ: dict[str, str]) -> int:
    """How many server processes this start asked for (``litestar run -W N`` or ``uvicorn --workers N``).

    Worker processes are spawned with the parent's ``sys.argv``, so each of them sees the same answer.
    """
    count = 1
    for name in ("LITESTAR_WEB_CONCURRENCY", "WEB_CONCURRENCY"):
        if environ.get(name, "").isdigit():
            count = max(count, int(environ[name]))
    for index, arg in enumerate(argv):
        flag, _, value = arg.partition("=")
        if flag in _WORKER_FLAGS:
            if not value and index + 1 < len(argv):
                value = argv[index + 1]
            if value.isdigit():
                count = max(count, int(value))
    return count


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
