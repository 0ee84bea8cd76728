"""API2:2023 Broken Authentication: forged and stale tokens, credential probing, brute force.

Forged tokens are made with PyJWT and, where the attack needs it, with the app's own secret: those prove
the app checks each claim, not merely the signature.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.config import Settings
from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Account,
    bearer,
    claims_for,
    client_with,
    create_account,
    forge,
    forge_as,
    get_me,
    login,
    server_with,
    sign_claims,
    split,
    unsigned,
    version_of,
    ws_events,
)


async def me_status(client: Any, token: str) -> int:
    return int((await get_me(client, token)).status_code)


# ---------------------------------------------------------------- forged tokens


async def test_a_token_forged_with_the_real_secret_is_accepted(
    client: Any, settings: Settings, cliente: Account
) -> None:
    """The control: the forgeries below differ from an accepted token only in what they change."""
    assert await me_status(client, forge_as(settings, cliente)) == 200


async def test_alg_none_is_refused(client: Any, settings: Settings, admin: Account) -> None:
    claims = claims_for(settings, admin.id, version=version_of(admin.token))
    for alg in ("none", "None", "NONE", "nOnE"):
        for signature in ("", "AAAA"):
            token = unsigned({"alg": alg, "typ": "JWT"}, claims, signature)
            assert await me_status(client, token) == 401, alg


async def test_a_token_signed_with_another_key_is_refused(
    client: Any, settings: Settings, admin: Account
) -> None:
    for key in ("secret", "x" * 64, settings.jwt_issuer, ""):
        token = forge_as(settings, admin, key=key) if key else unsigned({"alg": "HS256"}, {}, "")
        assert await me_status(client, token) == 401


async def test_only_hs256_is_accepted_even_with_the_right_secret(
    client: Any, settings: Settings, admin: Account
) -> None:
    for algorithm in ("HS384", "HS512"):
        assert await me_status(client, forge_as(settings, admin, algorithm=algorithm)) == 401, algorithm


async def test_tampered_claims_with_the_original_signature_are_refused(
    client: Any, settings: Settings, cliente: Account, admin: Account
) -> None:
    header, claims, signature = split(cliente.token)
    for change in (
        {"sub": str(admin.id)},
        {"extras": {"ver": claims["extras"]["ver"], "rol": "administrador"}},
        {"rol": "administrador"},
        {"exp": claims["exp"] + 3600},
    ):
        forged = unsigned(header, {**claims, **change}, signature)
        assert await me_status(client, forged) == 401, change
    # and the untouched token still works, so it is the change that is refused
    assert await me_status(client, cliente.token) == 200


@pytest.mark.parametrize("claim", ["jti", "iat", "iss", "aud", "exp", "sub"])
async def test_a_token_missing_a_claim_is_refused(
    client: Any, settings: Settings, admin: Account, claim: str
) -> None:
    assert await me_status(client, forge_as(settings, admin, drop=[claim])) == 401


async def test_a_token_without_its_version_is_refused(
    client: Any, settings: Settings, admin: Account
) -> None:
    assert await me_status(client, forge_as(settings, admin, extras={})) == 401
    assert await me_status(client, forge_as(settings, admin, version=version_of(admin.token) + 1)) == 401


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "someone-else"},
        {"aud": "another-api"},
        {"aud": ["another-api", "vms-api"]},
        {"jti": 12345},
    ],
    ids=["wrong-iss", "wrong-aud", "aud-list", "numeric-jti"],
)
async def test_a_token_for_another_issuer_or_audience_is_refused(
    client: Any, settings: Settings, admin: Account, claims: dict[str, Any]
) -> None:
    if claims.get("aud") == ["another-api", "vms-api"]:
        claims = {"aud": ["another-api", settings.jwt_audience]}
    assert await me_status(client, forge_as(settings, admin, **claims)) == 401


@pytest.mark.parametrize("claim", ["iss", "aud", "sub", "jti", "exp"])
async def test_a_null_claim_is_refused(client: Any, settings: Settings, admin: Account, claim: str) -> None:
    claims = {**claims_for(settings, admin.id, version=version_of(admin.token)), claim: None}
    assert await me_status(client, sign_claims(settings, claims)) == 401


@pytest.mark.parametrize(
    "times",
    [
        {"exp": -60},
        {"exp": -1},
        {"iat": 3600},
    ],
    ids=["expired", "just-expired", "issued-in-the-future"],
)
async def test_a_token_outside_its_lifetime_is_refused(
    client: Any, settings: Settings, admin: Account, times: dict[str, int]
) -> None:
    now = int(time.time())
    claims = {name: now + offset for name, offset in times.items()}
    assert await me_status(client, forge_as(settings, admin, **claims)) == 401


@pytest.mark.parametrize("sub", ["0", "-1", "abc", "1e3", "", " ", "1.0"])
async def test_a_signed_token_naming_nobody_is_refused(
    client: Any, settings: Settings, admin: Account, sub: str
) -> None:
    assert await me_status(client, forge(settings, sub)) == 401


@pytest.mark.parametrize("sub", [str(2**63), "9" * 30])
async def test_a_signed_token_with_an_out_of_range_subject_is_refused(
    client: Any, settings: Settings, admin: Account, sub: str
) -> None:
    """Only a holder of the secret can send these; still, never a 500 (F3, fixed during this review)."""
    assert await me_status(client, forge(settings, sub)) == 401


async def test_the_token_is_only_read_from_the_authorization_header(client: Any, admin: Account) -> None:
    """?token= exists for browsers' WebSockets; on HTTP routes it would leak tokens into logs and history."""
    response = await client.get("/users/me", params={"token": admin.token})
    assert response.status_code == 401
    response = await client.get("/users/me", cookies={"token": admin.token})
    assert response.status_code == 401


