"""API3:2023 Broken Object Property Level Authorization: mass assignment in, excessive data out.

In: a cliente sending properties it may not set (rol, id, password_hash, token_version, timestamps) on its
own record or at sign-up. Out: no response, error, event or token ever carries a password or its hash.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import bcrypt
import pytest

from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    BCRYPT_HASH,
    Account,
    assert_no_secrets,
    bearer,
    create_account,
    create_vm,
    get_me,
    login,
    server_with,
    split,
    ws_events,
)

# A real bcrypt hash of a password the attacker knows: if it were stored, that password would sign in.
KNOWN_HASH = bcrypt.hashpw(b"hijacked-password", bcrypt.gensalt(4)).decode()


async def me(client: Any, account: Account) -> dict[str, Any]:
    response = await get_me(client, account.token)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# ---------------------------------------------------------------- mass assignment on one's own record


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_a_cliente_cannot_make_itself_administrador(client: Any, cliente: Account, method: str) -> None:
    for body in ({"rol": "administrador"}, {"name": "innocent", "rol": "administrador"}):
        response = await client.request(method, f"/users/{cliente.id}", json=body, headers=cliente.headers)
        assert response.status_code == 403, response.text
    assert (await me(client, cliente))["rol"] == "cliente"
    assert (await client.get("/users", headers=cliente.headers)).status_code == 403


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_a_cliente_cannot_set_server_owned_properties(
    client: Any, cliente: Account, method: str
) -> None:
    before = await me(client, cliente)
    body = {
        "name": "Renamed",
        "id": cliente.id + 1000,
        "password_hash": KNOWN_HASH,
        "token_version": 99,
        "created_at": "2000-01-01T00:00:00Z",
        "updated_at": "2000-01-01T00:00:00Z",
        "is_admin": True,
    }
    response = await client.request(method, f"/users/{cliente.id}", json=body, headers=cliente.headers)
    assert response.status_code in {200, 400, 422}, response.text
    after = await me(client, cliente)  # the same token still works: token_version did not move
    assert after["id"] == cliente.id
    assert after["rol"] == "cliente"
    assert after["created_at"] == before["created_at"]
    assert not after["updated_at"].startswith("2000")
    # password_hash was not stored: the old password still signs in, the hash's password does not
    assert await login(client, cliente.email, cliente.password)
    refused = await client.post("/login", json={"email": cliente.email, "password": "hijacked-password"})
    assert refused.status_code == 401


async def test_a_cliente_changes_what_it_may_change(client: Any, cliente: Account) -> None:
    """The control: name and email are the user's to change, so the refusals above are specific."""
    new_email = f"moved-{cliente.email}"
    body = {"name": "New Name", "email": new_email}
    response = await client.patch(f"/users/{cliente.id}", json=body, headers=cliente.headers)
    assert response.status_code == 200, response.text
    assert (await me(client, cliente))["email"] == new_email


# ---------------------------------------------------------------- sign-up


async def test_anonymous_sign_up_as_administrador_is_refused(client: Any) -> None:
    body = {
        "name": "Mallory",
        "email": "mallory@example.com",
        "password": "mallory-pw-1",
        "rol": "administrador",
    }
    response = await client.post("/users", json=body)
    assert response.status_code in {401, 403}, response.text
    refused = await client.post("/login", json={"email": body["email"], "password": body["password"]})
    assert refused.status_code == 401, "the account was created anyway"


async def test_a_cliente_cannot_create_an_administrador(client: Any, cliente: Account) -> None:
    body = {
        "name": "Mallory",
        "email": "mallory2@example.com",
        "password": "mallory-pw-1",
        "rol": "administrador",
    }
    response = await client.post("/users", json=body, headers=cliente.headers)
    assert response.status_code == 403, response.text
    refused = await client.post("/login", json={"email": body["email"], "password": body["password"]})
    assert refused.status_code == 401


@pytest.mark.parametrize("rol", ["Administrador", "ADMINISTRADOR", "administrador ", "admin", "root"])
async def test_role_spellings_do_not_sneak_through_sign_up(client: Any, rol: str) -> None:
    body = {"name": "Mallory", "email": "mallory3@example.com", "password": "mallory-pw-1", "rol": rol}
    response = await client.post("/users", json=body)
    assert response.status_code in {400, 401, 403, 422}, response.text


