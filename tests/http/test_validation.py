"""Bad input of every kind: a 4xx naming the field, never a 500, and nothing stored or changed."""

from __future__ import annotations

from typing import Any

from tests.helpers import BAD_INPUT, VM_BODY, Account, assert_error, can_login, create_vm, expect, total_count

HUGE = 2**70
INT64_MAX = 2**63 - 1
JSON = {"content-type": "application/json"}
BROKEN_JSON = [b'{"name": ', b"{name: 1}", b"{'name': 'x'}", b"", b"\xff\xfe", b'{"name": "x",}', b"nul"]

# (field, value) pairs that must never be stored; each must be refused with the field named.
BAD_VM_FIELDS: list[tuple[str, Any]] = [
    ("cores", 0), ("cores", 1025), ("cores", -1), ("cores", HUGE), ("cores", -HUGE),
    ("cores", "2"), ("cores", 2.5), ("cores", True), ("cores", [2]), ("cores", {"n": 2}),
    ("ram", 0), ("ram", 16_777_217), ("ram", HUGE), ("ram", "2048"), ("ram", 2048.5),
    ("disk", 0), ("disk", 1_048_577), ("disk", HUGE), ("disk", INT64_MAX + 1), ("disk", "40"),
    ("name", ""), ("name", "n" * 101), ("name", 5), ("name", ["web"]),
    ("os", ""), ("os", "o" * 101), ("os", 12), ("os", False),
    ("status", "deleted"), ("status", "RUNNING"), ("status", ""), ("status", 1),
]  # fmt: skip
VM_REQUIRED = ["name", "cores", "ram", "disk", "os"]


def user_body(**fields: Any) -> dict[str, Any]:
    return {"name": "Val Idation", "email": "val@example.com", "password": "long-enough", **fields}


BAD_USER_FIELDS: list[tuple[str, Any]] = [
    ("email", "not-an-email"), ("email", "a@b"), ("email", "a b@example.com"), ("email", "@example.com"),
    ("email", "user@"), ("email", ""), ("email", "x" * 250 + "@example.com"), ("email", 42),
    ("name", ""), ("name", "n" * 101), ("name", 7),
    ("password", "short"), ("password", "x" * 73), ("password", "é" * 37), ("password", "é" * 36 + "x"),
    ("password", 12345678), ("rol", "root"), ("rol", "Administrador"), ("rol", 1),
]  # fmt: skip


# ---------------------------------------------------------------- VMs


async def test_bad_vm_fields_are_refused_on_create(client: Any, admin: Account) -> None:
    for field, value in BAD_VM_FIELDS:
        response = await client.post("/vms", json={**VM_BODY, field: value}, headers=admin.headers)
        assert response.status_code in BAD_INPUT, (field, value, response.status_code, response.text)
        assert_error(response, *BAD_INPUT, field=field)
    assert await total_count(client, "/vms", admin.headers) == 0


async def test_missing_or_null_required_vm_fields(client: Any, admin: Account) -> None:
    for field in VM_REQUIRED:
        missing = {key: value for key, value in VM_BODY.items() if key != field}
        assert_error(await client.post("/vms", json=missing, headers=admin.headers), *BAD_INPUT, field=field)
    for field in [*VM_REQUIRED, "status"]:
        response = await client.post("/vms", json={**VM_BODY, field: None}, headers=admin.headers)
        assert_error(response, *BAD_INPUT, field=field)
    assert await total_count(client, "/vms", admin.headers) == 0


async def test_vm_bounds_are_inclusive(client: Any, admin: Account) -> None:
    low = await create_vm(client, admin, name="n", os="o", cores=1, ram=1, disk=1)
    high = await create_vm(
        client, admin, name="n" * 100, os="o" * 100, cores=1024, ram=16_777_216, disk=1_048_576
    )
    assert (low["cores"], low["ram"], low["disk"]) == (1, 1, 1)
    assert (high["cores"], high["ram"], high["disk"], len(high["name"])) == (1024, 16_777_216, 1_048_576, 100)
    for status in ("provisioning", "running", "stopped", "paused", "error"):
        assert (await create_vm(client, admin, status=status))["status"] == status
    # 4.0 is an integer in JSON Schema (the OpenAPI document's language): accepted, stored as 4
    integral = await create_vm(client, admin, cores=4.0, ram=1e3)
    assert (integral["cores"], integral["ram"]) == (4, 1000)
    assert isinstance(integral["cores"], int)
    unicode = await create_vm(client, admin, name="ñ" * 100, os="Ubuntu 🐧")
    assert unicode["name"] == "ñ" * 100