@pytest.mark.parametrize("scheme", ["Basic", "Token", "JWT", ""])
async def test_only_the_bearer_scheme_is_accepted(client: Any, admin: Account, scheme: str) -> None:
    value = f"{scheme} {admin.token}".strip()
    response = await client.get("/users/me", headers={"Authorization": value})
    assert response.status_code == 401


# ---------------------------------------------------------------- stale tokens


async def test_a_token_stops_working_after_logout(client: Any, cliente: Account) -> None:
    other_session = await login(client, cliente.email, cliente.password)
    assert (await client.post("/logout", headers=cliente.headers)).status_code == 204
    assert await me_status(client, cliente.token) == 401
    assert (await client.post("/logout", headers=cliente.headers)).status_code == 401
    # logout revokes the presented token, not the user's other sessions
    assert await me_status(client, other_session) == 200


async def test_a_password_change_retires_the_tokens_of_the_other_sessions(
    client: Any, cliente: Account
) -> None:
    """Someone signed in elsewhere with the old password is out; the session that changed it goes on."""
    elsewhere = await login(client, cliente.email, cliente.password)
    change = {"password": "brand-new-password", "current_password": cliente.password}
    response = await client.patch(f"/users/{cliente.id}", json=change, headers=cliente.headers)
    assert response.status_code == 200, response.text
    assert await me_status(client, elsewhere) == 401
    assert await me_status(client, cliente.token) == 200
    refused = await client.post("/login", json={"email": cliente.email, "password": cliente.password})
    assert refused.status_code == 401
    assert await login(client, cliente.email, "brand-new-password")


async def test_a_stolen_token_cannot_change_the_password(client: Any, cliente: Account) -> None:
    """Without the current password a token holder cannot lock the owner out."""
    for body in (
        {"password": "attacker-password"},
        {"password": "attacker-password", "current_password": "wrong-guess-1"},
    ):
        response = await client.patch(f"/users/{cliente.id}", json=body, headers=cliente.headers)
        assert response.status_code in {400, 401, 403}, response.text
    assert await login(client, cliente.email, cliente.password)


async def test_a_token_stops_working_after_a_role_change(
    client: Any, admin: Account, cliente: Account
) -> None:
    promote = {"rol": "administrador"}
    promoted = await client.patch(f"/users/{cliente.id}", json=promote, headers=admin.headers)
    assert promoted.status_code == 200, promoted.text
    assert await me_status(client, cliente.token) == 401
    admin_era = await login(client, cliente.email, cliente.password)
    assert (await client.get("/users", headers=bearer(admin_era))).status_code == 200
    demoted = await client.patch(f"/users/{cliente.id}", json={"rol": "cliente"}, headers=admin.headers)
    assert demoted.status_code == 200, demoted.text
    # the token issued while an administrador must not keep administrador powers
    assert (await client.get("/users", headers=bearer(admin_era))).status_code == 401


async def test_a_token_stops_working_after_the_user_is_deleted(
    client: Any, admin: Account, cliente: Account
) -> None:
    assert (await client.delete(f"/users/{cliente.id}", headers=admin.headers)).status_code == 204
    assert await me_status(client, cliente.token) == 401


async def test_a_deleted_users_token_does_not_open_the_next_account(
    client: Any, admin: Account, cliente: Account, request: pytest.FixtureRequest
) -> None:
    """The token names the account by id and version; the next account must not inherit both."""
    assert (await client.delete(f"/users/{cliente.id}", headers=admin.headers)).status_code == 204
    newcomer = await create_account(client, admin, name="Newcomer")
    response = await client.get("/users/me", headers=cliente.headers)
    assert response.status_code == 401, f"deleted user {cliente.id} now signs in as {response.text}"
    assert newcomer.email not in response.text