async def test_sign_up_ignores_server_owned_properties(client: Any, admin: Account) -> None:
    body = {
        "name": "Eve",
        "email": "eve@example.com",
        "password": "eve-password-1",
        "id": admin.id,
        "password_hash": KNOWN_HASH,
        "token_version": 7,
        "created_at": "2000-01-01T00:00:00Z",
    }
    response = await client.post("/users", json=body)
    assert response.status_code in {201, 400, 422}, response.text
    if response.status_code != 201:
        return
    created = response.json()
    assert created["id"] != admin.id
    assert created["rol"] == "cliente"
    assert not created["created_at"].startswith("2000")
    token = await login(client, "eve@example.com", "eve-password-1")
    assert (await client.get("/users/me", headers=bearer(token))).json()["id"] == created["id"]
    # the administrador is untouched
    assert await login(client, admin.email, ADMIN_PASSWORD)


async def test_an_administrador_may_grant_roles(client: Any, admin: Account) -> None:
    """The control for the refusals above."""
    account = await create_account(client, admin, rol="administrador")
    assert (await client.get("/users", headers=account.headers)).status_code == 200


# ---------------------------------------------------------------- hidden properties as oracles


async def test_users_cannot_be_sorted_or_filtered_by_hidden_columns(client: Any, admin: Account) -> None:
    """Sorting or filtering by password_hash would leak the hashes one comparison at a time."""
    for params in ({"sort": "password_hash"}, {"sort": "token_version"}):
        response = await client.get("/users", params=params, headers=admin.headers)
        assert response.status_code in {400, 422}, (params, response.text)
    total = (await client.get("/users", headers=admin.headers)).headers["x-total-count"]
    for params in ({"password_hash": "nothing"}, {"q": "$2b$"}, {"token_version": "5"}):
        response = await client.get("/users", params=params, headers=admin.headers)
        assert response.status_code in {200, 400}, response.text
        if response.status_code == 200:
            # q searches name and email only, unknown parameters filter nothing
            expected = "0" if "q" in params else total
            assert response.headers["x-total-count"] == expected, params


# ---------------------------------------------------------------- nothing secret goes out


async def test_no_user_representation_carries_a_password(client: Any, admin: Account) -> None:
    password = "very-secret-pw-1"
    created = await client.post(
        "/users",
        json={"name": "Leak", "email": "leak@example.com", "password": password},
        headers=admin.headers,
    )
    assert created.status_code == 201
    user_id = created.json()["id"]
    token = await login(client, "leak@example.com", password)
    new_password = "even-more-secret-2"
    responses = [
        created,
        await client.get("/users", headers=admin.headers),
        await client.get("/users", params={"q": "leak"}, headers=admin.headers),
        await client.get(f"/users/{user_id}", headers=admin.headers),
        await client.get("/users/me", headers=bearer(token)),
        await client.patch(f"/users/{user_id}", json={"name": "Leak 2"}, headers=admin.headers),
        await client.put(f"/users/{user_id}", json={"password": new_password}, headers=admin.headers),
        await client.post("/login", json={"email": "leak@example.com", "password": new_password}),
    ]
    for response in responses:
        assert response.status_code in {200, 201}, response.text
        assert_no_secrets(response.text, password, new_password)
        assert "password" not in response.text.lower()


async def test_no_error_echoes_a_password(client: Any, admin: Account, cliente: Account) -> None:
    attempts = [
        ("POST", "/users", {"name": "x", "email": "not-an-email", "password": "echo-me-please-1"}, None),
        ("POST", "/users", {"name": "x", "email": "e@example.com", "password": "echo-10"}, None),
        ("POST", "/users", {"name": "x", "email": "e@example.com", "password": "é" * 60}, None),
        (
            "POST",
            "/users",
            {"name": "x", "email": admin.email, "password": "echo-me-please-2"},
            admin.headers,
        ),
        ("POST", "/login", {"email": cliente.email, "password": "echo-me-please-3"}, None),
        ("POST", "/login", {"email": "x" * 300, "password": "echo-me-please-4"}, None),
        ("POST", "/login", {"password": "echo-me-please-5"}, None),
        ("PATCH", f"/users/{cliente.id}", {"password": "echo-me-please-6"}, cliente.headers),
        (
            "PATCH",
            f"/users/{cliente.id}",
            {"password": 12345678, "current_password": "echo-me-please-8"},
            cliente.headers,
        ),
        (
            "PATCH",
            f"/users/{cliente.id}",
            {"password": "echo-9x", "current_password": "echo-me-please-7"},
            cliente.headers,
        ),
    ]
    for method, path, body, headers in attempts:
        response = await client.request(method, path, json=body, headers=headers or {})
        assert 400 <= response.status_code < 500, (path, response.text)
        secrets = [str(value) for key, value in body.items() if "password" in key]
        assert_no_secrets(response.text, *secrets)


