"""The refresh token in an HttpOnly cookie, for browser apps that ask for it with ``?refresh_cookie=true``.

The cookie is ``Secure``, so a client on plain HTTP (this test client) would not send it back by itself:
each request here sends it in its own ``Cookie`` header, as a browser does over HTTPS.
"""

from __future__ import annotations

import hashlib
from http.cookies import SimpleCookie
from typing import Any

import pytest

from tests.helpers import Account, assert_error, bearer, expect, get_me

COOKIE = "__Secure-vms_refresh_token"
MAX_AGE = str(30 * 86_400)


def set_cookie(response: Any) -> dict[str, str]:
    """The one refresh cookie ``response`` sets: its value and attributes (lower-case names; flags as "")."""
    headers = response.headers.get_list("set-cookie")
    assert len(headers) == 1, headers
    header = headers[0]
    parsed: SimpleCookie = SimpleCookie()
    parsed.load(header)
    morsel = parsed[COOKIE]
    attributes = {name.strip().split("=")[0].lower(): "" for name in header.split(";")[1:]}
    attributes.update({key: value for key, value in morsel.items() if value and value is not True})
    return {"value": morsel.value, **attributes}


def assert_attributes(cookie: dict[str, str], max_age: str) -> None:
    assert cookie["path"] == "/login/refresh", cookie
    assert cookie["samesite"].lower() == "strict", cookie
    assert "httponly" in cookie, cookie
    assert "secure" in cookie, cookie
    assert cookie["max-age"] == max_age, cookie


async def cookie_login(client: Any, account: Account) -> tuple[dict[str, Any], str]:
    credentials = {"email": account.email, "password": account.password}
    response = await client.post("/login", params={"refresh_cookie": "true"}, json=credentials)
    body = expect(response, 200)
    cookie = set_cookie(response)
    assert_attributes(cookie, MAX_AGE)
    return body, cookie["value"]


async def refresh_with_cookie(client: Any, value: str, **kwargs: Any) -> Any:
    return await client.post("/login/refresh", headers={"cookie": f"{COOKIE}={value}"}, **kwargs)


async def test_asked_for_it_a_login_sets_the_cookie_and_leaves_the_token_out_of_the_body(
    client: Any, cliente: Account
) -> None:
    body, token = await cookie_login(client, cliente)
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_expires_in"}
    assert token not in str(body)
    expect(await get_me(client, body["access_token"]), 200)
    # Not asked for: the body carries the token, and no cookie is set (never both).
    response = await client.post("/login", json={"email": cliente.email, "password": cliente.password})
    assert "refresh_token" in expect(response, 200)
    assert response.headers.get_list("set-cookie") == []


async def test_only_a_json_body_gets_the_cookie_so_no_other_site_can_plant_one(
    client: Any, cliente: Account
) -> None:
    """Login CSRF: SameSite keeps other sites from sending the cookie, not from having one stored. A form
    (or a text body) is what another site's page can post without a CORS preflight, so a cookie answer to
    one would let a hostile page sign the victim's browser into the attacker's account."""
    form = {"username": cliente.email, "password": cliente.password}
    response = await client.post("/login", params={"refresh_cookie": "true"}, data=form)
    assert "application/json" in assert_error(response, 400)["detail"] + str(response.json())
    assert response.headers.get_list("set-cookie") == []
    sessions_before = expect(await client.get("/users/me/sessions", headers=bearer(cliente.token)), 200)

    pair = expect(
        await client.post("/login", json={"email": cliente.email, "password": cliente.password}), 200
    )
    planted = await client.post(
        "/login/refresh",
        params={"refresh_cookie": "true"},
        content=f'{{"refresh_token": "{pair["refresh_token"]}"}}'.encode(),
        headers={"content-type": "text/plain"},
    )
    assert_error(planted, 400)
    assert planted.headers.get_list("set-cookie") == []
    # Refused before anything happened: that token is still good, and no session was opened by the form.
    expect(await client.post("/login/refresh", json={"refresh_token": pair["refresh_token"]}), 200)
    sessions_after = expect(await client.get("/users/me/sessions", headers=bearer(cliente.token)), 200)
    assert len(sessions_after) == len(sessions_before) + 1  # the JSON sign-in above, not the form's
    # The form without the cookie is the docs page's Authorize button: it goes on working.
    expect(await client.post("/login", data=form), 200)


async def test_the_cookie_rotates_and_its_reuse_ends_the_session(client: Any, cliente: Account) -> None:
    first, token = await cookie_login(client, cliente)
    response = await refresh_with_cookie(client, token)  # no body: the cookie is read
    renewed = expect(response, 200)
    assert "refresh_token" not in renewed  # it came in the cookie, it goes back in the cookie
    next_token = set_cookie(response)["value"]
    assert next_token != token
    assert_attributes(set_cookie(response), MAX_AGE)
    expect(await get_me(client, renewed["access_token"]), 200)

    # The spent one again (a thief's copy): the session ends, and the refusal clears the cookie.
    response = await refresh_with_cookie(client, token)
    assert "already used" in assert_error(response, 401)["detail"]
    cleared = set_cookie(response)
    assert (cleared["value"], cleared["max-age"], cleared["path"]) == ("", "0", "/login/refresh")
    assert "ended" in assert_error(await refresh_with_cookie(client, next_token), 401)["detail"]
    for access_token in (first["access_token"], renewed["access_token"]):
        assert_error(await get_me(client, access_token), 401)
    expect(await get_me(client, cliente.token), 200)  # another session of the user goes on