async def test_bad_vm_updates_change_nothing(client: Any, admin: Account) -> None:
    vm = await create_vm(client, admin)
    url = f"/vms/{vm['id']}"
    for method in ("patch", "put"):
        for field, value in BAD_VM_FIELDS:
            response = await getattr(client, method)(url, json={field: value}, headers=admin.headers)
            assert_error(response, *BAD_INPUT, field=field)
        for field in [*VM_REQUIRED, "status"]:
            response = await getattr(client, method)(url, json={field: None}, headers=admin.headers)
            assert_error(response, *BAD_INPUT, field=field)
        # one bad field spoils the whole request: the good one is not applied either
        response = await getattr(client, method)(
            url, json={"name": "fine", "cores": 0}, headers=admin.headers
        )
        assert_error(response, *BAD_INPUT, field="cores")
    assert expect(await client.get(url, headers=admin.headers), 200) == vm


async def test_broken_json_bodies(client: Any, admin: Account) -> None:
    vm = await create_vm(client, admin)
    cliente_body = user_body(email="broken@example.com")
    for content in [*BROKEN_JSON, b"[]", b'"a string"', b"null", b"42"]:
        for method, url in (("POST", "/vms"), ("PATCH", f"/vms/{vm['id']}"), ("PUT", f"/vms/{vm['id']}")):
            response = await client.request(method, url, content=content, headers={**admin.headers, **JSON})
            assert_error(response, *BAD_INPUT)
        for method, url in (("POST", "/users"), ("PATCH", f"/users/{admin.id}")):
            response = await client.request(method, url, content=content, headers={**admin.headers, **JSON})
            assert_error(response, *BAD_INPUT)
    assert await total_count(client, "/vms", admin.headers) == 1
    assert expect(await client.get(f"/vms/{vm['id']}", headers=admin.headers), 200) == vm
    assert await total_count(client, "/users", admin.headers) == 1
    assert not await can_login(client, cliente_body["email"], cliente_body["password"])


async def test_oversized_body_is_413(client: Any, admin: Account) -> None:
    body = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = await client.post("/vms", content=body, headers={**admin.headers, **JSON})
    assert_error(response, 413)
    assert await total_count(client, "/vms", admin.headers) == 0


# ---------------------------------------------------------------- ids in the path


async def test_bad_ids_in_the_path(client: Any, admin: Account) -> None:
    vm = await create_vm(client, admin)
    for resource in ("vms", "users"):
        for raw in (str(INT64_MAX + 1), str(HUGE), "9" * 40, "0", "-1"):
            url = f"/{resource}/{raw}"
            assert_error(await client.get(url, headers=admin.headers), 400, 404, 422)
            assert_error(await client.patch(url, json={"name": "x"}, headers=admin.headers), 400, 404, 422)
            assert_error(await client.put(url, json={"name": "x"}, headers=admin.headers), 400, 404, 422)
            assert_error(await client.delete(url, headers=admin.headers), 400, 404, 405, 422)
        for raw in ("abc", "1.5", "1e3", "%00"):
            assert_error(await client.get(f"/{resource}/{raw}", headers=admin.headers), 400, 404, 405, 422)
        # the largest id PostgreSQL can hold is merely absent
        assert_error(await client.get(f"/{resource}/{INT64_MAX}", headers=admin.headers), 404)
        assert_error(await client.delete(f"/{resource}/{INT64_MAX}", headers=admin.headers), 404)
    assert expect(await client.get("/vms", headers=admin.headers), 200) == [vm]
    assert await total_count(client, "/users", admin.headers) == 1


# ---------------------------------------------------------------- users


async def test_bad_user_fields_are_refused_on_create(client: Any, admin: Account) -> None:
    for headers in ({}, admin.headers):
        for field, value in BAD_USER_FIELDS:
            body = user_body(**{field: value})
            response = await client.post("/users", json=body, headers=headers)
            assert response.status_code in BAD_INPUT, (field, value, response.status_code, response.text)
            assert_error(response, *BAD_INPUT, field=field)
        for field in ("name", "email", "password"):
            missing = {key: value for key, value in user_body().items() if key != field}
            assert_error(await client.post("/users", json=missing, headers=headers), *BAD_INPUT, field=field)
        for field in ("name", "email", "password", "rol"):
            response = await client.post("/users", json=user_body(**{field: None}), headers=headers)
            assert_error(response, *BAD_INPUT, field=field)
    assert await total_count(client, "/users", admin.headers) == 1
    assert not await can_login(client, "val@example.com", "long-enough")