async def test_a_revoked_token_gets_no_websocket_events(tmp_path: Any) -> None:
    async with server_with(tmp_path) as server:
        admin_token = await login(server.http, ADMIN_EMAIL, ADMIN_PASSWORD)
        account = await create_account(server.http, Account(0, "", "", admin_token))
        assert (await server.http.post("/logout", headers=account.headers)).status_code == 204

        async def change() -> None:
            body = {"name": "ws-01", "cores": 1, "ram": 512, "disk": 10, "os": "Debian 12"}
            await server.http.post("/vms", json=body, headers=bearer(admin_token))

        url = f"{server.ws_url}/ws/vms?token={account.token}"
        outcome = await ws_events(url, trigger=change)
        assert isinstance(outcome, str), f"a logged-out token received events: {outcome}"
        # the control: a live token on the same socket does get the event
        live = await ws_events(f"{server.ws_url}/ws/vms?token={admin_token}", trigger=change)
        assert isinstance(live, list)
        assert [event["event"] for event in live] == ["vm_created"]


# ---------------------------------------------------------------- credential probing


async def test_unknown_email_and_wrong_password_answer_alike(client: Any, cliente: Account) -> None:
    probes = [
        {"email": "nobody-here@example.com", "password": "whatever-1"},
        {"email": cliente.email, "password": "whatever-1"},
        {"email": cliente.email.upper(), "password": "whatever-1"},
        # over bcrypt's 72 bytes: the unknown-email path once crashed on these
        {"email": "nobody-here@example.com", "password": "x" * 100},
        {"email": cliente.email, "password": "x" * 100},
    ]
    answers = []
    for body in probes:
        response = await client.post("/login", json=body)
        answers.append((response.status_code, response.text, response.headers.get("www-authenticate")))
    assert answers[0][0] == 401
    assert len(set(answers)) == 1, answers


async def test_the_oauth2_form_answers_like_json(client: Any, cliente: Account) -> None:
    json_answer = await client.post("/login", json={"email": "nobody@example.com", "password": "pw-123456"})
    for username in ("nobody@example.com", cliente.email):
        form = await client.post("/login", data={"username": username, "password": "pw-123456"})
        assert (form.status_code, form.text) == (json_answer.status_code, json_answer.text)


async def test_login_responses_carry_no_account_details(client: Any, cliente: Account) -> None:
    response = await client.post("/login", json={"email": cliente.email, "password": cliente.password})
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_in"}
    assert cliente.email not in body["refresh_token"]
    _, claims, _ = split(body["access_token"])
    assert cliente.email not in str(claims)
    assert cliente.password not in str(claims)
    assert "$2b$" not in str(claims)


# ---------------------------------------------------------------- brute force


async def test_the_fourth_login_attempt_in_a_minute_is_rate_limited(tmp_path: Any) -> None:
    async with client_with(tmp_path, login_rate_limit=3) as client:
        for attempt in range(3):
            body = {"email": f"guess-{attempt}@example.com", "password": "guess-password"}
            assert (await client.post("/login", json=body)).status_code == 401
        limited = await client.post("/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert limited.status_code == 429, limited.text
        retry_after = limited.headers.get("retry-after")
        assert retry_after is not None, limited.headers
        assert retry_after.isdigit(), limited.headers
        assert 0 < int(retry_after) <= 60
        assert "access_token" not in limited.text
        assert limited.json()["status_code"] == 429


async def test_the_login_limit_also_covers_the_oauth2_form(tmp_path: Any) -> None:
    async with client_with(tmp_path, login_rate_limit=3) as client:
        for _ in range(3):
            await client.post("/login", data={"username": "guess@example.com", "password": "guess-pw"})
        limited = await client.post("/login", data={"username": "guess@example.com", "password": "guess-pw"})
        assert limited.status_code == 429


async def test_forwarded_headers_from_an_untrusted_peer_do_not_reset_the_limit(tmp_path: Any) -> None:
    spoofed = [
        {"X-Forwarded-For": "203.0.113.1"},
        {"X-Forwarded-For": "203.0.113.2, 198.51.100.7"},
        {"X-Real-IP": "203.0.113.3", "Forwarded": "for=203.0.113.3"},
        {"X-Forwarded-For": "203.0.113.4", "X-Client-IP": "203.0.113.4", "True-Client-IP": "203.0.113.4"},
    ]
    async with client_with(tmp_path, login_rate_limit=3) as client:
        statuses = []
        for attempt, headers in enumerate(spoofed):
            body = {"email": f"spoof-{attempt}@example.com", "password": "guess-password"}
            statuses.append((await client.post("/login", json=body, headers=headers)).status_code)
        assert statuses == [401, 401, 401, 429]