async def test_tokens_carry_no_secrets(cliente: Account) -> None:
    _, claims, _ = split(cliente.token)
    assert set(claims) <= {"sub", "exp", "iat", "iss", "aud", "jti", "extras", "nbf"}
    assert_no_secrets(str(claims), cliente.password)
    assert cliente.email not in str(claims)


async def test_user_events_carry_no_password(tmp_path: Any) -> None:
    async with server_with(tmp_path) as server:
        admin_token = await login(server.http, ADMIN_EMAIL, ADMIN_PASSWORD)
        password = "event-secret-pw-1"
        created: dict[str, Any] = {}

        async def changes() -> None:
            body = {"name": "Evented", "email": "evented@example.com", "password": password}
            response = await server.http.post("/users", json=body, headers=bearer(admin_token))
            created.update(response.json())
            change = {"password": "event-secret-pw-2", "name": "Evented 2"}
            await server.http.patch(f"/users/{created['id']}", json=change, headers=bearer(admin_token))
            await server.http.delete(f"/users/{created['id']}", headers=bearer(admin_token))

        events = await ws_events(f"{server.ws_url}/ws/users?token={admin_token}", trigger=changes)
        assert isinstance(events, list)
        assert [event["event"] for event in events] == ["user_created", "user_updated", "user_deleted"]
        for event in events:
            assert_no_secrets(json.dumps(event), password, "event-secret-pw-2")
            assert set(event["user"]) == {"id", "name", "email", "rol", "created_at", "updated_at"}


async def test_vm_responses_name_no_user_secrets(client: Any, admin: Account, cliente: Account) -> None:
    vm = await create_vm(client, admin)
    for response in (
        await client.get(f"/vms/{vm['id']}", headers=cliente.headers),
        await client.get("/vms", headers=cliente.headers),
    ):
        assert_no_secrets(response.text, ADMIN_PASSWORD, cliente.password)


async def test_no_log_line_carries_a_password_hash(
    client: Any,
    admin: Account,
    cliente: Account,
    database_url: str,
    capfd: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    """DESIGN: never a password or hash in logs, the log of a write the database refuses included.

    A PostgreSQL trigger stands in for any database-side failure (a lost connection, a full disk, a
    constraint added by a migration) during a password change.
    """
    if database_url == "sqlite":
        pytest.skip("simulates a database-side failure with a PostgreSQL trigger")
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await connection.execute(
            "CREATE OR REPLACE FUNCTION vms_security_test_refuse() RETURNS trigger AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by the security test'; END $$ LANGUAGE plpgsql"
        )
        await connection.execute(
            "CREATE TRIGGER vms_security_test_refuse BEFORE UPDATE ON user_account FOR EACH ROW "
            "WHEN (NEW.name = 'log-probe') EXECUTE FUNCTION vms_security_test_refuse()"
        )
        capfd.readouterr()
        change = {"name": "log-probe", "password": "log-probe-password-1"}
        response = await client.patch(f"/users/{cliente.id}", json=change, headers=admin.headers)
        out, err = capfd.readouterr()
    finally:
        await connection.execute("DROP TRIGGER IF EXISTS vms_security_test_refuse ON user_account")
        await connection.execute("DROP FUNCTION IF EXISTS vms_security_test_refuse()")
        await connection.close()
    assert response.status_code >= 400, "the trigger did not refuse the write"
    assert_no_secrets(response.text, "log-probe-password-1")
    assert not BCRYPT_HASH.search(out + err), "a bcrypt hash was written to the log"
    assert "log-probe-password-1" not in out + err
