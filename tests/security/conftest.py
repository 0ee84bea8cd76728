"""Tools for attacking the app: forged tokens, apps with other settings, WebSocket probes, leak scans.

Every helper talks to the real app over HTTP or WebSocket; nothing here reaches into the app's internals
except the JWT secret, which a forger needs to sign a token the app would otherwise accept.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.testing import AsyncTestClient
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app import create_app
from app.config import Settings, jwt_secret
from tests.conftest import Account, LiveServer, make_settings, run_server

# ---------------------------------------------------------------- tokens


def claims_for(
    settings: Settings, user_id: int | str, *, version: int = 0, session: int | None = None, ttl: int = 600
) -> dict[str, Any]:
    """The claims POST /login puts in a token (see app.security.TokenService.issue)."""
    now = int(time.time())
    return {
        "sub": str(user_id),
        "iat": now,
        "exp": now + ttl,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "jti": uuid.uuid4().hex,
        "extras": {"ver": version, "sid": session},
    }


def forge(
    settings: Settings,
    user_id: int | str,
    *,
    version: int = 0,
    session: int | None = None,
    key: str | None = None,
    algorithm: str = "HS256",
    drop: Iterable[str] = (),
    **overrides: Any,
) -> str:
    """A token signed with the app's own secret (or ``key``), with claims dropped or overridden."""
    claims = claims_for(settings, user_id, version=version, session=session)
    claims.update(overrides)
    for name in drop:
        claims.pop(name, None)
    return jwt.encode(claims, key if key is not None else jwt_secret(settings), algorithm=algorithm)


def version_of(token: str) -> int:
    """The token version a real token was issued under (what ``ver`` must say for that user now)."""
    return int(split(token)[1]["extras"]["ver"])


def session_of(token: str) -> int:
    """The sign-in session a real token belongs to (what ``sid`` must say)."""
    return int(split(token)[1]["extras"]["sid"])


def forge_as(settings: Settings, account: Account, **kwargs: Any) -> str:
    """A token for ``account`` that differs from a real one only in what ``kwargs`` change."""
    kwargs.setdefault("version", version_of(account.token))
    kwargs.setdefault("session", session_of(account.token))
    return forge(settings, account.id, **kwargs)


def sign_claims(settings: Settings, claims: dict[str, Any]) -> str:
    """Sign claims as they are, even ones PyJWT's encoder refuses to produce (``"iss": null``)."""
    return jwt.api_jws.encode(json.dumps(claims).encode(), jwt_secret(settings), algorithm="HS256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    """A JWS built by hand: any header (``alg: none``), any claims, any signature segment."""
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), signature],
    )


def split(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, claims, signature = token.split(".")

    def load(segment: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        return loaded

    return load(header), load(claims), signature


# ---------------------------------------------------------------- engine-specific findings


def xfail_on(request: pytest.FixtureRequest, engine: str, reason: str) -> None:
    """Mark the running test strict-xfail when it runs on ``engine`` (``sqlite`` or ``postgres``) only.

    For findings one database engine shows and the other does not; call it before the attack.
    """
    running = "sqlite" if request.getfixturevalue("database_url") == "sqlite" else "postgres"
    if running == engine:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


# ---------------------------------------------------------------- apps with other settings


async def dispose_engines(app: Litestar) -> None:
    """Close the app's database pool (F14: the app's shutdown leaves it to the garbage collector)."""
    plugin = app.plugins.get(SQLAlchemyPlugin)
    configs = plugin.config if isinstance(plugin.config, list | tuple) else [plugin.config]
    for config in configs:
        await config.get_engine().dispose()


@pytest.fixture(autouse=True)
def _collect_leaked_pools() -> None:
    """Collect the pools earlier tests' apps left behind now, not at some random later moment.

    The shared ``app`` fixture's app never disposes its engine (F14). Its pooled connections are finalized
    whenever the garbage collector runs, after their event loop is closed; the failure is logged, logging
    it fails, and the ``--- Logging error ---`` traceback Python 3.11 prints calls ``ast.parse``.
    """
    gc.collect()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """No garbage collection while pytest renders a traceback (for these tests only).

    If a leaked connection is finalized inside pytest's own ``ast.parse`` (rendering a failure or an
    xfail), the nested ``ast.parse`` of the logging error above corrupts it: "SystemError: AST constructor
    recursion depth mismatch", and pytest aborts the whole session (F14).
    """
    gc.disable()
    try:
        return (yield)
    finally:
        gc.enable()


@asynccontextmanager
async def client_with(tmp_path: Path, **overrides: Any) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The real app, on its own SQLite file, with these settings (``login_rate_limit=3``, ...)."""
    directory = tmp_path / f"app-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    app = create_app(make_settings(directory, **overrides))
    try:
        async with AsyncTestClient(app=app) as client:
            yield client
    finally:
        await dispose_engines(app)