async def test_password_limits_are_utf8_bytes(client: Any) -> None:
    accepted = {
        "eight ascii": "x" * 8,
        "72 ascii": "x" * 72,
        "36 two-byte chars (72 bytes)": "é" * 36,
        "18 four-byte chars (72 bytes)": "🔑" * 18,
    }
    for index, (label, password) in enumerate(accepted.items()):
        email = f"bytes-{index}@example.com"
        response = await client.post("/users", json=user_body(email=email, password=password))
        assert response.status_code == 201, (label, response.text)
        expect(response, 201)
        assert await can_login(client, email, password), label
        # never truncated: the password minus its last character is wrong
        assert not await can_login(client, email, password[:-1]), label
    refused = {
        "73 bytes": "é" * 36 + "x",
        "37 two-byte chars": "é" * 37,
        "19 four-byte": "🔑" * 19,
        "7 chars": "x" * 7,
    }
    for label, password in refused.items():
        response = await client.post("/users", json=user_body(email="refused@example.com", password=password))
        assert response.status_code in BAD_INPUT, (label, response.text)
        assert_error(response, *BAD_INPUT, field="password")
        assert not await can_login(client, "refused@example.com", password)


async def test_bad_user_updates_change_nothing(client: Any, admin: Account, cliente: Account) -> None:
    url = f"/users/{cliente.id}"
    before = expect(await client.get(url, headers=admin.headers), 200)
    for account in (admin, cliente):
        for method in ("patch", "put"):
            for field, value in BAD_USER_FIELDS:
                body = {field: value}
                if field == "password":
                    body["current_password"] = cliente.password
                if field == "rol" and account is cliente:
                    continue  # a cliente sending any rol is refused with 403, tested in test_users
                response = await getattr(client, method)(url, json=body, headers=account.headers)
                assert response.status_code in BAD_INPUT, (field, value, response.status_code, response.text)
                assert_error(response, *BAD_INPUT, field=field)
            for field in ("name", "email", "password", "rol", "current_password"):
                response = await getattr(client, method)(url, json={field: None}, headers=account.headers)
                assert_error(response, *BAD_INPUT, 403, field=field)
    overlong_current = {"password": "new-password-1", "current_password": "c" * 1000}
    assert_error(await client.patch(url, json=overlong_current, headers=cliente.headers), *BAD_INPUT, 403)
    assert expect(await client.get(url, headers=admin.headers), 200) == before
    assert await can_login(client, cliente.email, cliente.password)
    expect(await client.get("/users/me", headers=cliente.headers), 200)


# ---------------------------------------------------------------- query parameters


BAD_PAGING: list[dict[str, Any]] = [
    {"limit": 0}, {"limit": 1001}, {"limit": -1}, {"limit": HUGE}, {"limit": "ten"}, {"limit": ""},
    {"offset": -1}, {"offset": HUGE}, {"offset": "x"}, {"offset": 1.5},
    {"sort": "bogus"}, {"sort": "password"}, {"sort": "token_version"}, {"sort": ""},
    {"order": "sideways"}, {"order": "ASC "}, {"q": "q" * 101},
]  # fmt: skip


async def test_bad_query_parameters(client: Any, admin: Account) -> None:
    await create_vm(client, admin)
    cases = {
        "/vms": [*BAD_PAGING, {"status": "deleted"}, {"status": ""}, {"sort": "version"}],
        "/users": [*BAD_PAGING, {"rol": "root"}, {"rol": ""}],
    }
    for path, bad in cases.items():
        for params in bad:
            response = await client.get(path, params=params, headers=admin.headers)
            assert response.status_code in BAD_INPUT, (path, params, response.status_code, response.text)
            assert_error(response, *BAD_INPUT, field=next(iter(params)))
        # the limits themselves are fine
        for params in ({"limit": 1}, {"limit": 1000}, {"offset": 0}, {"offset": 2**31 - 1}):
            expect(await client.get(path, params=params, headers=admin.headers), 200)


# ---------------------------------------------------------------- every field named, in words; unknown fields

# What Python or JSON Schema calls whitespace, alone or mixed: none of it is a name.
BLANK = [" ", "   ", "\t", "\n", "\r\n", "\u3000", "\xa0", "\ufeff", "\x1c", "\x85", " \u2028 \u2009"]
# No regular expression and none of msgspec's own wording in what a person reads.
JARGON = ["Expected", "`", "regex", "\\x", "^[", "$.", "got `"]


