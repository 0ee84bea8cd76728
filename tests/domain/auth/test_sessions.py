"""Sessions: refresh tokens that rotate and detect reuse, and sessions a user can see and end.

Every way a session ends is driven through the real app (HTTP and WebSocket), on SQLite and PostgreSQL;
two app instances on one database and Redis stand for two workers.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app import create_app
from app.config import Settings
from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Account,
    LiveServer,
    admin_account,
    assert_error,
    assert_no_secrets_in,
    bearer,
    create_account,
    create_vm,
    dispose_engines,
    expect,
    forge_token,
    get_me,
    make_settings,
    receive_event,
    require,
    wait_closed_with,
    ws_connect,
)
from tests.helpers.changes import read_log


async def sign_in(client: Any, email: str, password: str) -> dict[str, Any]:
    """The whole body of a successful POST /login: both tokens."""
    return dict(expect(await client.post("/login", json={"email": email, "password": password}), 200))


async def refresh(client: Any, refresh_token: str) -> Any:
    return await client.post("/login/refresh", json={"refresh_token": refresh_token})


async def test_a_refresh_gives_a_new_pair_and_spends_the_old_refresh_token(
    client: Any, cliente: Account
) -> None:
    first = await sign_in(client, cliente.email, cliente.password)
    second = expect(await refresh(client, first["refresh_token"]), 200)
    assert set(second) == set(first)
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert (second["expires_in"], second["refresh_expires_in"]) == (15 * 60, 30 * 86_400)
    assert expect(await get_me(client, second["access_token"]), 200)["id"] == cliente.id
    # The next one rotates again: a chain of refreshes keeps one session going.
    third = expect(await refresh(client, second["refresh_token"]), 200)
    assert expect(await get_me(client, third["access_token"]), 200)["id"] == cliente.id
    sessions = expect(await client.get("/users/me/sessions", headers=bearer(third["access_token"])), 200)
    assert len(sessions) == 2  # the fixture's login and this one; refreshing opened none


async def test_a_spent_refresh_token_ends_its_session(client: Any, cliente: Account) -> None:
    stolen = await sign_in(client, cliente.email, cliente.password)
    owner = expect(await refresh(client, stolen["refresh_token"]), 200)
    body = assert_error(await refresh(client, stolen["refresh_token"]), 401)
    assert "already used" in body["detail"], body
    # Neither copy goes on: the rotated refresh token and every access token of the session are refused.
    assert "ended" in assert_error(await refresh(client, owner["refresh_token"]), 401)["detail"]
    for token in (stolen["access_token"], owner["access_token"]):
        assert "revoked" in assert_error(await get_me(client, token), 401)["detail"].lower()
    # Other sessions of the user are untouched.
    expect(await client.get("/users/me", headers=cliente.headers), 200)


async def test_of_concurrent_refreshes_with_one_token_exactly_one_wins(client: Any, cliente: Account) -> None:
    pair = await sign_in(client, cliente.email, cliente.password)
    answers = await asyncio.gather(*(refresh(client, pair["refresh_token"]) for _ in range(8)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] + [401] * 7, [answer.text for answer in answers]
    # The others were reuse: the session has ended, the winner's pair with it.
    (winner,) = (answer.json() for answer in answers if answer.status_code == 200)
    assert_error(await refresh(client, winner["refresh_token"]), 401)
    assert_error(await get_me(client, winner["access_token"]), 401)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b"", "application/json", id="no-body"),
        pytest.param(b"{not json", "application/json", id="garbage"),
        pytest.param(b"{}", "application/json", id="no-token"),
        pytest.param(b'{"refresh_token": 123}', "application/json", id="a-number"),
        pytest.param(b'{"refresh_token": ""}', "application/json", id="empty"),
        pytest.param(b'{"refresh_token": "' + b"x" * 10_000 + b'"}', "application/json", id="10-kB"),
        pytest.param(b"refresh_token=abc", "application/x-www-form-urlencoded", id="a-form"),
    ],
)
async def test_bad_refresh_bodies_get_400(client: Any, body: bytes, content_type: str) -> None:
    response = await client.post("/login/refresh", content=body, headers={"content-type": content_type})
    assert_error(response, 400, 415)


@pytest.mark.parametrize("token", ["not-a-token", "x" * 200, "é" * 40, "eyJhbGciOiJIUzI1NiJ9.e30.x"])
async def test_an_unknown_refresh_token_gets_401(client: Any, token: str) -> None:
    assert "not valid" in assert_error(await refresh(client, token), 401)["detail"]


async def test_an_access_token_is_no_refresh_token(client: Any, cliente: Account) -> None:
    assert_error(await refresh(client, cliente.token), 401)
    expect(await client.get("/users/me", headers=cliente.headers), 200)  # and presenting it ended nothing


async def test_users_see_their_sessions_without_secrets(client: Any, cliente: Account) -> None:
    other = await sign_in(client, cliente.email, cliente.password)
    response = await client.get("/users/me/sessions", headers={**cliente.headers, "user-agent": "probe/1"})
    assert_no_secrets_in(response)
    sessions = expect(response, 200)
    assert [set(session) for session in sessions] == [
        {"id", "created_at", "last_used_at", "ip", "user_agent", "current"}
    ] * 2
    assert [session["current"] for session in sessions] == [True, False]
    for value in (other["refresh_token"], other["access_token"], cliente.token):
        assert value not in response.text
    assert expect(await get_me(client, other["access_token"]), 200)["id"] == cliente.id


async def test_a_user_ends_one_of_their_sessions(client: Any, cliente: Account, admin: Account) -> None:
    other = await sign_in(client, cliente.email, cliente.password)
    sessions = expect(await client.get("/users/me/sessions", headers=cliente.headers), 200)
    other_id = next(session["id"] for session in sessions if not session["current"])
    # Someone else's session, or one that does not exist, is not yours to end: 404 either way.
    admin_session = expect(await client.get("/users/me/sessions", headers=admin.headers), 200)[0]["id"]
    for session_id in (admin_session, 2**40):
        response = await client.delete(f"/users/me/sessions/{session_id}", headers=cliente.headers)
        assert_error(response, 404)
    expect(await get_me(client, admin.token), 200)

    expect(await client.delete(f"/users/me/sessions/{other_id}", headers=cliente.headers), 204)
    assert_error(await get_me(client, other["access_token"]), 401)
    assert_error(await refresh(client, other["refresh_token"]), 401)
    expect(await get_me(client, cliente.token), 200)
    assert_error(await client.delete(f"/users/me/sessions/{other_id}", headers=cliente.headers), 404)
    assert_error(await client.delete("/users/me/sessions/0", headers=cliente.headers), 400)


async def test_an_administrador_ends_every_session_of_a_user(
    client: Any, cliente: Account, admin: Account
) -> None:
    second = await sign_in(client, cliente.email, cliente.password)
    assert_error(await client.delete(f"/users/{admin.id}/sessions", headers=cliente.headers), 403)
    assert_error(await client.delete(f"/users/{2**40}/sessions", headers=admin.headers), 404)
    assert_error(await client.delete(f"/users/{cliente.id}/sessions"), 401)
    expect(await client.delete(f"/users/{cliente.id}/sessions", headers=admin.headers), 204)
    for token in (cliente.token, second["access_token"]):
        assert_error(await get_me(client, token), 401)
    assert_error(await refresh(client, second["refresh_token"]), 401)
    expect(await get_me(client, admin.token), 200)
    # The user can sign in again.
    fresh = await sign_in(client, cliente.email, cliente.password)
    expect(await get_me(client, fresh["access_token"]), 200)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"rol": "administrador"}, id="role-change"),
        pytest.param({"password": "set-by-an-admin-1"}, id="password-set-by-an-admin"),
    ],
)
async def test_a_role_or_password_change_by_an_administrador_ends_every_session(
    client: Any, cliente: Account, admin: Account, change: dict[str, str]
) -> None:
    pair = await sign_in(client, cliente.email, cliente.password)
    expect(await client.patch(f"/users/{cliente.id}", json=change, headers=admin.headers), 200)
    for token in (cliente.token, pair["access_token"]):
        assert_error(await get_me(client, token), 401)
    assert_error(await refresh(client, pair["refresh_token"]), 401)
    expect(await get_me(client, admin.token), 200)


async def test_your_own_new_password_ends_your_other_sessions_only(client: Any, cliente: Account) -> None:
    here = await sign_in(client, cliente.email, cliente.password)
    elsewhere = await sign_in(client, cliente.email, cliente.password)
    body = {"password": "my-new-password-1", "current_password": cliente.password}
    headers = bearer(here["access_token"])
    expect(await client.patch(f"/users/{cliente.id}", json=body, headers=headers), 200)
    expect(await get_me(client, here["access_token"]), 200)
    expect(await refresh(client, here["refresh_token"]), 200)
    for token in (elsewhere["access_token"], cliente.token):
        assert_error(await get_me(client, token), 401)
    assert_error(await refresh(client, elsewhere["refresh_token"]), 401)


async def test_deleting_a_user_ends_its_refresh_tokens(client: Any, cliente: Account, admin: Account) -> None:
    pair = await sign_in(client, cliente.email, cliente.password)
    expect(await client.delete(f"/users/{cliente.id}", headers=admin.headers), 204)
    assert_error(await refresh(client, pair["refresh_token"]), 401)


async def test_no_refresh_token_or_hash_reaches_the_change_log(
    client: Any, cliente: Account, admin: Account
) -> None:
    pair = await sign_in(client, cliente.email, cliente.password)
    renewed = expect(await refresh(client, pair["refresh_token"]), 200)
    expect(await refresh(client, pair["refresh_token"]), 401)  # reuse: ends the session
    entries, _ = await read_log(client, admin, limit=1000)
    text = repr(entries)
    for token in (pair["refresh_token"], renewed["refresh_token"]):
        assert token not in text
        assert hashlib.sha256(token.encode()).hexdigest() not in text


async def test_a_refresh_token_outlives_a_restart_and_reuse_stays_refused(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database=database_url)
    first = create_app(settings)
    async with AsyncTestClient(app=first) as client:
        kept = await sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        spent = await sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        expect(await refresh(client, spent["refresh_token"]), 200)
        expect(await refresh(client, spent["refresh_token"]), 401)
    await dispose_engines(first)

    second = create_app(settings)  # the same database and secret: a restart
    try:
        async with AsyncTestClient(app=second) as client:
            renewed = expect(await refresh(client, kept["refresh_token"]), 200)
            expect(await get_me(client, renewed["access_token"]), 200)
            assert_error(await get_me(client, spent["access_token"]), 401)
    finally:
        await dispose_engines(second)


@pytest.mark.redis
async def test_reuse_on_one_worker_is_refused_by_another_at_once(tmp_path: Path, database_url: str) -> None:
    require("redis")
    settings = make_settings(tmp_path, database=database_url, channels="redis")
    a, b = create_app(settings), create_app(settings)
    try:
        async with AsyncTestClient(app=a) as client_a, AsyncTestClient(app=b) as client_b:
            pair = await sign_in(client_a, ADMIN_EMAIL, ADMIN_PASSWORD)
            renewed = expect(await refresh(client_b, pair["refresh_token"]), 200)
            expect(await get_me(client_a, renewed["access_token"]), 200)
            assert_error(await refresh(client_a, pair["refresh_token"]), 401)
            assert_error(await get_me(client_b, renewed["access_token"]), 401)
            assert_error(await refresh(client_b, renewed["refresh_token"]), 401)
    finally:
        await dispose_engines(a)
        await dispose_engines(b)


# ---------------------------------------------------------------- WebSockets and short access tokens


async def test_a_socket_outlives_its_access_token_when_the_client_sends_a_fresh_one(
    live_server: LiveServer,
) -> None:
    admin = await admin_account(live_server)
    pair = await sign_in(live_server.http, ADMIN_EMAIL, ADMIN_PASSWORD)
    short = forge_token(live_server, pair["access_token"], expires_in=timedelta(seconds=2))
    async with ws_connect(live_server, "/ws/vms", short) as socket:
        renewed = expect(await refresh(live_server.http, pair["refresh_token"]), 200)
        await socket.send(f'{{"token": "{renewed["access_token"]}"}}')
        await asyncio.sleep(3)  # past the first token's expiry
        vm = await create_vm(live_server.http, admin)
        assert (await receive_event(socket))["vm"] == vm
        # Its session ends: the socket is closed with 1008 at once.
        expect(await live_server.http.post("/logout", headers=bearer(renewed["access_token"])), 204)
        await wait_closed_with(socket, [1008], seconds=3)


@pytest.mark.parametrize("which", ["another-session", "garbage", "expired"])
async def test_a_socket_sent_a_token_it_may_not_take_is_closed(live_server: LiveServer, which: str) -> None:
    admin = await admin_account(live_server)
    pair = await sign_in(live_server.http, ADMIN_EMAIL, ADMIN_PASSWORD)
    other = await create_account(live_server.http, admin)
    token = {
        "another-session": other.token,
        "garbage": "not.a.token",
        "expired": forge_token(live_server, pair["access_token"], expires_in=timedelta(seconds=-5)),
    }[which]
    async with ws_connect(live_server, "/ws/vms", pair["access_token"]) as socket:
        await socket.send(f'{{"token": "{token}"}}')
        await wait_closed_with(socket, [1008], seconds=3)


@pytest.mark.parametrize("how", ["admin-ends-all", "user-ends-one", "refresh-reused"])
async def test_ending_a_session_closes_its_sockets(live_server: LiveServer, how: str) -> None:
    admin = await admin_account(live_server)
    cliente = await create_account(live_server.http, admin)
    pair = await sign_in(live_server.http, cliente.email, cliente.password)
    async with (
        ws_connect(live_server, "/ws/vms", pair["access_token"]) as doomed,
        ws_connect(live_server, "/ws/vms", admin.token) as bystander,
    ):
        http = live_server.http
        if how == "admin-ends-all":
            expect(await http.delete(f"/users/{cliente.id}/sessions", headers=admin.headers), 204)
        elif how == "user-ends-one":
            sessions = expect(await http.get("/users/me/sessions", headers=cliente.headers), 200)
            (target,) = (s["id"] for s in sessions if not s["current"])
            expect(await http.delete(f"/users/me/sessions/{target}", headers=cliente.headers), 204)
        else:
            expect(await refresh(http, pair["refresh_token"]), 200)
            assert_error(await refresh(http, pair["refresh_token"]), 401)
        await wait_closed_with(doomed, [1008], seconds=3)
        vm = await create_vm(http, admin)
        assert (await receive_event(bystander))["vm"] == vm


async def test_a_token_spent_longer_ago_than_a_token_lives_is_forgotten(
    client: Any, cliente: Account, settings: Settings
) -> None:
    """The next refresh deletes it: a session keeps the rows of one token lifetime, not of all its life."""
    first = await sign_in(client, cliente.email, cliente.password)
    second = expect(await refresh(client, first["refresh_token"]), 200)
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as connection:  # as if the first was spent 31 days ago
            await connection.execute(
                text("UPDATE auth_refresh_token SET spent_at = :at WHERE token_hash = :hash"),
                {
                    "at": datetime.now(UTC) - timedelta(days=31),
                    "hash": hashlib.sha256(first["refresh_token"].encode()).hexdigest(),
                },
            )
        third = expect(await refresh(client, second["refresh_token"]), 200)
        async with engine.connect() as connection:
            hashes = set(
                (await connection.execute(text("SELECT token_hash FROM auth_refresh_token"))).scalars()
            )
    finally:
        await engine.dispose()
    assert hashlib.sha256(first["refresh_token"].encode()).hexdigest() not in hashes
    assert hashlib.sha256(second["refresh_token"].encode()).hexdigest() in hashes  # spent now: kept
    # Presenting the forgotten one is an unknown token: refused, and it ends nothing.
    assert "not valid" in assert_error(await refresh(client, first["refresh_token"]), 401)["detail"]
    expect(await refresh(client, third["refresh_token"]), 200)