@asynccontextmanager
async def server_with(tmp_path: Path, **overrides: Any) -> AsyncIterator[LiveServer]:
    """The real app on a real uvicorn server (for WebSocket), on its own SQLite file."""
    directory = tmp_path / f"server-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    app = create_app(make_settings(directory, **overrides))
    try:
        async with run_server(app) as server:
            yield server
    finally:
        await dispose_engines(app)


# ---------------------------------------------------------------- WebSocket


async def ws_events(
    url: str, *, headers: dict[str, str] | None = None, trigger: Any = None, seconds: float = 2.0
) -> str | list[dict[str, Any]]:
    """Connect, run ``trigger`` (an awaitable factory), and say what the socket got.

    Returns ``"refused <status>"`` when the handshake is refused, ``"closed <code>"`` when the server
    closes the socket before any event, or the list of events received within ``seconds``.
    """
    received: list[dict[str, Any]] = []
    try:
        async with connect(url, additional_headers=headers or {}, open_timeout=10, close_timeout=2) as socket:
            if trigger is not None:
                await trigger()
            deadline = asyncio.get_running_loop().time() + seconds
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    message = await asyncio.wait_for(socket.recv(), timeout=left)
                except TimeoutError:
                    break
                received.append(json.loads(message))
    except InvalidStatus as refused:
        return f"refused {refused.response.status_code}"
    except ConnectionClosed as closed:
        if received:
            return received
        frame = closed.rcvd
        return f"closed {frame.code if frame else 'without a frame'}"
    return received


# ---------------------------------------------------------------- leaks

BCRYPT_HASH = re.compile(r"\$2[abxy]?\$\d{2}\$")
INTERNALS = re.compile(
    r"Traceback|File \"|sqlalchemy|aiosqlite|sqlite3|asyncpg|psycopg|IntegrityError|OperationalError|"
    r"DataError|UNIQUE constraint|violates .*constraint|\.py\"?, line \d+",
    re.IGNORECASE,
)
SQL = re.compile(r"\b(SELECT .* FROM|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b")


def assert_no_internals(text: str) -> None:
    """An error body says what was wrong, never how the server is built."""
    assert not INTERNALS.search(text), f"server internals in a response: {text[:500]}"
    assert not SQL.search(text), f"SQL in a response: {text[:500]}"


def json_keys(value: Any) -> set[str]:
    """Every key at any depth of a decoded JSON value."""
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in json_keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in json_keys(item)}
    return set()


def assert_no_secrets(text: str, *secrets: str) -> None:
    """No bcrypt hash, no password field, and none of ``secrets`` (submitted passwords) in ``text``."""
    assert not BCRYPT_HASH.search(text), f"a bcrypt hash leaked: {text[:500]}"
    for secret in secrets:
        assert secret not in text, f"a submitted password leaked: {text[:500]}"
    try:
        keys = json_keys(json.loads(text)) if text else set()
    except ValueError:
        keys = set()
    leaked = {key for key in keys if "password" in key.lower() or "hash" in key.lower()}
    assert not leaked, f"password fields in a response: {sorted(leaked)}: {text[:500]}"