def assert_in_words(detail: str) -> None:
    leaked = [word for word in JARGON if word in detail]
    assert not leaked, f"{leaked} in {detail!r}"


async def test_blank_names_and_os_are_refused(client: Any, admin: Account, cliente: Account) -> None:
    vm = await create_vm(client, admin)
    user_url = f"/users/{cliente.id}"
    user_before = expect(await client.get(user_url, headers=admin.headers), 200)
    for value in BLANK:
        for field in ("name", "os"):
            response = await client.post("/vms", json={**VM_BODY, field: value}, headers=admin.headers)
            assert_error(response, 400, field=field)
            for method in ("patch", "put"):
                response = await getattr(client, method)(
                    f"/vms/{vm['id']}", json={field: value}, headers=admin.headers
                )
                assert_error(response, 400, field=field)
        assert_error(await client.post("/users", json=user_body(name=value)), 400, field="name")
        for account in (admin, cliente):
            for method in ("patch", "put"):
                response = await getattr(client, method)(
                    user_url, json={"name": value}, headers=account.headers
                )
                assert_error(response, 400, field="name")
    assert await total_count(client, "/vms", admin.headers) == 1
    assert expect(await client.get(f"/vms/{vm['id']}", headers=admin.headers), 200) == vm
    assert expect(await client.get(user_url, headers=admin.headers), 200) == user_before
    assert await total_count(client, "/users", admin.headers) == 2
    # spaces around a visible character are the client's business, kept as sent
    spaced = await create_vm(client, admin, name=" web ", os="\tDebian 12\n")
    assert (spaced["name"], spaced["os"]) == (" web ", "\tDebian 12\n")


async def test_every_missing_field_is_named(client: Any, admin: Account) -> None:
    body = assert_error(await client.post("/vms", json={}, headers=admin.headers), 400)
    for field in VM_REQUIRED:
        assert f"{field}: is required" in body["detail"], body["detail"]
    assert [item["key"] for item in body["extra"]] == VM_REQUIRED
    assert all(item["source"] == "body" for item in body["extra"])
    body = assert_error(await client.post("/users", json={"rol": "cliente"}), 400)
    for field in ("name", "email", "password"):
        assert f"{field}: is required" in body["detail"], body["detail"]
    assert await total_count(client, "/vms", admin.headers) == 0


async def test_every_invalid_field_is_named_in_words(client: Any, admin: Account) -> None:
    vm_body = {"name": " ", "cores": 0, "ram": "x", "disk": 2.5, "os": "o" * 101, "status": "deleted"}
    expected = [
        "name: must be 1 to 100 characters and not only spaces",
        "cores: must be between 1 and 1024",
        "ram: must be an integer",
        "disk: must be an integer",
        "os: must be 1 to 100 characters",
        "status: must be one of provisioning, running, stopped, paused, error",
    ]
    vm = await create_vm(client, admin)
    user = {"name": "", "email": "a b@example.com", "password": "short", "rol": "root"}
    user_expected = [
        "name: must be 1 to 100 characters and not only spaces",
        "email: must be a valid email address (one @, no spaces, a dot in the domain)",
        "password: must be at least 8 characters",
        "rol: must be one of administrador, cliente",
    ]
    for body, words_expected, collection, item in (
        (vm_body, expected, "/vms", f"/vms/{vm['id']}"),
        (user, user_expected, "/users", f"/users/{admin.id}"),
    ):
        for method, url in (("POST", collection), ("PATCH", item), ("PUT", item)):
            response = await client.request(method, url, json=body, headers=admin.headers)
            detail = assert_error(response, 400)["detail"]
            for words in words_expected:
                assert words in detail, (method, words, detail)
            assert_in_words(detail)
    assert await total_count(client, "/vms", admin.headers) == 1
    assert await total_count(client, "/users", admin.headers) == 1


async def test_no_400_speaks_in_regex_or_msgspec(client: Any, admin: Account) -> None:
    for field, value in BAD_VM_FIELDS:
        response = await client.post("/vms", json={**VM_BODY, field: value}, headers=admin.headers)
        assert_in_words(assert_error(response, 400, field=field)["detail"])
    for field, value in BAD_USER_FIELDS:
        response = await client.post("/users", json=user_body(**{field: value}))
        assert_in_words(assert_error(response, 400, field=field)["detail"])
    for field in VM_REQUIRED:
        response = await client.post("/vms", json={**VM_BODY, field: None}, headers=admin.headers)
        assert_in_words(assert_error(response, 400, field=field)["detail"])


