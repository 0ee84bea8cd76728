"""POST /login (JSON and OAuth2 form), POST /logout, and what makes a bearer token good or bad."""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from litestar.testing import AsyncTestClient

from app import create_app
from app.config import Settings, jwt_secret
from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    BAD_INPUT,
    Account,
    assert_error,
    assert_user,
    bearer,
    expect,
    get_me,
    login,
    make_settings,
    session_of,
    version_of,
)

FORM = {"content-type": "application/x-www-form-urlencoded"}


def assert_token_body(body: Any, ttl_seconds: int = 15 * 60) -> str:
    """v1's keys, plus the refresh token of the session (30 days by default)."""
    keys = {"access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_in"}
    assert set(body) == keys, body
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == ttl_seconds
    assert body["refresh_expires_in"] == 30 * 86_400
    assert isinstance(body["refresh_token"], str)
    assert len(body["refresh_token"]) >= 43
    assert isinstance(body["access_token"], str)
    assert body["access_token"].count(".") == 2  # a JWT
    return str(body["access_token"])


def forge_flat(settings: Settings, user_id: int, **claims: Any) -> str:
    """A token signed with the app's real key; ``claims`` override the well-formed defaults.

    Unlike ``tests.helpers.forge`` it writes ``ver`` and ``sid`` as top-level claims (Litestar folds unknown
    claims into ``extras``) and drops a claim given as None: the shapes test_forged_token_shapes probes.
    """
    now = datetime.now(UTC)
    payload: dict[str, Any] = {
        "sub": str(user_id),
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "jti": uuid.uuid4().hex,
        "ver": 0,
        **claims,
    }
    payload = {key: value for key, value in payload.items() if value is not None}
    return jwt.encode(payload, jwt_secret(settings), algorithm="HS256")


# ---------------------------------------------------------------- login


