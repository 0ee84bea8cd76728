"""/users: who may read, create, change and delete which account."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from litestar.testing import AsyncTestClient

from app import create_app
from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Account,
    array_parameter,
    assert_error,
    assert_user,
    bearer,
    can_login,
    create_account,
    expect,
    get_me,
    login,
    make_settings,
    total_count,
)


def new_user(rol: str | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "New User",
        "email": f"user-{uuid.uuid4().hex[:8]}@example.com",
        "password": "a-good-password",
    }
    if rol is not None:
        body["rol"] = rol
    return {**body, **fields}


async def get_user(client: Any, admin: Account, user_id: int) -> dict[str, Any]:
    return assert_user(expect(await client.get(f"/users/{user_id}", headers=admin.headers), 200))


async def me(client: Any, account: Account) -> Any:
    return await get_me(client, account.token)


# ---------------------------------------------------------------- reading


async def test_me_is_the_caller(client: Any, admin: Account, cliente: Account) -> None:
    assert assert_user(expect(await me(client, admin), 200))["id"] == admin.id
    body = assert_user(expect(await me(client, cliente), 200))
    assert (body["id"], body["email"], body["rol"]) == (cliente.id, cliente.email, "cliente")
    assert_error(await client.get("/users/me"), 401)


async def test_listing_users_is_for_admins(client: Any, admin: Account, cliente: Account) -> None:
    assert_error(await client.get("/users", headers=cliente.headers), 403)
    assert_error(await client.get("/users"), 401)
    response = await client.get("/users", headers=admin.headers)
    users = expect(response, 200)
    assert isinstance(users, list)
    for user in users:
        assert_user(user)
    assert {user["id"] for user in users} == {admin.id, cliente.id}
    assert response.headers["X-Total-Count"] == "2"


async def test_list_users_pages_filters_searches_and_sorts(client: Any, admin: Account) -> None:
    for name in ("carol", "alice", "bob"):
        await create_account(client, admin, name=name)
    second_admin = await create_account(client, admin, rol="administrador", name="dave")

    async def listing(**params: Any) -> tuple[list[dict[str, Any]], int]:
        response = await client.get("/users", headers=admin.headers, params=params)
        return expect(response, 200), int(response.headers["X-Total-Count"])

    everyone, count = await listing()
    assert count == len(everyone) == 5
    assert [user["id"] for user in everyone] == sorted(user["id"] for user in everyone)

    page, count = await listing(limit=2, offset=1)
    assert count == 5
    assert [user["id"] for user in page] == [user["id"] for user in everyone[1:3]]
    page, count = await listing(limit=2, offset=4)
    assert (len(page), count) == (1, 5)
    page, count = await listing(offset=10)
    assert (page, count) == ([], 5)

    admins, count = await listing(rol="administrador")
    assert {user["id"] for user in admins} == {admin.id, second_admin.id}
    assert count == 2
    clientes, count = await listing(rol="cliente")
    assert {user["name"] for user in clientes} == {"alice", "bob", "carol"}
    assert count == 3

    found, count = await listing(q="ALI")  # name, case-insensitive
    assert [user["name"] for user in found] == ["alice"]
    assert count == 1
    found, count = await listing(q=second_admin.email.split("@")[0].upper())  # email
    assert [user["id"] for user in found] == [second_admin.id]
    found, count = await listing(q="zzz-nobody")
    assert (found, count) == ([], 0)

    by_name, _ = await listing(sort="name", order="desc")
    assert [user["name"] for user in by_name] == ["dave", "carol", "bob", "alice", "Admin"]
    by_name, _ = await listing(sort="name", order="asc", limit=2)
    assert [user["name"] for user in by_name] == ["Admin", "alice"]
    by_id, _ = await listing(sort="id", order="desc")
    assert [user["id"] for user in by_id] == sorted((user["id"] for user in everyone), reverse=True)
    combined, count = await listing(rol="cliente", sort="name", order="desc", limit=1, offset=1)
    assert ([user["name"] for user in combined], count) == (["bob"], 3)


async def test_a_repeated_rol_filter_means_any_of_them(client: Any, admin: Account) -> None:
    for name in ("carol", "alice"):
        await create_account(client, admin, name=name)

    async def listing(**params: Any) -> tuple[list[str], int]:
        response = await client.get("/users", headers=admin.headers, params={"sort": "name", **params})
        return [user["name"] for user in expect(response, 200)], int(response.headers["X-Total-Count"])

    assert await listing(rol=["cliente", "administrador"]) == (["Admin", "alice", "carol"], 3)
    assert await listing(rol=["cliente", "cliente"]) == (["alice", "carol"], 2)
    assert await listing(rol=["administrador", "cliente"], limit=1, offset=2) == (["carol"], 3)
    for bad in (["cliente", "root"], ["cliente"] * 6):
        assert_error(await client.get("/users", headers=admin.headers, params={"rol": bad}), 400)
    schema = (await client.get("/docs/openapi.json")).json()  # not expect(): it names password fields
    rol, rol_items = array_parameter(schema, "/users", "rol")
    assert rol["maxItems"] == 5
    assert set(rol_items["enum"]) == {"administrador", "cliente"}


async def test_get_user_admin_or_self(client: Any, admin: Account, cliente: Account) -> None:
    other = await create_account(client, admin)
    assert (await get_user(client, admin, cliente.id))["email"] == cliente.email
    body = assert_user(expect(await client.get(f"/users/{cliente.id}", headers=cliente.headers), 200))
    assert body["id"] == cliente.id
    assert_error(await client.get(f"/users/{other.id}", headers=cliente.headers), 403, 404)
    assert_error(await client.get(f"/users/{admin.id}", headers=cliente.headers), 403, 404)
    assert_error(await client.get(f"/users/{cliente.id}"), 401)
    assert_error(await client.get("/users/999999", headers=admin.headers), 404)


# ---------------------------------------------------------------- creating


async def test_anonymous_sign_up_creates_a_cliente(client: Any, admin: Account) -> None:
    body = new_user()
    created = assert_user(expect(await client.post("/users", json=body), 201))
    assert (created["email"], created["name"], created["rol"]) == (body["email"], body["name"], "cliente")
    assert await can_login(client, body["email"], body["password"])
    assert (await get_user(client, admin, created["id"])) == created
    explicit = assert_user(expect(await client.post("/users", json=new_user("cliente")), 201))
    assert explicit["rol"] == "cliente"


async def test_only_an_admin_can_create_an_admin(client: Any, admin: Account, cliente: Account) -> None:
    before = await total_count(client, "/users", admin.headers)
    anonymous = new_user("administrador")
    assert_error(await client.post("/users", json=anonymous), 401, 403)
    by_cliente = new_user("administrador")
    assert_error(await client.post("/users", json=by_cliente, headers=cliente.headers), 403)
    assert await total_count(client, "/users", admin.headers) == before
    assert not await can_login(client, anonymous["email"], anonymous["password"])
    assert not await can_login(client, by_cliente["email"], by_cliente["password"])

    body = new_user("administrador")
    created = assert_user(expect(await client.post("/users", json=body, headers=admin.headers), 201))
    assert created["rol"] == "administrador"
    new_admin = bearer(await login(client, body["email"], body["password"]))
    expect(await client.get("/users", headers=new_admin), 200)


async def test_duplicate_email_is_409_case_insensitively(
    client: Any, admin: Account, cliente: Account
) -> None:
    before = await total_count(client, "/users", admin.headers)
    for email in (cliente.email, cliente.email.upper(), ADMIN_EMAIL.title()):
        assert_error(await client.post("/users", json=new_user(email=email)), 409)
        assert_error(await client.post("/users", json=new_user(email=email), headers=admin.headers), 409)
    assert await total_count(client, "/users", admin.headers) == before
    # the email is stored lower-cased, so a mixed-case sign-up logs in with any case
    mixed = new_user(email="Mixed.Case@Example.COM")
    assert expect(await client.post("/users", json=mixed), 201)["email"] == "mixed.case@example.com"
    assert await can_login(client, "MIXED.case@example.com", mixed["password"])


async def test_concurrent_duplicate_sign_ups_make_one_account(client: Any, admin: Account) -> None:
    email = f"race-{uuid.uuid4().hex[:8]}@example.com"
    bodies = [new_user(email=email.upper() if i % 2 else email, name=f"racer {i}") for i in range(10)]
    responses = await asyncio.gather(*(client.post("/users", json=body) for body in bodies))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [409] * 9, [response.text for response in responses]
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409)
    found = expect(await client.get("/users", headers=admin.headers, params={"q": email}), 200)
    assert len(found) == 1


async def test_sign_up_can_be_disabled(tmp_path: Any) -> None:
    app = create_app(make_settings(tmp_path, allow_signup=False))
    async with AsyncTestClient(app=app) as client:
        body = new_user()
        assert_error(await client.post("/users", json=body), 403)
        assert not await can_login(client, body["email"], body["password"])
        token = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        created = expect(await client.post("/users", json=body, headers=bearer(token)), 201)
        assert created["rol"] == "cliente"
        assert await can_login(client, body["email"], body["password"])


# ---------------------------------------------------------------- updating


async def test_admin_updates_any_field(client: Any, admin: Account, cliente: Account) -> None:
    before = await get_user(client, admin, cliente.id)
    changes = {
        "name": "Renamed",
        "email": f"renamed-{uuid.uuid4().hex[:6]}@example.com",
        "rol": "administrador",
    }
    updated = assert_user(
        expect(await client.patch(f"/users/{cliente.id}", json=changes, headers=admin.headers), 200)
    )
    assert {key: updated[key] for key in changes} == changes
    assert updated["created_at"] == before["created_at"]
    assert await get_user(client, admin, cliente.id) == updated
    assert await can_login(client, changes["email"], cliente.password)


async def test_put_is_a_partial_update_too(client: Any, admin: Account, cliente: Account) -> None:
    before = await get_user(client, admin, cliente.id)
    updated = expect(
        await client.put(f"/users/{cliente.id}", json={"name": "Only Name"}, headers=admin.headers), 200
    )
    assert updated["name"] == "Only Name"
    assert (updated["email"], updated["rol"]) == (before["email"], before["rol"])
    same = expect(await client.patch(f"/users/{cliente.id}", json={}, headers=admin.headers), 200)
    assert (same["name"], same["email"]) == ("Only Name", before["email"])


async def test_self_update_of_name_and_email(client: Any, admin: Account, cliente: Account) -> None:
    email = f"self-{uuid.uuid4().hex[:6]}@example.com"
    response = await client.put(
        f"/users/{cliente.id}", json={"name": "Me Myself", "email": email}, headers=cliente.headers
    )
    body = expect(response, 200)
    assert (body["name"], body["email"], body["rol"]) == ("Me Myself", email, "cliente")
    # a name or email change does not log anyone out
    assert expect(await me(client, cliente), 200)["email"] == email


async def test_non_admin_cannot_change_a_role(client: Any, admin: Account, cliente: Account) -> None:
    for method in ("patch", "put"):
        response = await getattr(client, method)(
            f"/users/{cliente.id}", json={"rol": "administrador", "name": "Sneaky"}, headers=cliente.headers
        )
        assert_error(response, 403)
    after = await get_user(client, admin, cliente.id)
    assert (after["rol"], after["name"]) == ("cliente", cliente.email.split("@")[0])
    assert_error(await client.get("/users", headers=cliente.headers), 403)


async def test_cliente_cannot_update_someone_else(client: Any, admin: Account, cliente: Account) -> None:
    other = await create_account(client, admin)
    for target in (other.id, admin.id):
        response = await client.patch(f"/users/{target}", json={"name": "Hijacked"}, headers=cliente.headers)
        assert_error(response, 403, 404)
        assert (await get_user(client, admin, target))["name"] != "Hijacked"
    assert_error(await client.patch(f"/users/{other.id}", json={"name": "x"}), 401)


async def test_update_errors(client: Any, admin: Account, cliente: Account) -> None:
    assert_error(await client.patch("/users/999999", json={"name": "Ghost"}, headers=admin.headers), 404)
    response = await client.patch(
        f"/users/{cliente.id}", json={"email": ADMIN_EMAIL.upper()}, headers=admin.headers
    )
    assert_error(response, 409)
    response = await client.patch(
        f"/users/{cliente.id}", json={"email": ADMIN_EMAIL}, headers=cliente.headers
    )
    assert_error(response, 409)
    assert (await get_user(client, admin, cliente.id))["email"] == cliente.email


async def test_own_password_change_needs_the_current_one(client: Any, cliente: Account) -> None:
    url = f"/users/{cliente.id}"
    new = "brand-new-password"
    for extra in ({}, {"current_password": "wrong-password"}, {"current_password": ""}):
        response = await client.patch(url, json={"password": new, **extra}, headers=cliente.headers)
        assert_error(response, 403, field="current_password")
    assert await can_login(client, cliente.email, cliente.password)
    assert not await can_login(client, cliente.email, new)
    # the refused attempts retired nothing
    expect(await me(client, cliente), 200)
    other_session = bearer(await login(client, cliente.email, cliente.password))

    response = await client.patch(
        url, json={"password": new, "current_password": cliente.password}, headers=cliente.headers
    )
    expect(response, 200)
    assert await can_login(client, cliente.email, new)
    assert not await can_login(client, cliente.email, cliente.password)
    # The session the change was made from goes on; every other session of the user has ended.
    expect(await me(client, cliente), 200)
    assert_error(await client.get("/users/me", headers=other_session), 401)


async def test_admin_resets_a_password_without_the_current_one(
    client: Any, admin: Account, cliente: Account
) -> None:
    response = await client.put(
        f"/users/{cliente.id}", json={"password": "reset-by-admin"}, headers=admin.headers
    )
    expect(response, 200)
    assert await can_login(client, cliente.email, "reset-by-admin")
    assert not await can_login(client, cliente.email, cliente.password)
    assert_error(await me(client, cliente), 401)
    expect(await me(client, admin), 200)


async def test_role_change_retires_old_tokens(client: Any, admin: Account, cliente: Account) -> None:
    expect(
        await client.patch(f"/users/{cliente.id}", json={"rol": "administrador"}, headers=admin.headers), 200
    )
    assert_error(await me(client, cliente), 401)
    promoted = bearer(await login(client, cliente.email, cliente.password))
    expect(await client.get("/users", headers=promoted), 200)
    # and back: the demoted admin's token must not keep admin powers
    expect(await client.patch(f"/users/{cliente.id}", json={"rol": "cliente"}, headers=admin.headers), 200)
    assert_error(await client.get("/users", headers=promoted), 401)
    demoted = bearer(await login(client, cliente.email, cliente.password))
    assert_error(await client.get("/users", headers=demoted), 403)


# ---------------------------------------------------------------- the last administrador


async def test_the_last_admin_cannot_be_demoted_or_deleted(client: Any, admin: Account) -> None:
    for method in ("patch", "put"):
        response = await getattr(client, method)(
            f"/users/{admin.id}", json={"rol": "cliente"}, headers=admin.headers
        )
        assert_error(response, 409)
    assert_error(await client.delete(f"/users/{admin.id}", headers=admin.headers), 409)
    assert expect(await me(client, admin), 200)["rol"] == "administrador"

    second = await create_account(client, admin, rol="administrador")
    expect(await client.patch(f"/users/{admin.id}", json={"rol": "cliente"}, headers=second.headers), 200)
    assert_error(
        await client.patch(f"/users/{second.id}", json={"rol": "cliente"}, headers=second.headers), 409
    )
    assert_error(await client.delete(f"/users/{second.id}", headers=second.headers), 409)
    assert expect(await me(client, second), 200)["rol"] == "administrador"
    # an administrador who is not the last one may remove themself
    third = await create_account(client, second, rol="administrador")
    assert expect(await client.delete(f"/users/{second.id}", headers=second.headers), 204) is None
    expect(await client.get("/users", headers=third.headers), 200)


# ---------------------------------------------------------------- deleting


async def test_delete_user(client: Any, admin: Account, cliente: Account) -> None:
    other = await create_account(client, admin)
    assert_error(await client.delete(f"/users/{other.id}", headers=cliente.headers), 403)
    assert_error(await client.delete(f"/users/{other.id}"), 401)
    expect(await me(client, other), 200)

    assert expect(await client.delete(f"/users/{other.id}", headers=admin.headers), 204) is None
    assert_error(await me(client, other), 401)
    assert_error(await client.get(f"/users/{other.id}", headers=admin.headers), 404)
    assert_error(await client.delete(f"/users/{other.id}", headers=admin.headers), 404)
    assert not await can_login(client, other.email, other.password)
    # the email is free again
    expect(await client.post("/users", json=new_user(email=other.email)), 201)
    assert_error(await client.delete("/users/999999", headers=admin.headers), 404)