async def test_a_body_token_may_move_into_the_cookie_and_a_body_wins_over_the_cookie(
    client: Any, cliente: Account
) -> None:
    pair = expect(
        await client.post("/login", json={"email": cliente.email, "password": cliente.password}), 200
    )
    response = await client.post(
        "/login/refresh", params={"refresh_cookie": "true"}, json={"refresh_token": pair["refresh_token"]}
    )
    assert "refresh_token" not in expect(response, 200)
    in_cookie = set_cookie(response)["value"]
    # A body's token is used even when a cookie is sent too; the answer then follows the body.
    other = expect(
        await client.post("/login", json={"email": cliente.email, "password": cliente.password}), 200
    )
    response = await refresh_with_cookie(client, in_cookie, json={"refresh_token": other["refresh_token"]})
    assert "refresh_token" in expect(response, 200)
    assert response.headers.get_list("set-cookie") == []
    expect(await refresh_with_cookie(client, in_cookie), 200)  # the cookie's token was not spent


@pytest.mark.parametrize(
    "value",
    ["", "not-a-token", "x" * 10_000, '"quoted"', "%00%ff", "eyJhbGciOiJIUzI1NiJ9.e30.x", "a" * 43],
)
async def test_a_bad_cookie_gets_401_and_is_cleared(client: Any, value: str) -> None:
    response = await refresh_with_cookie(client, value)
    assert "not valid" in assert_error(response, 401)["detail"]
    assert not value or value not in response.text
    assert set_cookie(response)["max-age"] == "0"


async def test_no_body_and_no_cookie_is_a_400_that_says_what_to_send(client: Any) -> None:
    for response in (
        await client.post("/login/refresh"),
        await client.post("/login/refresh", content=b"", headers={"content-type": "application/json"}),
        await client.post("/login/refresh", json={}),
    ):
        body = assert_error(response, 400)
        assert body["detail"].startswith("Invalid request: refresh_token: is required"), body
        assert [problem["key"] for problem in body["extra"]] == ["refresh_token"], body


async def test_logout_clears_the_cookie(client: Any, cliente: Account) -> None:
    body, token = await cookie_login(client, cliente)
    response = await client.post("/logout", headers=bearer(body["access_token"]))
    expect(response, 204)
    cleared = set_cookie(response)
    assert (cleared["value"], cleared["path"]) == ("", "/login/refresh")
    assert_attributes(cleared, "0")
    assert_error(await refresh_with_cookie(client, token), 401)  # its session has ended anyway


async def test_the_openapi_schema_describes_the_cookie(client: Any) -> None:
    spec = (await client.get("/docs/openapi.json")).json()
    operation = spec["paths"]["/login/refresh"]["post"]
    parameters = {(parameter["in"], parameter["name"]) for parameter in operation["parameters"]}
    assert {("query", "refresh_cookie"), ("cookie", COOKIE)} <= parameters
    assert "cookie" in operation["requestBody"]["description"]
    assert "refresh_token" in operation["requestBody"]["content"]["application/json"]["schema"]["required"]
    assert "Set-Cookie" in operation["responses"]["200"]["headers"]
    login = spec["paths"]["/login"]["post"]
    assert ("query", "refresh_cookie") in {(p["in"], p["name"]) for p in login["parameters"]}
    assert "Set-Cookie" in spec["paths"]["/logout"]["post"]["responses"]["204"]["headers"]


async def test_no_error_body_repeats_a_presented_token(client: Any, cliente: Account) -> None:
    """A real refresh token, sent in every wrong shape: no answer holds it, or its hash."""
    token = expect(
        await client.post("/login", json={"email": cliente.email, "password": cliente.password}), 200
    )["refresh_token"]
    bodies: list[Any] = [
        {"refresh_token": [token]},
        {"refresh_token": {"value": token}},
        {"refresh_token": token + "x" * 2000},
        [token],
        {token: token},
    ]
    responses = [await client.post("/login/refresh", json=body) for body in bodies]
    responses.append(await client.post("/login/refresh", content=token.encode()))  # not JSON
    responses.append(await client.post("/login/refresh", content=f'{{"refresh_token": "{token}"'.encode()))
    for response in responses:
        assert response.status_code == 400, response.text
        assert token not in response.text
        assert hashlib.sha256(token.encode()).hexdigest() not in response.text
    expect(await client.post("/login/refresh", json={"refresh_token": token}), 200)  # none of them spent it