async def test_login_with_json_returns_a_bearer_token(client: Any) -> None:
    body = expect(await client.post("/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}), 200)
    token = assert_token_body(body)
    user = assert_user(expect(await get_me(client, token), 200))
    assert user["email"] == ADMIN_EMAIL
    assert user["rol"] == "administrador"


async def test_login_with_the_oauth2_password_form(client: Any) -> None:
    form = {"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "grant_type": "password"}
    token = assert_token_body(expect(await client.post("/login", data=form), 200))
    assert expect(await get_me(client, token), 200)["email"] == ADMIN_EMAIL
    # grant_type is optional, as in most OAuth2 password clients
    form = {"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    assert_token_body(expect(await client.post("/login", data=form), 200))


async def test_login_email_is_case_insensitive(client: Any) -> None:
    body = {"email": ADMIN_EMAIL.upper(), "password": ADMIN_PASSWORD}
    assert_token_body(expect(await client.post("/login", json=body), 200))


async def test_login_ttl_follows_the_configuration(tmp_path: Any) -> None:
    app = create_app(make_settings(tmp_path, token_ttl_minutes=5))
    async with AsyncTestClient(app=app) as client:
        body = expect(
            await client.post("/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}), 200
        )
        assert_token_body(body, ttl_seconds=300)
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert 299 <= claims["exp"] - claims["iat"] <= 301


async def test_unknown_email_and_wrong_password_answer_the_same(client: Any, cliente: Account) -> None:
    answers = [
        await client.post("/login", json={"email": "nobody@example.com", "password": "whatever-123"}),
        await client.post("/login", json={"email": cliente.email, "password": "wrong-password"}),
        await client.post("/login", data={"username": "nobody@example.com", "password": "whatever-123"}),
        await client.post("/login", data={"username": cliente.email, "password": "wrong-password"}),
    ]
    for response in answers:
        assert_error(response, 401)
        assert "access_token" not in response.text
    assert len({response.content for response in answers}) == 1, [r.text for r in answers]
    assert answers[0].headers.get("www-authenticate") == answers[1].headers.get("www-authenticate")


async def test_overlong_passwords_at_login_are_401_not_500(client: Any, cliente: Account) -> None:
    # bcrypt refuses more than 72 bytes; the service must still answer "wrong credentials".
    for email in ("nobody@example.com", cliente.email):
        for password in ("é" * 50, "x" * 73, "x" * 1000):
            response = await client.post("/login", json={"email": email, "password": password})
            assert_error(response, 401)


async def test_login_rejects_malformed_bodies(client: Any) -> None:
    cases: list[dict[str, Any]] = [
        {"json": {"email": ADMIN_EMAIL}},
        {"json": {"password": ADMIN_PASSWORD}},
        {"json": {"email": None, "password": ADMIN_PASSWORD}},
        {"json": {"email": ADMIN_EMAIL, "password": 12345678}},
        {"json": [ADMIN_EMAIL, ADMIN_PASSWORD]},
        {"json": None},
        {
            "content": b'{"email": "admin@example.com", "password": ',
            "headers": {"content-type": "application/json"},
        },
        {"content": b"", "headers": {"content-type": "application/json"}},
        {"data": {"username": ADMIN_EMAIL}},
        {"data": {"password": ADMIN_PASSWORD}},
        {"data": {"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "grant_type": "client_credentials"}},
    ]
    for case in cases:
        response = await client.post("/login", **case)
        assert_error(response, *BAD_INPUT)
        assert "access_token" not in response.text, case


async def test_login_is_rate_limited_with_retry_after(tmp_path: Any) -> None:
    app = create_app(make_settings(tmp_path, login_rate_limit=3))
    async with AsyncTestClient(app=app) as client:
        for _ in range(3):
            assert (
                await client.post("/login", json={"email": "x@example.com", "password": "nope-nope"})
            ).status_code == 401
        response = await client.post("/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert_error(response, 429)
        assert int(response.headers["Retry-After"]) > 0
        # other routes are not throttled
        assert (await client.get("/health")).status_code == 200


async def test_unknown_email_costs_as_much_as_a_wrong_password(tmp_path: Any) -> None:
    """A fast answer for unknown emails would let anyone enumerate accounts."""
    app = create_app(make_settings(tmp_path, bcrypt_rounds=10))
    async with AsyncTestClient(app=app) as client:

        async def timed(email: str) -> float:
            start = time.perf_counter()
            response = await client.post("/login", json={"email": email, "password": "wrong-password"})
            assert response.status_code == 401
            return time.perf_counter() - start

        await timed("warm-up@example.com")
        unknown = statistics.median([await timed("nobody@example.com") for _ in range(5)])
        wrong = statistics.median([await timed(ADMIN_EMAIL) for _ in range(5)])
        assert unknown > wrong * 0.5, (unknown, wrong)


# ---------------------------------------------------------------- tokens


async def test_requests_without_a_good_token_are_401(client: Any, admin: Account) -> None:
    other_secret = "another-secret-that-is-long-enough-to-sign"
    forged = jwt.encode({"sub": str(admin.id), "exp": datetime.now(UTC) + timedelta(minutes=5)}, other_secret)
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": f"Basic {admin.token}"},
        {"Authorization": admin.token},
        bearer(forged),
        bearer(admin.token[:-4] + "AAAA"),
    ):
        assert_error(await client.get("/users/me", headers=headers), 401)


async def test_forged_token_shapes(client: Any, admin: Account, settings: Settings) -> None:
    ver = version_of(admin.token)

    def forged(settings: Settings, user_id: int, **claims: Any) -> str:  # in the admin's real session
        return forge_flat(settings, user_id, **{"sid": session_of(admin.token), **claims})

    # a well-formed token signed with the real key works: the checks below are about the claims
    assert expect(await get_me(client, forged(settings, admin.id, ver=ver)), 200)["id"] == admin.id
    past = datetime.now(UTC) - timedelta(minutes=10)
    bad_tokens = {
        "no session": forged(settings, admin.id, ver=ver, sid=None),
        "unknown session": forged(settings, admin.id, ver=ver, sid=session_of(admin.token) + 1000),
        "session as a string": forged(settings, admin.id, ver=ver, sid=str(session_of(admin.token))),
        "expired": forged(settings, admin.id, iat=past, exp=past + timedelta(minutes=5)),
        "wrong issuer": forged(settings, admin.id, iss="someone-else"),
        "wrong audience": forged(settings, admin.id, aud="another-api"),
        "no jti": forged(settings, admin.id, jti=None),
        "unknown user": forged(settings, 999_999),
        "non-numeric subject": forged(settings, admin.id, sub="admin"),
        "old token version": forged(settings, admin.id, ver=ver - 1),
        "no token version": forged(settings, admin.id, ver=None),
    }
    for reason, token in bad_tokens.items():
        response = await get_me(client, token)
        assert response.status_code == 401, f"{reason}: {response.status_code} {response.text}"
        assert_error(response, 401)


async def test_logout_revokes_the_presented_token_only(client: Any, cliente: Account) -> None:
    other_token = await login(client, cliente.email, cliente.password)
    assert expect(await client.post("/logout", headers=cliente.headers), 204) is None
    assert_error(await get_me(client, cliente.token), 401)
    assert_error(await client.get("/vms", headers=cliente.headers), 401)
    assert_error(await client.post("/logout", headers=cliente.headers), 401)
    # a second session of the same account still works, and so does signing in again
    assert expect(await get_me(client, other_token), 200)["id"] == cliente.id
    fresh = await login(client, cliente.email, cliente.password)
    assert expect(await get_me(client, fresh), 200)["id"] == cliente.id


async def test_logout_needs_a_token(client: Any) -> None:
    assert_error(await client.post("/logout"), 401)


async def test_tokens_survive_a_restart_with_the_same_settings(tmp_path: Any) -> None:
    settings = make_settings(tmp_path)
    async with AsyncTestClient(app=create_app(settings)) as client:
        token = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    async with AsyncTestClient(app=create_app(settings)) as client:
        assert expect(await get_me(client, token), 200)["email"] == ADMIN_EMAIL