async def test_query_parameter_messages_are_words(client: Any, admin: Account) -> None:
    cases = [
        ("/vms", {"q": "a\x00b"}, "q: must not contain NUL characters"),
        ("/users", {"q": "a\x00b"}, "q: must not contain NUL characters"),
        # os takes the stored field's rule (OSName), so a value no VM can have is refused
        ("/vms", {"os": "\x00"}, "os: must not be only spaces or contain NUL characters"),
        ("/vms", {"limit": "ten"}, "limit: must be an integer"),
        ("/vms", {"limit": 0}, "limit: must be at least 1"),
        (
            "/vms",
            {"status": "deleted"},
            "status: must be one of provisioning, running, stopped, paused, error",
        ),
        ("/users", {"rol": "root"}, "rol: must be one of administrador, cliente"),
    ]
    for path, params, words in cases:
        detail = assert_error(await client.get(path, params=params, headers=admin.headers), 400)["detail"]
        assert words in detail, (path, params, detail)
        assert_in_words(detail)


async def test_unknown_fields_are_refused(client: Any, admin: Account, cliente: Account) -> None:
    vm = await create_vm(client, admin)
    vm_url, user_url = f"/vms/{vm['id']}", f"/users/{cliente.id}"
    user_before = expect(await client.get(user_url, headers=admin.headers), 200)
    attempts = [
        ("POST", "/users", user_body(is_admin=True), {}),
        ("POST", "/users", user_body(is_admin=True), admin.headers),
        ("PATCH", user_url, {"name": "Renamed", "is_admin": True}, cliente.headers),
        ("PUT", user_url, {"name": "Renamed", "is_admin": True}, cliente.headers),
        ("PATCH", user_url, {"name": "Renamed", "is_admin": True}, admin.headers),
        ("POST", "/vms", {**VM_BODY, "is_admin": True}, admin.headers),
        ("PATCH", vm_url, {"name": "renamed", "is_admin": True}, admin.headers),
        ("PUT", vm_url, {"name": "renamed", "is_admin": True}, admin.headers),
    ]
    for method, url, body, headers in attempts:
        response = await client.request(method, url, json=body, headers=headers)
        detail = assert_error(response, 400, field="is_admin")["detail"]
        assert "is_admin: is not a field of this resource" in detail, (method, url, detail)
    assert await total_count(client, "/vms", admin.headers) == 1
    assert await total_count(client, "/users", admin.headers) == 2
    assert expect(await client.get(vm_url, headers=admin.headers), 200) == vm
    assert expect(await client.get(user_url, headers=admin.headers), 200) == user_before
    # many unknown keys: each of the first few named, the rest counted, the answer stays small
    many = {**VM_BODY, **{f"k{index}": index for index in range(40_000)}}
    response = await client.post("/vms", json=many, headers=admin.headers)
    detail = assert_error(response, 400, field="k0")["detail"]
    assert "39990 more unknown fields" in detail, detail
    assert len(response.content) < 4096
    # /login keeps its own rules
    expect(await client.post("/login", json={"email": admin.email, "password": admin.password, "x": 1}), 200)


async def test_read_only_fields_put_back_are_ignored(client: Any, admin: Account, cliente: Account) -> None:
    vm = await create_vm(client, admin)
    for method in ("put", "patch"):
        sent = {**vm, "name": f"renamed-{method}", "id": vm["id"] + 100, "created_at": "2000-01-01T00:00:00Z"}
        updated = expect(
            await getattr(client, method)(f"/vms/{vm['id']}", json=sent, headers=admin.headers), 200
        )
        assert (updated["id"], updated["name"]) == (vm["id"], f"renamed-{method}")
        assert updated["created_at"] == vm["created_at"]
        user = expect(await client.get(f"/users/{cliente.id}", headers=admin.headers), 200)
        sent = {**user, "name": f"Renamed {method}", "id": 999, "updated_at": "2000-01-01T00:00:00Z"}
        response = await getattr(client, method)(f"/users/{cliente.id}", json=sent, headers=admin.headers)
        updated = expect(response, 200)
        assert (updated["id"], updated["name"]) == (cliente.id, f"Renamed {method}")
        assert not updated["updated_at"].startswith("2000")
    created = await create_vm(client, admin, id=1, created_at="2000-01-01T00:00:00Z", updated_at="x")
    assert created["id"] != 1
    assert not created["created_at"].startswith("2000")
    body = user_body(email="back@example.com", id=1, created_at="2000-01-01T00:00:00Z", updated_at=None)
    assert expect(await client.post("/users", json=body), 201)["id"] != 1
